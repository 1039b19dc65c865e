"""One Whisper decode of a short audio buffer: the engine half of the streaming recogniser.

The streaming policy (`whisper.py`) decides *what* to decode; this module does the decode:
encode only as much audio as the buffer holds (plus a little padding, rounded up) instead of
Whisper's 30 s (the caller may ask for more padding), condition on a prompt and optionally force
a prefix (the streaming policy no longer forces one), and return the words with their times and
the decoder's own confidence signals, which the policy uses to tell speech from hallucination.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.runtime.batching import Batcher
from asr_stream.errors import UserError
from asr_stream.stages import Word, join_words

PREPEND_PUNCT = "\"'“¿([{-"
APPEND_PUNCT = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".?!。？！"
FRAME = 160  # samples per log-mel frame
MAX_FRAMES = 3000  # Whisper's 30 s


@dataclass(frozen=True)
class AlignedWord:
    """A decoded word with its time span (stream seconds) and the decoder's probability."""

    text: str
    start: float
    end: float
    probability: float
    glued: bool = False  # the rest of a word whose first part was committed ("sun" + "light")

    def word(self) -> Word:
        return Word(self.text, self.start, self.end, self.glued)


@dataclass(frozen=True)
class Decoded:
    words: list[AlignedWord]  # the words after the forced prefix
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    seconds: float  # audio seconds decoded (without the padding)


def compression_ratio(text: str) -> float:
    """gzip ratio of the text: Whisper's own test for a decoder stuck in a loop (> 2.4)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WhisperDecoder:
    """A loaded Whisper model (CTranslate2 through faster-whisper) and its tokenizer.

    Read-only after construction: one decoder can serve many streams."""

    def __init__(self, model_path: str, device: str = "cpu", threads: int = 1, compute_type: str | None = None,
                 language: str | None = "en", pad_s: float = 1.0, step_s: float = 0.5, batch: bool = True,
                 concurrency: int = 1):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        self.model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=threads,
                                  num_workers=concurrency)  # model replicas: calls that run side by side
        self.multilingual = self.model.model.is_multilingual
        if self.multilingual and language and language not in _languages():
            raise UserError(f"--language: unknown language code '{language}' (e.g. en, ko, de, fr, ja)")
        if not self.multilingual and language not in (None, "en"):
            raise UserError(f"--language {language}: this Whisper model is English-only "
                            "(use a multilingual one, e.g. --model base)")
        self.language = (language or "en") if self.multilingual else "en"
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                                   language=self.language)
        self.model_path = model_path
        self.pad = int(pad_s * SAMPLE_RATE)
        self.step = int(step_s * SAMPLE_RATE)
        self.batcher = Batcher(self._decode_batch, enabled=batch, concurrency=concurrency)

    def window_samples(self, n: int, pad: int | None = None) -> int:
        """How much audio (with zero padding) a buffer of `n` samples is encoded as: the encoder's
        cost follows the buffer, and Whisper transcribes a buffer's last word better when a little
        silence follows it."""
        w = int(math.ceil((n + (self.pad if pad is None else pad)) / self.step)) * self.step
        return min(w, MAX_FRAMES * FRAME)

    def decode(self, audio: np.ndarray, offset_s: float, prompt: list, prefix: list,
               new_audio_s: float | None = None, pad_s: float | None = None) -> Decoded:
        """Decode `audio` (16 kHz; its first sample at `offset_s` on the stream's timeline),
        conditioned on `prompt` (earlier `Word`s, no longer in the audio) and forced to start with
        `prefix` (committed `Word`s inside the audio). Returns the words after the prefix.
        `new_audio_s` (the audio after the prefix's words) caps how many tokens may follow the
        prefix: speech runs at about 4 tokens a second, and a decoder stuck in a loop would
        otherwise spend its time writing the loop out.

        Called from several streams' threads at once, the calls whose buffers encode to the same
        window are batched into one encode (`batching.Batcher`); those that also share their
        generation settings (the length limit, and where the start-of-transcript token sits,
        CTranslate2's rule for a batch) are generated together too. Each decode is computed as it
        would be alone."""
        request = self._prepare(audio, offset_s, prompt, prefix, new_audio_s, pad_s)
        return self.batcher.call(request.features.shape[-1], request)

    def _prepare(self, audio, offset_s, prompt, prefix, new_audio_s, pad_s=None) -> "_Request":
        audio = audio[-MAX_FRAMES * FRAME :]
        dur = len(audio) / SAMPLE_RATE
        window = self.window_samples(len(audio), None if pad_s is None else int(pad_s * SAMPLE_RATE))
        padded = np.pad(audio.astype(np.float32), (0, window - len(audio)))
        features = self.model.feature_extractor(padded)[:, : window // FRAME]
        tok = self.tokenizer
        tokens: list[int] = []
        if prompt:
            tokens = [tok.sot_prev] + tok.encode(" " + join_words(prompt))[-120:]
        tokens += list(tok.sot_sequence) + [tok.no_timestamps]
        # without its closing full stop, so Whisper does not take the committed words for a whole sentence
        prefix_text = join_words(prefix).rstrip(SENTENCE_END)
        prefix_tokens = tok.encode(" " + prefix_text) if prefix_text else []
        tokens += prefix_tokens
        cap = int(8 + 6 * (dur if new_audio_s is None else min(dur, new_audio_s)))
        return _Request(np.ascontiguousarray(features, np.float32), tokens, len(prefix_tokens),
                        min(448, len(tokens) + cap), len(audio) // FRAME, dur, offset_s, not prefix_tokens, tokens.index(tok.sot))

    def _decode_batch(self, requests: list["_Request"]) -> list[Decoded]:
        """One encode for every request (they share a window), then one generate and one
        alignment per group of requests that share their generation settings."""
        import ctranslate2

        encoded = self.model.encode(np.stack([r.features for r in requests]))
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_length, r.sot_index, r.suppress_blank), []).append(i)
        out: list[Decoded | None] = [None] * len(requests)
        for rows in groups.values():
            part = encoded if len(rows) == len(requests) else _select(encoded, rows, ctranslate2)
            for i, decoded in zip(rows, self._generate(part, [requests[i] for i in rows])):
                out[i] = decoded
        return out

    def _generate(self, encoded, requests: list["_Request"]) -> list[Decoded]:
        import ctranslate2

        tok, first = self.tokenizer, requests[0]
        results = self.model.model.generate(encoded, [r.tokens for r in requests], beam_size=1,
                                            max_length=first.max_length, return_scores=True,
                                            return_no_speech_prob=True, suppress_blank=first.suppress_blank,
                                            suppress_tokens=[-1])
        texts = [[t for t in result.sequences_ids[0] if t < tok.eot] for result in results]  # start with the prefix
        aligned = [i for i, (r, t) in enumerate(zip(requests, texts)) if len(t) > r.n_prefix]
        words: dict[int, list[AlignedWord]] = {i: [] for i in range(len(requests))}
        if aligned:
            part = encoded if len(aligned) == len(requests) else _select(encoded, aligned, ctranslate2)
            words.update(zip(aligned, self._align(part, [requests[i] for i in aligned], [texts[i] for i in aligned])))
        out = []
        for i, (r, result) in enumerate(zip(requests, results)):
            avg_logprob = result.scores[0] / max(1, len(texts[i]))
            out.append(Decoded(words[i], float(avg_logprob), float(result.no_speech_prob),
                               compression_ratio(tok.decode(texts[i][r.n_prefix:])), r.dur))
        return out

    def _align(self, encoded, requests: list["_Request"], tokens: list[list[int]]) -> list[list[AlignedWord]]:
        """Word times for each request's `tokens`; returns the words after its forced prefix."""
        alignments = self.model.find_alignment(self.tokenizer, tokens, encoded, [r.n_frames for r in requests])
        return [self._words(alignment, r) for alignment, r in zip(alignments, requests)]

    def _words(self, alignment: list[dict], r: "_Request") -> list[AlignedWord]:
        from faster_whisper.transcribe import merge_punctuations

        merge_punctuations(alignment, PREPEND_PUNCT, APPEND_PUNCT)
        n_prefix, dur, offset = r.n_prefix, r.dur, r.offset_s
        words, used = [], 0
        for a in alignment:
            first, used = used, used + len(a["tokens"])
            if used <= n_prefix:
                continue  # a committed word
            text, glued = a["word"], False
            if first < n_prefix:
                # tokens glued to the last committed word ("14" + "55", "dinner" + ","): the committed
                # word stays as it is and the rest is new
                text = self.tokenizer.decode(a["tokens"][n_prefix - first :])
                glued = not text.startswith(" ")
            text = text.strip()
            if not text:
                continue
            start, end = float(a["start"]), min(float(a["end"]), dur)
            if start >= dur:  # aligned into the zero padding: not in the audio
                break
            words.append(AlignedWord(text, round(offset + start, 3), round(offset + max(end, start), 3),
                                     float(a.get("probability", 1.0)), glued))
        return words


@dataclass(frozen=True)
class _Request:
    """One stream's decode, ready for the model."""

    features: np.ndarray  # (mels, frames) of the padded window
    tokens: list[int]  # prompt + start sequence + forced prefix
    n_prefix: int  # forced prefix tokens at the end of `tokens`
    max_length: int
    n_frames: int  # feature frames of real audio (the rest is padding)
    dur: float
    offset_s: float
    suppress_blank: bool
    sot_index: int


def _select(encoded, rows: list[int], ctranslate2):
    """Rows of a batch of encoder outputs, as a new StorageView (on the device they are on)."""
    if encoded.device == "cuda":
        import torch

        return ctranslate2.StorageView.from_array(torch.as_tensor(encoded, device="cuda")[rows].contiguous())
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))


def _languages() -> set[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return set(_LANGUAGE_CODES)
