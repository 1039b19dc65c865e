"""A single-producer single-consumer audio ring buffer between capture and the chain.

The capture callback must never block or allocate much, so `write` only copies; when the
chain falls behind and the ring is full, the samples that do not fit are counted as
dropped (never silently lost, never a crash).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._data = np.zeros(capacity, dtype=np.float32)
        self._capacity = capacity
        self._read = 0  # total samples read so far
        self._written = 0  # total samples written so far
        self._closed = False
        self._cond = threading.Condition()
        self._arrivals: deque[tuple[int, float]] = deque()  # (total written, monotonic time)
        self.dropped = 0  # samples that did not fit

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        with self._cond:
            return self._written - self._read

    def _copy_in(self, samples: np.ndarray) -> None:
        start = self._written % self._capacity
        first = min(len(samples), self._capacity - start)
        self._data[start : start + first] = samples[:first]
        self._data[: len(samples) - first] = samples[first:]
        self._written += len(samples)
        self._arrivals.append((self._written, time.monotonic()))

    def write(self, samples: np.ndarray) -> int:
        """Copy what fits without waiting; returns how many samples were dropped."""
        with self._cond:
            free = self._capacity - (self._written - self._read)
            fit = min(free, len(samples))
            if fit:
                self._copy_in(samples[:fit])
                self._cond.notify_all()
            lost = len(samples) - fit
            self.dropped += lost
            return lost

    def write_blocking(self, samples: np.ndarray, stop: threading.Event | None = None) -> None:
        """Copy all samples, waiting for room (file input, where nothing may be dropped)."""
        pos = 0
        with self._cond:
            while pos < len(samples):
                free = self._capacity - (self._written - self._read)
                if free == 0:
                    if stop is not None and stop.is_set():
                        return
                    self._cond.wait(0.05)
                    continue
                fit = min(free, len(samples) - pos)
                self._copy_in(samples[pos : pos + fit])
                pos += fit
                self._cond.notify_all()

    def close(self) -> None:
        """End of stream: readers get what is left, then an empty array."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, max_samples: int, timeout: float = 0.1) -> tuple[np.ndarray, float]:
        """Take up to `max_samples`, waiting up to `timeout` for any.

        Returns the samples and the monotonic time at which the last of them arrived. An
        empty array with the ring closed means end of stream.
        """
        with self._cond:
            if self._written == self._read and not self._closed:
                self._cond.wait(timeout)
            n = min(max_samples, self._written - self._read)
            start = self._read % self._capacity
            first = min(n, self._capacity - start)
            out = np.concatenate([self._data[start : start + first], self._data[: n - first]])
            self._read += n
            # a write covers samples [previous end, end): keep the one holding the last read sample
            while self._arrivals and self._arrivals[0][0] < self._read:
                self._arrivals.popleft()
            arrival = self._arrivals[0][1] if (n and self._arrivals) else time.monotonic()
            self._cond.notify_all()
            return out, arrival
