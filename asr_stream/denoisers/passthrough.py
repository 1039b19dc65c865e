"""`--denoiser none`: hands hops through unchanged."""

from __future__ import annotations

import numpy as np


class Passthrough:
    name = "none"
    latency_s = 0.0

    def __init__(self, hop_size: int = 160):
        self.hop_size = hop_size

    def process(self, hop: np.ndarray) -> np.ndarray:
        return hop

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        pass
