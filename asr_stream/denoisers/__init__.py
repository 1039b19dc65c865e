"""Denoisers by name: `none`, `deepfilternet`, `gtcrn`, `rnnoise`, Demucs (`dns48`, `dns64`, `master64`, a `.th`
file, a `.th` in the checkpoint folders by name, or `demucs` for the one there; see `asr_stream.resources`),
or `package.module:factory` for your own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_stream import resources
from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import Denoiser, DenoiserEngine, FactoryEngine


DEMUCS_NAMES = ("demucs", "dns48", "dns64", "master64")


def load_denoiser_engine(spec: str, **options) -> DenoiserEngine:
    """Load the denoiser `spec` names. `options` are the chain's settings (device, threads,
    atten_lim_db, ...); each denoiser takes the ones it understands."""
    if spec in ("none", "", None):
        from asr_stream.denoisers.passthrough import Passthrough

        return FactoryEngine(Passthrough)
    if spec == "deepfilternet":
        from asr_stream.denoisers.deepfilternet import DeepFilterNetDenoiser

        # its C runtime is CPU-only: with --device cuda it stays on the CPU and the recogniser moves.
        # libDF loads its model into each state (its C API has no shared model), so each stream has one
        atten = options.get("atten_lim_db", 20.0)
        return FactoryEngine(lambda: DeepFilterNetDenoiser(atten_lim_db=atten))
    if spec == "gtcrn":
        from asr_stream.denoisers.gtcrn import GTCRNDenoiser

        threads = options.get("threads", 1)
        return FactoryEngine(lambda: GTCRNDenoiser(threads=threads))  # one ONNX session, shared
    if spec == "rnnoise":
        from asr_stream.denoisers.rnnoise import RNNoiseDenoiser

        return FactoryEngine(RNNoiseDenoiser)  # its weights are compiled into the library, shared
    if ":" in spec:
        return FactoryEngine.of(load_factory(spec, "denoiser"), options)
    if spec in DEMUCS_NAMES or spec.endswith(".th") or resources.find_checkpoint(spec, ".th"):
        from asr_stream.denoisers.demucs import DemucsEngine
        from asr_stream.denoisers.demucs_checkpoint import load_demucs

        return DemucsEngine(load_demucs(spec), name=Path(spec).stem,
                            hop=options.get("denoise_hop"), dry=options.get("dry", 0.0),
                            exact=options.get("denoise_exact", False), int8=options.get("denoise_int8", False))
    raise UserError(f"unknown denoiser '{spec}' (use none, deepfilternet, gtcrn, rnnoise, dns48, dns64, master64, "
                    f"a .th checkpoint, or module:factory)")


def create_denoiser(spec: str, **options) -> Denoiser:
    """One stream's denoiser over a newly loaded engine (tests and one-off tools; the chain
    shares engines through `asr_stream.chain.engines`)."""
    return load_denoiser_engine(spec, **options).create_stream()


def denoise_all(denoiser: Denoiser, x: np.ndarray) -> np.ndarray:
    """All of `x` through a fresh stream of `denoiser`, hop by hop as the chain feeds it: what a
    stream hears, aligned with `x`, for offline passes (calibration, benchmarks)."""
    denoiser.reset()
    hop = denoiser.hop_size
    return np.concatenate([denoiser.process(x[i : i + hop]) for i in range(0, len(x), hop)] + [denoiser.flush()])
