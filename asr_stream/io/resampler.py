"""Block-by-block resampling with julius's sinc kernels, identical to resampling the whole
signal at once (away from its two ends), so files and devices at any rate become 16 kHz
without ever holding the whole signal."""

from __future__ import annotations

import numpy as np
from julius.resample import ResampleFrac


class StreamingResampler:
    def __init__(self, old_sr: int, new_sr: int):
        self.old_sr, self.new_sr = old_sr, new_sr
        self._julius = ResampleFrac(old_sr, new_sr)
        self.identity = self._julius.old_sr == self._julius.new_sr
        self._step = self._julius.old_sr  # input samples per output group
        self._group = self._julius.new_sr  # outputs per group
        self._width = 0 if self.identity else self._julius._width
        # (kernel length, outputs per group), for one matrix product per block
        self._kernel = None if self.identity else self._julius.kernel[:, 0, :].double().numpy().T.copy()
        self.reset()

    @property
    def delay_input_samples(self) -> int:
        """Look-ahead: input samples needed beyond a point before its output is ready."""
        return self._width + self._step

    def reset(self) -> None:
        # zeros before the stream's first sample, as a live stream has silence before it
        self._buf = np.zeros(self._width, dtype=np.float32)
        self._total_in = 0
        self._produced_out = 0

    def _run(self) -> np.ndarray:
        kernel_len = 2 * self._width + self._step
        groups = (len(self._buf) - kernel_len) // self._step + 1
        if groups <= 0:
            return np.zeros(0, dtype=np.float32)
        use = (groups - 1) * self._step + kernel_len
        # a float64 product per output group, rounded to float32: the same bits however the
        # stream is cut into blocks (a float32 convolution's sums change with its input length,
        # and Whisper turns differences of 1e-7 into different words)
        frames = np.lib.stride_tricks.sliding_window_view(self._buf[:use], kernel_len)[:: self._step]
        out = (frames.astype(np.float64) @ self._kernel).astype(np.float32).reshape(-1)
        self._buf = self._buf[groups * self._step :]
        return out

    def process(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self.identity:
            return samples
        self._buf = np.concatenate([self._buf, samples])
        self._total_in += len(samples)
        out = self._run()
        self._produced_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """Push out the tail; total output is ceil(total_in * new / old) samples."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total_in = self._total_in
        self._buf = np.concatenate([self._buf, np.zeros(self._width + 2 * self._step, np.float32)])
        out = self._run()
        want = -(-total_in * self._group // self._step) - self._produced_out
        out = out[: max(0, want)]
        self._produced_out += len(out)
        self._total_in = 0
        return out
