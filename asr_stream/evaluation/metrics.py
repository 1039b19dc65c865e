"""Scores: WER and CER after a documented text normaliser, and speech-enhancement quality.

Text: English goes through the Whisper English normaliser (`whisper-normalizer`: lower case,
no punctuation, spelled-out numbers and digits brought to one form, British/American spellings
unified, filler words dropped); other languages through its basic normaliser (lower case, no
punctuation or diacritics-only marks). WER and CER are jiwer's, over the whole set (errors summed
over all utterances, divided by all reference words), not averaged per utterance.

Enhancement: PESQ wide-band (ITU-T P.862.2, `pesq`), STOI (`pystoi`) against a clean reference,
and DNSMOS P.835 (SIG, BAK, OVRL; `speechmos`, whose ONNX models ship in the wheel), which needs
no reference.
"""

from __future__ import annotations

import numpy as np

_normalizers: dict[str, object] = {}


def normalize(text: str, language: str = "en") -> str:
    if language not in _normalizers:
        if language == "en":
            from whisper_normalizer.english import EnglishTextNormalizer

            _normalizers[language] = EnglishTextNormalizer()
        else:
            from whisper_normalizer.basic import BasicTextNormalizer

            _normalizers[language] = BasicTextNormalizer()
    return " ".join(_normalizers[language](text).split())


def error_rates(refs: list[str], hyps: list[str], language: str = "en") -> dict:
    """WER and CER over the set, with the counts they come from."""
    import jiwer

    pairs = [(normalize(r, language), normalize(h, language)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]  # nothing to score against an empty reference
    if not pairs:
        return {"wer": None, "cer": None, "words": 0}
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    words = jiwer.process_words(r, h)
    chars = jiwer.process_characters(r, h)
    return {"wer": words.wer, "cer": chars.cer, "words": sum(len(x.split()) for x in r),
            "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions}


def pesq_wb(clean: np.ndarray, processed: np.ndarray) -> float | None:
    """PESQ-WB at 16 kHz; None when PESQ cannot score the pair (e.g. no utterance found)."""
    from pesq import PesqError, pesq

    n = min(len(clean), len(processed))
    try:
        return float(pesq(16000, clean[:n].astype(np.float64), processed[:n].astype(np.float64), "wb"))
    except PesqError:
        return None


def stoi(clean: np.ndarray, processed: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    n = min(len(clean), len(processed))
    return float(_stoi(clean[:n], processed[:n], 16000, extended=False))


def dnsmos(audio: np.ndarray) -> dict:
    """DNSMOS P.835 of 16 kHz audio: {'sig', 'bak', 'ovrl'}."""
    from speechmos import dnsmos as _dnsmos

    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    x = audio / peak if peak > 1.0 else audio  # speechmos refuses samples outside [-1, 1]
    out = _dnsmos.run(x.astype(np.float32), sr=16000)
    return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]), "ovrl": float(out["ovrl_mos"])}
