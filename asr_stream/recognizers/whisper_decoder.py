"""One Whisper decode of a short audio buffer: the engine half of the streaming recogniser.

The streaming policy (`whisper.py`) decides *what* to decode; this module does the decode:
encode only as much audio as the buffer holds (plus a little padding, rounded up) instead of
Whisper's 30 s, force the decoder to continue from words already committed, and return the new
words with their times and the decoder's own confidence signals, which the policy uses to tell
speech from hallucination.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from asr_stream import SAMPLE_RATE
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
                 language: str | None = "en", pad_s: float = 1.0, step_s: float = 0.5):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        self.model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=threads,
                                  num_workers=1)
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

    def window_samples(self, n: int) -> int:
        """How much audio (with zero padding) a buffer of `n` samples is encoded as: the encoder's
        cost follows the buffer, and Whisper transcribes a buffer's last word better when a little
        silence follows it."""
        w = int(math.ceil((n + self.pad) / self.step)) * self.step
        return min(w, MAX_FRAMES * FRAME)

    def decode(self, audio: np.ndarray, offset_s: float, prompt: list, prefix: list,
               new_audio_s: float | None = None) -> Decoded:
        """Decode `audio` (16 kHz; its first sample at `offset_s` on the stream's timeline),
        conditioned on `prompt` (earlier `Word`s, no longer in the audio) and forced to start with
        `prefix` (committed `Word`s inside the audio). Returns the words after the prefix.
        `new_audio_s` (the audio after the prefix's words) caps how many tokens may follow the
        prefix: speech runs at about 4 tokens a second, and a decoder stuck in a loop would
        otherwise spend its time writing the loop out."""
        audio = audio[-MAX_FRAMES * FRAME :]
        dur = len(audio) / SAMPLE_RATE
        window = self.window_samples(len(audio))
        padded = np.pad(audio.astype(np.float32), (0, window - len(audio)))
        features = self.model.feature_extractor(padded)[:, : window // FRAME]
        encoded = self.model.encode(features)
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
        result = self.model.model.generate(encoded, [tokens], beam_size=1, max_length=min(448, len(tokens) + cap),
                                           return_scores=True, return_no_speech_prob=True,
                                           suppress_blank=not prefix_tokens, suppress_tokens=[-1])[0]
        text_tokens = [t for t in result.sequences_ids[0] if t < tok.eot]  # starts with the forced prefix
        new_tokens = text_tokens[len(prefix_tokens):]
        avg_logprob = result.scores[0] / max(1, len(text_tokens))
        new_words = self._align(encoded, text_tokens, len(prefix_tokens), len(audio) // FRAME, dur, offset_s)
        return Decoded(new_words, float(avg_logprob), float(result.no_speech_prob),
                       compression_ratio(tok.decode(new_tokens)), dur)

    def _align(self, encoded, tokens: list[int], n_prefix: int, n_frames: int, dur: float,
               offset: float) -> list[AlignedWord]:
        """Word times for `tokens`; returns the words after the first `n_prefix` (forced) tokens."""
        if len(tokens) <= n_prefix:
            return []
        from faster_whisper.transcribe import merge_punctuations

        alignment = self.model.find_alignment(self.tokenizer, [tokens], encoded, n_frames)[0]
        merge_punctuations(alignment, PREPEND_PUNCT, APPEND_PUNCT)
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


def _languages() -> set[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return set(_LANGUAGE_CODES)
