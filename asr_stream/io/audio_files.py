"""Whole audio files in and out as the chain hears them: 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_stream.errors import UserError


def load_16k(path: Path) -> np.ndarray:
    """Any file soundfile reads, as 16 kHz mono float32 (julius resampling, as the chain does)."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"cannot read audio {path}: {exc}") from None
    x = x.mean(axis=1)
    if sr != 16000:
        import julius
        import torch

        x = julius.resample_frac(torch.from_numpy(np.ascontiguousarray(x)), sr, 16000).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def write_16k(path: Path, audio: np.ndarray) -> Path:
    import soundfile as sf

    sf.write(str(path), audio, 16000, subtype="FLOAT")
    return path
