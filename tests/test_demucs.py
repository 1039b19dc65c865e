"""The Demucs model and its streamer: parity with the reference network, streaming equal to the
offline pass, latency, separate streams, int8, and the real trained checkpoint on real noisy
speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_stream.denoisers.demucs import Demucs, DemucsDenoiser, DemucsStreamer
from asr_stream.errors import UserError
from conftest import SHARED, demo_clip, load_16k, needs_shared

REAL_CHECKPOINT = SHARED / "data" / "models" / "demucs_valentini_light32.th"
needs_checkpoint = pytest.mark.skipif(not REAL_CHECKPOINT.is_file(), reason="../shared checkpoint is absent")

# dns48 and dns64 are the published sizes; the others cover resample 2, no GLU, other strides
SIZES = {
    "dns48": dict(hidden=48),
    "dns64": dict(hidden=64),
    "resample2": dict(hidden=32, depth=4, resample=2, growth=1.5, glu=False),
    "no-glu": dict(hidden=16, glu=False),
    "resample2-glu": dict(hidden=24, depth=4, resample=2),
}


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """3 s of real speech at 16 kHz, (1, n)."""
    return torch.from_numpy(load_16k(demo_clip()[0])[:48000 + 37])[None]


def model_of(size: str, seed: int = 0) -> Demucs:
    torch.manual_seed(seed)
    return Demucs(**SIZES[size]).eval()


def stream(streamer: DemucsStreamer, x: torch.Tensor, hop: int = 256) -> torch.Tensor:
    outs = [streamer.feed(x[:, i:i + hop]) for i in range(0, x.shape[1], hop)]
    return torch.cat(outs + [streamer.flush()], 1)


def offline(model: Demucs, x: torch.Tensor, std: float | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(x[None], std=std)[0]


@pytest.mark.parametrize("size", ["dns48", "resample2", "no-glu"])
def test_offline_pass_equals_reference_implementation(size, speech):
    ref_module = pytest.importorskip("denoiser.demucs")
    ours = model_of(size)
    ref = ref_module.Demucs(**SIZES[size]).eval()
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():
        expected = ref(speech[None])[0]
    assert torch.allclose(offline(ours, speech), expected, atol=1e-5)


@pytest.mark.parametrize("size", list(SIZES))
def test_streaming_equals_offline_pass(size, speech):
    model = model_of(size)
    scale = float(model.input_scale(speech[None]))
    expected = offline(model, speech, std=scale)
    exact = stream(DemucsStreamer(model, lookahead=None, scale=scale), speech)
    default = stream(DemucsStreamer(model, scale=scale), speech)
    assert exact.shape == default.shape == expected.shape
    assert (exact - expected).abs().max() < 1e-5  # the issue asks 1e-4; full look-ahead gives float rounding
    # 41.3 ms look-ahead: the up-sampler's outer taps see zeros (random weights: tiny; the
    # trained checkpoint: up to 2.4e-3, see the test below and BENCHMARKS.md)
    assert (default - expected).abs().max() < 1e-4


def _ragged(streamer: DemucsStreamer, x: torch.Tensor, seed: int = 0, most: int = 700) -> torch.Tensor:
    """x fed in uneven calls, as a real-time scheduler under load makes them."""
    rng, outs, i = np.random.default_rng(seed), [], 0
    streamer.reset()
    while i < x.shape[1]:
        n = int(rng.integers(1, most))
        outs.append(streamer.feed(x[:, i:i + n]))
        i += n
    return torch.cat(outs + [streamer.flush()], 1)


@pytest.mark.parametrize("lookahead", [64, None])
def test_any_chunking_gives_the_same_output(lookahead, speech):
    """With the running scale (what a live stream uses): the scale moves once per block of the
    stream, not per call, and each output sample is scaled back by what its input was divided by."""
    model = model_of("resample2-glu")
    speech = speech[:, :24000]
    by_hop = stream(DemucsStreamer(model, lookahead=lookahead), speech, hop=256)
    for other in [stream(DemucsStreamer(model, lookahead=lookahead), speech, hop=h) for h in (100, 1024, 24000)] + \
            [_ragged(DemucsStreamer(model, lookahead=lookahead), speech)]:
        assert other.shape == by_hop.shape
        assert (other - by_hop).abs().max() < 1e-6


@needs_checkpoint
def test_real_checkpoint_output_hardly_depends_on_call_sizes():
    """The trained model on real speech, one hop per call against a second per call and uneven
    calls. Full look-ahead: float rounding. The default look-ahead emits the samples at each
    call's end from partial sums, so the cuts show, within a few thousandths."""
    from asr_stream.denoisers import create_denoiser

    x = torch.from_numpy(load_16k(demo_clip()[0]))[None]
    x = x + 0.05 * torch.from_numpy(np.random.default_rng(0).standard_normal(x.shape[1]).astype(np.float32))
    for exact, limit in ((True, 1e-5), (False, 0.01)):
        streamer = create_denoiser(str(REAL_CHECKPOINT), denoise_exact=exact).streamer
        hop = stream(streamer, x, hop=streamer.scale_block)
        streamer.reset()
        for other in (stream(streamer, x, hop=16000), _ragged(streamer, x, most=3000)):
            assert other.shape == hop.shape
            assert (other - hop).abs().max() < limit, exact


@pytest.mark.parametrize("lookahead", [64, None])
def test_no_sample_waits_longer_than_the_stated_latency(lookahead, speech):
    model = model_of("dns48")
    streamer = DemucsStreamer(model, lookahead=lookahead)
    step, emitted, worst = 16, 0, 0
    for i in range(0, 12000, step):
        out = streamer.feed(speech[:, i:i + step])
        if out.shape[1]:
            arrived = i + step
            worst = max(worst, arrived - emitted)  # the first sample of this batch waited longest
            emitted += out.shape[1]
    assert emitted > 0
    assert streamer.latency_samples - step < worst <= streamer.latency_samples + step
    assert streamer.latency_samples == (661 if lookahead == 64 else 765)  # 41.3 ms / 47.8 ms


def test_streams_do_not_share_state(speech):
    model = model_of("resample2-glu")
    other = torch.flip(speech, [1])
    alone_a = stream(DemucsStreamer(model), speech)
    alone_b = stream(DemucsStreamer(model), other)
    a, b = DemucsStreamer(model), DemucsStreamer(model)
    outs_a, outs_b = [], []
    for i in range(0, speech.shape[1], 256):  # interleaved, as two sessions would be
        outs_a.append(a.feed(speech[:, i:i + 256]))
        outs_b.append(b.feed(other[:, i:i + 256]))
    assert torch.equal(torch.cat(outs_a + [a.flush()], 1), alone_a)
    assert torch.equal(torch.cat(outs_b + [b.flush()], 1), alone_b)


def test_reset_starts_a_new_session(speech):
    model = model_of("resample2-glu")
    streamer = DemucsStreamer(model)
    first = stream(streamer, speech)
    streamer.reset()
    assert torch.equal(stream(streamer, speech), first)


def test_dry_mixes_the_input_back_aligned(speech):
    model = model_of("resample2-glu")
    wet = stream(DemucsStreamer(model, scale=0.1), speech)
    assert torch.allclose(stream(DemucsStreamer(model, dry=1.0, scale=0.1), speech), speech, atol=1e-7)
    half = stream(DemucsStreamer(model, dry=0.5, scale=0.1), speech)
    assert torch.allclose(half, 0.5 * speech + 0.5 * wet, atol=1e-6)


def test_int8_stays_close_to_fp32(speech):
    model = model_of("dns48")
    fp32 = stream(DemucsStreamer(model, scale=0.1), speech)
    quantized = DemucsStreamer(model, scale=0.1)
    quantized.quantize()
    int8 = stream(quantized, speech)
    snr = 10 * torch.log10(fp32.pow(2).sum() / (int8 - fp32).pow(2).sum())
    assert snr > 20, f"int8 differs from fp32 by {snr:.1f} dB SNR"


def test_stage_checks_its_options():
    model = model_of("resample2-glu")  # one deep frame: 4**4 / 2 = 128 samples
    stage = DemucsDenoiser(model)
    assert stage.hop_size == model.total_stride
    with pytest.raises(UserError, match="multiple of 128"):
        DemucsDenoiser(model, hop=200)
    with pytest.raises(UserError, match="dry"):
        DemucsDenoiser(model, dry=1.5)
    with pytest.raises(UserError, match="non-causal"):
        DemucsDenoiser(Demucs(hidden=8, depth=2, causal=False))
    with pytest.raises(UserError, match="Hz"):
        DemucsDenoiser(Demucs(hidden=8, depth=2, sample_rate=48000))
    with pytest.raises(UserError, match="cannot stream|multiple of resample"):
        DemucsDenoiser(Demucs(hidden=8, depth=1, stride=2, kernel_size=4, resample=4))
    longer = DemucsDenoiser(model, hop=4 * model.total_stride)
    assert longer.latency_s > stage.latency_s


def test_stage_output_is_aligned_with_its_input(speech):
    stage = DemucsDenoiser(model_of("resample2-glu"), dry=1.0)
    x = speech[0].numpy()
    hop = stage.hop_size
    outs = [stage.process(x[i:i + hop]) for i in range(0, len(x) - len(x) % hop, hop)]
    out = np.concatenate(outs + [stage.flush()])
    assert len(out) == len(x) - len(x) % hop
    assert np.allclose(out, x[:len(out)], atol=1e-6)


# -- the real trained checkpoint on real noisy speech ----------------------------------------

def _valentini_pairs():
    import soundfile as sf

    noisy_dir = SHARED / "data" / "speech" / "valentini" / "noisy"
    for path in sorted(noisy_dir.glob("*.wav")):
        noisy, _ = sf.read(path, dtype="float32")
        clean, _ = sf.read(noisy_dir.parent / "clean" / path.name, dtype="float32")
        yield noisy, clean


@needs_shared
@needs_checkpoint
def test_real_checkpoint_improves_real_noisy_speech_streamed_as_well_as_offline():
    from pesq import pesq
    from pystoi import stoi

    from asr_stream.denoisers.demucs_checkpoint import load_demucs

    model = load_demucs(str(REAL_CHECKPOINT))
    scores = {"noisy": [], "offline": [], "streamed": []}
    for noisy, clean in _valentini_pairs():
        x = torch.from_numpy(noisy)[None]
        outputs = {"noisy": noisy, "offline": offline(model, x)[0].numpy(),
                   "streamed": stream(DemucsStreamer(model), x)[0].numpy()}
        for name, y in outputs.items():
            scores[name].append((pesq(16000, clean, y, "wb"), stoi(clean, y, 16000)))
    mean = {name: np.mean(v, axis=0) for name, v in scores.items()}
    assert len(scores["noisy"]) >= 3
    for name in ("offline", "streamed"):
        assert mean[name][0] > mean["noisy"][0] + 0.2, (name, mean)  # PESQ-WB
        assert mean[name][1] > mean["noisy"][1], (name, mean)  # STOI
    assert mean["streamed"][0] > mean["offline"][0] - 0.03, mean  # the bound
    assert mean["streamed"][1] > mean["offline"][1] - 0.01, mean


@needs_shared
@needs_checkpoint
def test_real_checkpoint_streams_like_the_offline_pass_at_the_same_scale():
    """With the offline scale: exact look-ahead matches to 1e-4; the 41.3 ms default, whose
    up-sampler reads zeros for the 20 samples not yet arrived, stays within a few 1e-3."""
    from asr_stream.denoisers.demucs_checkpoint import load_demucs

    model = load_demucs(str(REAL_CHECKPOINT))
    noisy, _ = next(_valentini_pairs())
    x = torch.from_numpy(noisy)[None]
    scale = float(model.input_scale(x[None]))
    expected = offline(model, x, std=scale)
    hop = model.total_stride
    assert (stream(DemucsStreamer(model, lookahead=None, scale=scale), x, hop) - expected).abs().max() < 1e-4
    assert (stream(DemucsStreamer(model, scale=scale), x, hop) - expected).abs().max() < 1e-2
