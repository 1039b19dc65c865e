"""Buffered streaming for full-context NeMo models: the chunk bookkeeping on constructed
log-probs, then real (tiny, random-weight) models saved as .nemo and loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_stream.recognizers.ctc_decoding import CtcTranscript, Vocabulary
from asr_stream.recognizers.nemo_buffered import ChunkPlan
from conftest import demo_clip, load_16k, run_cli
from test_ctc_decoding import BLANK, CHARS, greedy, one_hot


@pytest.mark.parametrize("plan", [ChunkPlan(4, 3, 2), ChunkPlan(5, 0, 0), ChunkPlan(1, 2, 1), ChunkPlan(7, 10, 3)])
def test_chunk_borders_neither_duplicate_nor_drop_tokens(plan):
    """Each window's context frames hold garbage (what a model does with too little context),
    and tokens straddle the borders; the merged transcript equals greedy decoding of the whole."""
    rng = np.random.default_rng(plan.chunk)
    labels = [1, 1, 1, BLANK, 1, 2, 2, 2, 0, 3, 3, BLANK, 3, 1, 0, 2, BLANK, 2, 2, 1, 1, 3, 0, 1]
    truth = one_hot(labels)
    transcript = CtcTranscript(Vocabulary(CHARS), frame_s=0.08, endpoint_s=100)
    k = 0
    while k * plan.chunk < len(labels):
        lo, hi = plan.window(k, end=len(labels))
        last = hi >= len(labels)
        window = one_hot(rng.integers(0, BLANK + 1, hi - lo).tolist())  # garbage everywhere ...
        own = plan.own(k, lo, hi - lo, last)
        window[own] = truth[lo:hi][own]  # ... except the chunk's own frames
        transcript.add(window[own])
        k += 1
        if last:
            break
    assert transcript.frames == len(labels)
    assert [t for t, _ in transcript.tokens] == greedy(labels)
    assert [f for _, f in transcript.tokens] == [i for i, x in enumerate(labels)
                                                 if x != BLANK and (i == 0 or labels[i - 1] != x)]


nemo_models = pytest.importorskip("nemo.collections.asr.models", reason="nemo_toolkit is not installed")
from test_nemo_ctc import _greedy_text, _offline, _stream, tiny_config  # noqa: E402

TINY_CHARS = list(" abcdefghijklmnopqrstuvwxyz'")


def _save(cfg, path):
    torch.manual_seed(0)
    model = nemo_models.EncDecCTCModel(cfg=cfg).eval()
    with torch.no_grad():
        model.decoder.decoder_layers[0].bias[-1] -= 3.0  # random weights that do emit tokens
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def sliding_model_path(tmp_path_factory):
    """Sliding-window attention (16 frames left, 2 right) and causal convolutions: every output
    frame depends on a bounded span of input, so windows wide enough reproduce the offline pass."""
    cfg = tiny_config(TINY_CHARS)
    cfg.encoder.att_context_style = "regular"
    cfg.encoder.att_context_size = [16, 2]
    return _save(cfg, tmp_path_factory.mktemp("nemo") / "sliding.nemo")


@pytest.fixture(scope="module")
def full_context_path(tmp_path_factory):
    cfg = tiny_config(TINY_CHARS)
    cfg.encoder.att_context_size = [-1, -1]
    cfg.encoder.att_context_style = "regular"
    cfg.encoder.conv_context_size = None
    cfg.encoder.causal_downsampling = False
    cfg.preprocessor.normalize = "per_feature"  # full-context models usually normalise per utterance
    return _save(cfg, tmp_path_factory.mktemp("nemo") / "full.nemo")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_16k(demo_clip()[0])


def test_wide_enough_windows_reproduce_the_offline_pass(sliding_model_path, speech):
    """Left context covers the receptive field (2 layers x 16 frames + convolutions), right
    context covers 2 layers x 2 frames: every frame equals the offline pass's. With no
    context at all the same check fails, so it does test the windows."""
    from asr_stream.recognizers.nemo_buffered import BufferedCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    model = load_nemo_model(str(sliding_model_path))
    offline = _offline(model, speech, [16, 2])
    wide = BufferedCtcRecognizer(model, chunk_s=1.6, left_s=4.8, right_s=0.48, keep_log_probs=True)
    hyps = _stream(wide, speech)
    streamed = torch.cat(wide.log_probs)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-4
    assert " ".join(h.text for h in hyps if h.final).split() == _greedy_text(offline, TINY_CHARS)
    narrow = BufferedCtcRecognizer(model, chunk_s=1.6, left_s=0, right_s=0, keep_log_probs=True)
    _stream(narrow, speech)
    assert (torch.cat(narrow.log_probs) - offline).abs().max() > 0.1


def test_onnx_runtime_matches_pytorch_in_buffered_mode(full_context_path, speech, tmp_path, monkeypatch):
    from asr_stream.recognizers import nemo_onnx
    from asr_stream.recognizers.nemo_buffered import BufferedCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    monkeypatch.setattr(nemo_onnx, "CACHE_DIR", tmp_path / "cache")
    model = load_nemo_model(str(full_context_path))
    runs = {}
    for runtime in ("torch", "onnx"):
        recognizer = BufferedCtcRecognizer(model, runtime=runtime, keep_log_probs=True)
        runs[runtime] = (_stream(recognizer, speech), torch.cat(recognizer.log_probs))
    assert (runs["torch"][1] - runs["onnx"][1]).abs().max() < 1e-3
    assert [h.text for h in runs["torch"][0] if h.final] == [h.text for h in runs["onnx"][0] if h.final]


def test_a_full_context_model_streams_buffered_through_the_cli(full_context_path, tmp_path):
    wav, _ = demo_clip()
    out = tmp_path / "finals.jsonl"
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model",
                   str(full_context_path), "--output", str(out))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert out.read_text().strip()  # the random model's finals were written
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model",
                   str(full_context_path), "--streaming", "cache-aware")
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and "full attention context" in err[-1], err
