"""Denoisers by name: `none`, `deepfilternet`, or `package.module:factory` for your own."""

from __future__ import annotations

from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import Denoiser


def create_denoiser(spec: str, **options) -> Denoiser:
    """Build the denoiser `spec` names. `options` are the chain's settings (device, threads,
    atten_lim_db, ...); each denoiser takes the ones it understands."""
    if spec in ("none", "", None):
        from asr_stream.denoisers.passthrough import Passthrough

        return Passthrough()
    if spec == "deepfilternet":
        from asr_stream.denoisers.deepfilternet import DeepFilterNetDenoiser

        # its C runtime is CPU-only: with --device cuda it stays on the CPU and the recogniser moves
        return DeepFilterNetDenoiser(atten_lim_db=options.get("atten_lim_db", 20.0))
    if ":" in spec:
        return load_factory(spec, "denoiser")(**options)
    raise UserError(f"unknown denoiser '{spec}' (use none, deepfilternet, or module:factory)")
