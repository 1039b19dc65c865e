"""Streaming voice-activity detection with the Silero VAD model that faster-whisper ships.

Silero scores 32 ms chunks (512 samples at 16 kHz) and carries an LSTM state between them,
so it runs chunk by chunk as audio arrives. `SpeechDetector` turns its probabilities into
utterance starts and ends with hysteresis and a minimum silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 512
CONTEXT = 64


class SileroVAD:
    def __init__(self):
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)

    def __call__(self, chunk: np.ndarray) -> float:
        """Speech probability of one 512-sample chunk."""
        x = chunk.reshape(1, CHUNK).astype(np.float32)
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([self._context, x], axis=1), "h": self._h, "c": self._c})
        self._context = x[:, -CONTEXT:]
        return float(out.ravel()[0])


@dataclass
class VadEvent:
    kind: str  # "start" or "end"
    sample: int  # on the 16 kHz timeline: where speech starts, or where the silence began


class SpeechDetector:
    """Hysteresis on Silero's probability: speech starts above `on`, and ends after
    `min_silence_s` below `off`."""

    def __init__(self, on: float = 0.5, off: float = 0.35, min_silence_s: float = 0.5,
                 min_speech_s: float = 0.1, sample_rate: int = 16000):
        self.vad = SileroVAD()
        self.on, self.off = on, off
        self.min_silence = int(min_silence_s * sample_rate)
        self.min_speech = int(min_speech_s * sample_rate)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._pos = 0  # samples scored so far
        self.in_speech = False
        self.last_prob = 0.0  # the last chunk's speech probability
        self._silence_from: int | None = None
        self._speech_from = 0

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, samples])
        events = []
        while len(self._pending) >= CHUNK:
            chunk, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            p = self.last_prob = self.vad(chunk)
            start = self._pos
            self._pos += CHUNK
            if not self.in_speech:
                if p >= self.on:
                    self.in_speech = True
                    self._speech_from = start
                    self._silence_from = None
                    events.append(VadEvent("start", start))
            elif p < self.off:
                if self._silence_from is None:
                    self._silence_from = start
                if self._pos - self._silence_from >= self.min_silence:
                    self.in_speech = False
                    events.append(VadEvent("end", self._silence_from))
                    self._silence_from = None
            else:
                self._silence_from = None
        return events

    @property
    def position(self) -> int:
        """Samples scored so far (events are known up to here)."""
        return self._pos
