"""What DeepFilterNet and RNNoise share: a C runtime that denoises fixed 10 ms frames at 48 kHz.

The chain's 16 kHz hops are resampled up (julius kernels, streamed), cut into the runtime's
frames, denoised, resampled down, and shifted by the runtime's own delay so the output stays
aligned with the input. Subclasses say how one frame is denoised.
"""

from __future__ import annotations

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.io.resampler import StreamingResampler

RATE_48K = 48000


class Frames48kDenoiser:
    """A `stages.Denoiser` over a 48 kHz frame runtime. Subclasses set `name`, implement
    `_new_state()` (the runtime's per-stream state, made afresh by `reset`) and
    `_denoise_frame(frame) -> out` (one frame of `frame_48k` samples, into a new array)."""

    name = "frames48k"

    def __init__(self, frame_48k: int, delay_48k: int):
        self.frame_48k = frame_48k
        self._delay_48k = delay_48k
        self.hop_size = frame_48k * SAMPLE_RATE // RATE_48K  # 160 samples = 10 ms
        self._up = StreamingResampler(SAMPLE_RATE, RATE_48K)
        self._down = StreamingResampler(RATE_48K, SAMPLE_RATE)
        self._delay_16k = delay_48k * SAMPLE_RATE // RATE_48K
        self.latency_s = ((delay_48k + frame_48k + self._up.delay_input_samples * 3
                           + self._down.delay_input_samples) / RATE_48K)

    def _new_state(self) -> None:
        raise NotImplementedError

    def _denoise_frame(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        self._new_state()
        self._up.reset()
        self._down.reset()
        self._buf48 = np.zeros(0, np.float32)
        self._to_skip = self._delay_16k
        self._n_in = 0
        self._n_out = 0

    def _run_frames(self, x48: np.ndarray) -> np.ndarray:
        self._buf48 = np.concatenate([self._buf48, x48])
        f = self.frame_48k
        n = len(self._buf48) // f
        out = np.empty(n * f, np.float32)
        for i in range(n):
            out[i * f : (i + 1) * f] = self._denoise_frame(self._buf48[i * f : (i + 1) * f])
        self._buf48 = self._buf48[n * f :]
        return out

    def _align(self, y: np.ndarray) -> np.ndarray:
        skip = min(self._to_skip, len(y))
        self._to_skip -= skip
        return y[skip:]

    def process(self, hop: np.ndarray) -> np.ndarray:
        self._n_in += len(hop)
        y = self._align(self._down.process(self._run_frames(self._up.process(hop))))
        self._n_out += len(y)
        return y

    def flush(self) -> np.ndarray:
        x48 = self._up.flush()
        tail = self._delay_48k + 2 * self.frame_48k
        y48 = self._run_frames(np.concatenate([x48, np.zeros(tail, np.float32)]))
        y = self._align(np.concatenate([self._down.process(y48), self._down.flush()]))
        y = y[: max(0, self._n_in - self._n_out)]
        self._n_out += len(y)
        return y
