"""Datasets as manifests: JSON lines of `audio_filepath`, `text` and, for denoiser metrics, an
optional `clean_filepath` (NeMo's manifest format, so NeMo manifests work as they are).

Built-in names read the bundled demo clip, the speech beside the checkout (`../shared/data/speech/`,
or `$ASR_STREAM_SHARED/data/speech/`) and the clips the `pytest-audioeval` package ships, in place;
nothing is copied.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from asr_stream import resources
from asr_stream.errors import UserError

SHARED = Path(os.environ.get("ASR_STREAM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
SHARED_SPEECH = SHARED / "data" / "speech"
SHARED_NOISE = SHARED / "data" / "noise"


@dataclass(frozen=True)
class Utterance:
    key: str
    audio: Path
    text: str | None  # None: no transcript (denoiser metrics and timing only)
    clean: Path | None = None  # the clean reference of a noisy recording


def load_manifest(path: str | Path) -> list[Utterance]:
    """A JSONL manifest; relative audio paths are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = Path(row["audio_filepath"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{n}: not a manifest line (JSON with audio_filepath, text)") from None
        audio = audio if audio.is_absolute() else path.parent / audio
        clean = row.get("clean_filepath")
        clean = None if clean is None else (Path(clean) if Path(clean).is_absolute() else path.parent / clean)
        out.append(Utterance(row.get("id") or audio.stem, audio, row.get("text"), clean))
    if not out:
        raise UserError(f"manifest {path} has no utterances")
    return out


def write_manifest(utterances: list[Utterance], path: Path) -> None:
    lines = []
    for u in utterances:
        row = {"id": u.key, "audio_filepath": str(u.audio), "text": u.text}
        if u.clean is not None:
            row["clean_filepath"] = str(u.clean)
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tsv(folder: Path, audio_sub: str = "", clean_sub: str | None = None) -> list[Utterance]:
    out = []
    for line in (folder / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, text = line.rstrip("\n").split("\t", 1)
            clean = folder / clean_sub / name if clean_sub else None
            out.append(Utterance(Path(name).stem, folder / audio_sub / name, text, clean))
    return out


def _an4_test(folder: Path) -> list[Utterance]:
    texts = {}
    for line in (folder / "an4_test.transcription").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^)]+)\)\s*$", line.strip())
        if m:
            texts[m.group(2)] = m.group(1).lower()
    out = []
    for fileid in (folder / "an4_test.fileids").read_text(encoding="utf-8").split():
        utt = fileid.rsplit("/", 1)[-1]
        out.append(Utterance(utt, folder / "wav" / f"{fileid}.wav", texts[utt]))
    return out


def _audioeval() -> list[Utterance]:
    import pytest_audioeval  # a namespace package: no __file__, but a __path__

    folder = Path(list(pytest_audioeval.__path__)[0]) / "samples" / "audio" / "en"
    # its "counting" clip is left out: the reference spells the numbers, recognisers write digits
    # and the English normaliser cannot reconcile "one two three" with "1, 2, 3"
    return [Utterance(w.stem, w, w.with_suffix(".txt").read_text().strip()) for w in sorted(folder.glob("*.wav"))
            if w.stem != "counting"]


def _sample() -> list[Utterance]:
    wav = resources.sample_wav()
    return [Utterance(wav.stem, wav, wav.with_suffix(".txt").read_text().strip())]


BUILTIN = {
    "sample": ("the LJSpeech clip bundled with the package", _sample),
    "audioeval": ("English clips shipped by pytest-audioeval", _audioeval),
    "ljspeech": ("../shared LJSpeech, 32 clips, one speaker", lambda: _tsv(SHARED_SPEECH / "ljspeech")),
    "valentini": ("../shared Valentini noisy recordings with clean references",
                  lambda: _tsv(SHARED_SPEECH / "valentini", "noisy", "clean")),
    "an4": ("../shared CMU AN4 test split (spelled words, digits)", lambda: _an4_test(SHARED_SPEECH / "an4")),
    "librispeech-unlabeled": ("../shared LibriSpeech clips without transcripts (timing, DNSMOS)",
                              lambda: [Utterance(f.stem, f, None) for f in
                                       sorted((SHARED_SPEECH / "librispeech_unlabeled").glob("*.flac"))]),
}


def dataset(spec: str, limit: int | None = None) -> list[Utterance]:
    """A built-in dataset name or a manifest path; the first `limit` utterances."""
    if spec in BUILTIN:
        try:
            utterances = BUILTIN[spec][1]()
        except (OSError, ImportError, KeyError) as exc:
            raise UserError(f"dataset '{spec}' is not available here ({BUILTIN[spec][0]}): "
                            f"{type(exc).__name__}: {exc}") from None
    elif spec.endswith(".json") or spec.endswith(".jsonl") or Path(spec).is_file():
        utterances = load_manifest(spec)
    else:
        raise UserError(f"unknown dataset '{spec}': use a manifest .jsonl or one of {', '.join(BUILTIN)}")
    missing = [u.audio for u in utterances if not u.audio.is_file()]
    if missing:
        raise UserError(f"dataset '{spec}': {len(missing)} audio file(s) missing, first {missing[0]}")
    return utterances[:limit] if limit else utterances
