"""The ONNX Runtime path of NeMo cache-aware streaming: same log-probs as PyTorch, exported once
and cached under the model file's hash."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("nemo.collections.asr.models", reason="nemo_toolkit is not installed")
pytest.importorskip("onnxruntime")
from test_nemo_ctc import CHARS, _stream, char_model_path, speech  # noqa: E402,F401 (fixtures)


@pytest.fixture()
def model_copy(char_model_path, tmp_path):  # noqa: F811
    """The tiny model in a folder of its own, so its exports land there."""
    path = tmp_path / "tiny.nemo"
    shutil.copy(char_model_path, path)
    return path


@pytest.mark.parametrize("lookahead_ms", [80, 0])
def test_onnx_steps_match_pytorch(model_copy, speech, lookahead_ms):  # noqa: F811
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    model = load_nemo_model(str(model_copy))
    runs = {}
    for runtime in ("torch", "onnx"):
        recognizer = CacheAwareCtcRecognizer(model, lookahead_ms=lookahead_ms, runtime=runtime, keep_log_probs=True)
        runs[runtime] = (_stream(recognizer, speech), torch.cat(recognizer.log_probs))
    assert runs["torch"][1].shape == runs["onnx"][1].shape
    assert (runs["torch"][1] - runs["onnx"][1]).abs().max() < 1e-4
    finals = {k: [h.text for h in hyps if h.final] for k, (hyps, _) in runs.items()}
    assert finals["torch"] == finals["onnx"] and finals["onnx"]


def test_export_is_made_once_and_keyed_by_the_model_files_hash(model_copy):
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    CacheAwareCtcRecognizer(load_nemo_model(str(model_copy)), lookahead_ms=80, runtime="onnx")
    exports = sorted(model_copy.parent.glob("tiny.*.cache-aware-70-1.onnx"))
    assert len(exports) == 1
    stamp = exports[0].stat().st_mtime_ns
    CacheAwareCtcRecognizer(load_nemo_model(str(model_copy)), lookahead_ms=80, runtime="onnx")
    assert exports[0].stat().st_mtime_ns == stamp  # reused, not exported again
    assert not list(model_copy.parent.glob(".partial-*"))
    # a retrained model under the same name gets its own export
    model = load_nemo_model(str(model_copy))
    with torch.no_grad():
        model.decoder.decoder_layers[0].bias += 0.5
    model.save_to(str(model_copy))
    CacheAwareCtcRecognizer(load_nemo_model(str(model_copy)), lookahead_ms=80, runtime="onnx")
    assert len(list(model_copy.parent.glob("tiny.*.cache-aware-70-1.onnx"))) == 2


def test_int8_runtime_stays_close_to_fp32(model_copy, speech):  # noqa: F811
    """`--runtime onnx-int8`: int8 matmul weights, exported from the fp32 export and cached too."""
    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    model = load_nemo_model(str(model_copy))
    runs = {}
    for runtime in ("onnx", "onnx-int8"):
        recognizer = CacheAwareCtcRecognizer(model, lookahead_ms=80, runtime=runtime, keep_log_probs=True)
        _stream(recognizer, speech)
        runs[runtime] = torch.cat(recognizer.log_probs)
    assert len(list(model_copy.parent.glob("tiny.*.cache-aware-70-1-int8.onnx"))) == 1
    fp32, int8 = runs["onnx"], runs["onnx-int8"]
    assert fp32.shape == int8.shape
    diff = (fp32 - int8).abs()
    agree = (fp32.argmax(-1) == int8.argmax(-1)).float().mean().item()
    # random weights leave many near-ties between labels, so some argmaxes flip; the trained AN4
    # model's WER with int8 is in BENCHMARKS.md
    assert 0 < diff.max() < 0.5 and diff.mean() < 0.1 and agree > 0.8, (diff.max(), diff.mean(), agree)
