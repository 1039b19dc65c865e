"""The reference a stream is held to: the same bundled Whisper run offline by faster-whisper on a
clip whole (30 s window, greedy, no VAD, no conditioning on earlier text)."""

from __future__ import annotations

import numpy as np


class OfflineWhisper:
    def __init__(self, model: str | None = None):
        import ctranslate2
        from faster_whisper import WhisperModel

        from asr_stream.recognizers import whisper_models
        from asr_stream.runtime.threads import configure_threads

        configure_threads(1)  # computed as the chain computes it (one BLAS thread)
        ctranslate2.set_random_seed(0)  # a decode that loops falls back to sampling: the same draws every run
        self.path = whisper_models.resolve(model)
        self.model = WhisperModel(self.path, device="cpu", compute_type="int8", cpu_threads=1)

    def segments(self, audio: np.ndarray, words: bool = False) -> list:
        segments, _ = self.model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                            condition_on_previous_text=False, word_timestamps=words)
        return list(segments)

    def words(self, audio: np.ndarray) -> list:
        return [w for s in self.segments(audio, words=True) for w in s.words]

    def text(self, audio: np.ndarray) -> str:
        return " ".join(s.text.strip() for s in self.segments(audio))
