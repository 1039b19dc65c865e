"""Cuts the ring buffer's audio into fixed 16 kHz hops for the chain's workers.

It is also where device- or file-rate audio becomes the chain's format: resampled to 16 kHz
and cleaned of NaN/Inf (counted), so every stage after it sees the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.io.resampler import StreamingResampler
from asr_stream.io.ring_buffer import RingBuffer


@dataclass(frozen=True)
class Hop:
    samples: np.ndarray  # float32, hop_size long (the last hop of a stream may be shorter)
    start: int  # index of the first sample on the 16 kHz timeline
    arrival: float  # monotonic time at which its last sample reached the ring buffer


def sanitize(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Audio fit for the stages: NaN/Inf replaced by 0 (and counted), clipped to [-1, 1]."""
    bad = ~np.isfinite(x)
    n = int(bad.sum())
    if n:
        x = np.where(bad, 0.0, x).astype(np.float32)
    return np.clip(x, -1.0, 1.0), n


class Framer:
    def __init__(self, ring: RingBuffer, input_rate: int, hop_size: int):
        self.ring = ring
        self.hop_size = hop_size
        self.resampler = StreamingResampler(input_rate, SAMPLE_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_start = 0
        self._read_size = max(256, int(input_rate * hop_size / SAMPLE_RATE) * 4)
        self.sanitized = 0  # NaN/Inf samples replaced by 0
        self.finished = False

    def _clean(self, x: np.ndarray) -> np.ndarray:
        x, bad = sanitize(x)
        self.sanitized += bad
        return x

    def hops(self, timeout: float = 0.1) -> list[Hop]:
        """The hops that are ready now (possibly none); after end of stream, the last partial
        hop is padded with nothing and `finished` is set."""
        if self.finished:
            return []
        raw, arrival = self.ring.read(self._read_size, timeout=timeout)
        if len(raw):
            self._pending = np.concatenate([self._pending, self.resampler.process(self._clean(raw))])
        elif self.ring.closed and len(self.ring) == 0:
            self._pending = np.concatenate([self._pending, self.resampler.flush()])
            self.finished = True
        out = []
        n_full = len(self._pending) // self.hop_size
        if self.finished and len(self._pending) % self.hop_size:
            n_full += 1
        for i in range(n_full):
            chunk = self._pending[i * self.hop_size : (i + 1) * self.hop_size]
            out.append(Hop(chunk, self._next_start, arrival))
            self._next_start += len(chunk)
        self._pending = self._pending[n_full * self.hop_size :] if not self.finished else self._pending[:0]
        return out
