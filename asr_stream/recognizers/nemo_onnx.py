"""ONNX Runtime for NeMo CTC models: export once, cache the export, run it one intra-op thread.

A streaming step of a NeMo model is small (a few frames through a dozen layers), so PyTorch's
per-operator overhead dominates it; ONNX Runtime runs the same graph with far less. The export
is NeMo's own (`model.export`, with `cache_support` for cache-aware models), made from a second
copy of the model loaded from the same file (export changes the model it runs on), and written beside the `.nemo` (or in
`~/.cache/asr-stream/onnx` for a bundled model or a folder that is not writable) under a name that carries the
model file's hash and the attention context: a retrained model never reuses a stale export.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np

from asr_stream import resources
from asr_stream.errors import UserError
from asr_stream.recognizers.nemo_model import load_nemo_model, model_source, quiet_nemo, source_digest

CACHE_DIR = Path(os.environ.get("ASR_STREAM_CACHE", Path.home() / ".cache" / "asr-stream")) / "onnx"


def export_path(source: str, kind: str) -> Path:
    """Where the export for `kind` ("cache-aware-70-1", "offline") of the model loaded from
    `source` (a .nemo path or a pretrained name) lives."""
    stem = Path(source).stem if Path(source).is_file() else re.sub(r"[^A-Za-z0-9_.-]+", "_", source or "model")
    name = f"{stem}.{source_digest(source)}.{kind}.onnx"
    beside = Path(source).parent if Path(source).is_file() else None
    if beside is not None and os.access(beside, os.W_OK) and not resources.is_bundled(source):
        return beside / name
    return CACHE_DIR / name


def ensure_export(model, kind: str, context: list[int] | None = None, int8: bool = False) -> Path:
    """The ONNX file for `model`, exporting it first if no cached one exists. `context` is
    the attention context of a cache-aware export (it is baked into the graph). With `int8`,
    the export's MatMul weights are quantized to int8 (ONNX Runtime's dynamic quantization:
    activations are quantized on the fly), from the fp32 export."""
    if int8:
        path = export_path(model_source(model), kind + "-int8")
        if not path.is_file():
            _quantize(ensure_export(model, kind, context), path)
        return path
    path = export_path(model_source(model), kind)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")  # NeMo wants the .onnx suffix
    twin = load_nemo_model(model_source(model)) if model_source(model) else model  # export from a twin
    try:
        with quiet_nemo(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if context is not None:
                twin.encoder.set_default_att_context_size(context)
                twin.set_export_config({"cache_support": "True"})
            twin.export(str(partial), check_trace=False)
        os.replace(partial, path)
    except Exception as exc:
        raise UserError(f"cannot export {model_source(model) or 'the model'} to ONNX: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _quantize(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        os.replace(partial, path)
    except Exception as exc:
        raise UserError(f"cannot quantize {source} to int8: {type(exc).__name__}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def session(path: Path, threads: int):
    """An ONNX Runtime session on the CPU with `threads` intra-op threads and no inter-op pool."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxOfflineModel:
    """Features (bands, frames) of one window to CTC log-probs (frames, labels)."""

    def __init__(self, model, threads: int = 1, int8: bool = False):
        self.session = session(ensure_export(model, "offline", int8=int8), threads)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        log_probs = self.session.run(["logprobs"], {
            "audio_signal": np.ascontiguousarray(feats, dtype=np.float32)[None],
            "length": np.array([feats.shape[1]], np.int64)})[0]
        return log_probs[0]


class OnnxCacheAwareSteps:
    """Cache-aware encoder + CTC steps in ONNX Runtime.

    The export bakes in the steady state: a chunk preceded by the pre-encode cache, whose extra
    frames are dropped, and only the chunk's own outputs kept. The first step (no pre-encode
    cache yet) and the last (all outputs kept) differ from it, so those two run through the
    PyTorch steps given as `torch_steps`, with the caches handed across.
    """

    def __init__(self, onnx_step, torch_steps):
        self.onnx_step = onnx_step  # the engine's (shared session, batched across streams)
        self.torch_steps = torch_steps
        self.reset()

    def reset(self) -> None:
        self.torch_steps.reset()
        self.caches = None  # ONNX layout (batch first), once the first step has run

    def step(self, chunk, drop: int, last: bool):
        import torch

        if self.caches is None or last:
            if self.caches is not None:
                self.torch_steps.caches = [torch.from_numpy(self.caches[0]).transpose(0, 1),
                                           torch.from_numpy(self.caches[1]).transpose(0, 1),
                                           torch.from_numpy(self.caches[2])]
            log_probs = self.torch_steps.step(chunk, drop, last)
            c = self.torch_steps.caches
            self.caches = [np.ascontiguousarray(c[0].transpose(0, 1).numpy()),
                           np.ascontiguousarray(c[1].transpose(0, 1).numpy()), c[2].numpy()]
            return log_probs
        log_probs, self.caches = self.onnx_step(np.ascontiguousarray(chunk.numpy(), np.float32), self.caches)
        return log_probs
