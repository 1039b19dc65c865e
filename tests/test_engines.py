"""Engines are loaded once per settings and shared; streams made from them share no state."""

from pathlib import Path

import numpy as np
import pytest
import torch

from asr_stream.chain import engines as engines_mod
from asr_stream.denoisers import load_denoiser_engine
from asr_stream.denoisers.demucs import Demucs
from asr_stream.errors import UserError
from asr_stream.chain.pipeline import Settings, build_stages
from asr_stream.runtime.threads import configure_threads


def test_the_same_settings_reuse_the_loaded_engines():
    s = Settings(denoiser="gtcrn", asr="nemo", pace="realtime")
    first, again = engines_mod.load_engines(s), engines_mod.load_engines(Settings(denoiser="gtcrn", asr="nemo",
                                                                                  pace="realtime"))
    assert first.recognizer is again.recognizer and first.denoiser is again.denoiser
    model = first.recognizer.model
    (d1, r1), (d2, r2) = first.create_streams(), again.create_streams()
    assert r1 is not r2 and d1 is not d2
    assert r1.model is r2.model is model  # one loaded .nemo for every stream
    other = engines_mod.load_engines(Settings(denoiser="none", asr="nemo", pace="realtime"))
    assert other.recognizer is first.recognizer  # the recogniser's settings did not change
    d3, _ = build_stages(Settings(denoiser="gtcrn", asr="nemo", pace="realtime"))  # the CLI's one stream
    assert d3.inner._session is d1.inner._session


def test_the_gate_hears_with_the_curves_of_the_chains_recognizer():
    """How much denoising helps depends on the recogniser (recipes/gate: Whisper wants half the
    denoised signal at most SNRs, a CTC model trained on clean speech all of it): a chain's gate
    takes the curves calibrated for its recogniser, and a recogniser without curves of its own
    gets Whisper's."""
    from asr_stream.denoisers.gate import calibration_for

    def curves(calibration):
        return tuple(map(tuple, calibration["curve"]["noise"])), tuple(map(tuple, calibration["curve"]["babble"]))

    nemo, _ = engines_mod.load_engines(Settings(denoiser="deepfilternet", asr="nemo", pace="realtime")).create_streams()
    whisper, _ = engines_mod.load_engines(Settings(denoiser="deepfilternet", pace="realtime")).create_streams()
    assert (nemo.curve, nemo.babble_curve) == curves(calibration_for("deepfilternet", "nemo"))
    assert (whisper.curve, whisper.babble_curve) == curves(calibration_for("deepfilternet"))
    assert nemo.curve != whisper.curve
    assert calibration_for("deepfilternet", "my.plugin") == calibration_for("deepfilternet", "whisper")


def test_streams_of_one_demucs_engine_share_weights_but_not_state():
    torch.manual_seed(0)
    model = Demucs(hidden=8, depth=3, resample=2)
    from asr_stream.denoisers.demucs import DemucsEngine

    engine = DemucsEngine(model, int8=False)
    a, b = engine.create_stream(), engine.create_stream()
    assert a.streamer.enc is b.streamer.enc and a.streamer.weights is engine.weights
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(4096).astype(np.float32) * 0.1, rng.standard_normal(4096).astype(np.float32) * 0.1
    hop = a.hop_size

    def by_hop(stream, audio):
        return np.concatenate([stream.process(audio[i:i + hop]) for i in range(0, len(audio), hop)])

    alone = np.concatenate([by_hop(engine.create_stream(), x), by_hop(engine.create_stream(), y)])
    out_a, out_b = [], []
    for i in range(0, 4096, hop):  # interleaved, as the scheduler runs them
        out_a.append(a.process(x[i:i + hop]))
        out_b.append(b.process(y[i:i + hop]))
    assert np.allclose(np.concatenate(out_a + out_b), alone, atol=1e-7)


def test_a_plugin_factory_is_called_once_per_stream():
    engine = load_denoiser_engine("failing_stages:broken_denoiser")
    a, b = engine.create_stream(), engine.create_stream()
    assert a is not b and a.name == "broken"


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="device"):
        engines_mod.load_engines(Settings(device="tpu"))
    with pytest.raises(UserError, match="gate"):
        engines_mod.load_engines(Settings(gate="yes"))
    with pytest.raises(UserError, match="unknown denoiser"):
        engines_mod.load_engines(Settings(denoiser="nope"))


def test_torch_and_blas_threads_are_set_once_for_the_process():
    """numpy's OpenBLAS would otherwise size its pool to the cores, and its idle helpers spin
    after every matrix product (Whisper's features): CPU each stream pays for nothing."""
    from threadpoolctl import threadpool_info

    first = configure_threads(1)
    assert configure_threads(first + 3) == first
    assert torch.get_num_threads() == first
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == first for p in blas)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_thread_carries_its_name_at_the_os_level():
    """top -H and the daemon benchmark's CPU split tell the scheduler's threads by these names."""
    import threading

    from asr_stream.runtime.threads import name_os_thread

    seen = {}

    def run():
        name_os_thread()
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=run, name="stream-worker-7-and-more")
    t.start()
    t.join()
    assert seen["comm"] == "stream-worker-7"  # the OS keeps 15 characters
