"""NeMo Conformer-CTC models as streaming recognisers: one factory, two families.

A model trained with limited right context (`att_context_size`) streams cache-aware
(`nemo_cache_aware.py`); a full-context model streams buffered, on overlapping windows
(`nemo_buffered.py`). `--streaming auto` picks from the model.
"""

from __future__ import annotations

from asr_stream.errors import UserError
from asr_stream.recognizers.nemo_buffered import BufferedEngine
from asr_stream.recognizers.nemo_cache_aware import CacheAwareEngine, is_cache_aware
from asr_stream.recognizers.nemo_model import load_nemo_model

STREAMING = ("auto", "cache-aware", "buffered")


def load_nemo_engine(model_spec: str | None, streaming: str = "auto", runtime: str = "torch",
                     lookahead_ms: float | None = None, chunk_s: float = 2.0, left_s: float = 1.0,
                     right_s: float = 0.6, device: str = "cpu", threads: int = 1, batch: bool = True,
                     concurrency: int = 1):
    """The engine for the `.nemo` (or pretrained name) `model_spec`: cache-aware or buffered."""
    if streaming not in STREAMING:
        raise UserError(f"--streaming {streaming}: use one of {', '.join(STREAMING)}")
    model = load_nemo_model(model_spec, device=device)
    if streaming == "auto":
        streaming = "cache-aware" if is_cache_aware(model) else "buffered"
    if streaming == "cache-aware":
        return CacheAwareEngine(model, lookahead_ms=lookahead_ms, runtime=runtime, threads=threads, batch=batch,
                                concurrency=concurrency)
    if lookahead_ms is not None:
        raise UserError("--lookahead-ms is for cache-aware streaming; buffered streaming takes "
                        "--chunk-s/--left-s/--right-s")
    return BufferedEngine(model, chunk_s=chunk_s, left_s=left_s, right_s=right_s, runtime=runtime, threads=threads,
                          batch=batch, concurrency=concurrency)


def create_nemo_recognizer(model_spec: str | None, **options):
    """One stream's recogniser over a fresh engine (see `load_nemo_engine`)."""
    return load_nemo_engine(model_spec, **options).create_stream()
