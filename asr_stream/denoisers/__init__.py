"""Denoisers by name: `none`, `deepfilternet`, `gtcrn`, `rnnoise`, Demucs (`dns48`, `dns64`, `master64`, a `.th`
file, a `.th` in checkpoints/ by name, or `demucs` for the one there), or
`package.module:factory` for your own."""

from __future__ import annotations

from pathlib import Path

from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import Denoiser


CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
DEMUCS_NAMES = ("demucs", "dns48", "dns64", "master64")


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
    if spec == "gtcrn":
        from asr_stream.denoisers.gtcrn import GTCRNDenoiser

        return GTCRNDenoiser(threads=options.get("threads", 1))
    if spec == "rnnoise":
        from asr_stream.denoisers.rnnoise import RNNoiseDenoiser

        return RNNoiseDenoiser()
    if ":" in spec:
        return load_factory(spec, "denoiser")(**options)
    if spec in DEMUCS_NAMES or spec.endswith(".th") or (CHECKPOINTS / f"{spec}.th").is_file():
        from asr_stream.denoisers.demucs import DemucsDenoiser
        from asr_stream.denoisers.demucs_checkpoint import load_demucs

        return DemucsDenoiser(load_demucs(spec, checkpoints_dir=CHECKPOINTS), name=Path(spec).stem,
                              hop=options.get("denoise_hop"), dry=options.get("dry", 0.0),
                              exact=options.get("denoise_exact", False),
                              int8=options.get("denoise_int8", False))
    raise UserError(f"unknown denoiser '{spec}' (use none, deepfilternet, gtcrn, rnnoise, dns48, dns64, master64, "
                    f"a .th checkpoint, or module:factory)")
