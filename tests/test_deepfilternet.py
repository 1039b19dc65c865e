"""DeepFilterNet3 (the wheel's C runtime) as a Denoiser stage: aligned output, real improvement."""

import numpy as np
import pytest
from pesq import pesq

from asr_stream.denoisers import create_denoiser
from asr_stream.stages import Denoiser
from conftest import SHARED_NOISE, SHARED_SPEECH, audioeval_clips, load_16k, mix_at_snr, needs_shared


def _stream(den, x):
    out = [den.process(x[i : i + den.hop_size]) for i in range(0, len(x), den.hop_size)]
    return np.concatenate(out + [den.flush()])


@pytest.fixture(scope="module")
def dfn():
    return create_denoiser("deepfilternet")


def test_is_a_denoiser_stage_with_its_latency(dfn):
    assert isinstance(dfn, Denoiser)
    assert dfn.hop_size == 160
    assert 0.03 < dfn.latency_s < 0.06


def test_output_is_aligned_with_input_and_same_length(dfn):
    dfn.reset()
    clean = load_16k(audioeval_clips()[-1][0])
    noisy = mix_at_snr(clean, np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32), 10)
    y = _stream(dfn, noisy)
    assert len(y) == len(noisy)
    lags = np.arange(-400, 401)
    corr = [np.dot(y[1000 + k : -1000 + k], clean[1000:-1000]) for k in lags]
    assert lags[int(np.argmax(corr))] == 0


def test_reset_gives_identical_second_stream(dfn):
    x = load_16k(audioeval_clips()[0][0])
    dfn.reset()
    a = _stream(dfn, x)
    dfn.reset()
    b = _stream(dfn, x)
    assert np.array_equal(a, b)


def test_a_stream_loads_its_model_on_its_first_frame():
    """Each stream's libDF state loads the whole model (a third of a second of CPU): a stream made
    but never fed (a clean session whose gate never starts its denoiser) holds none, and a reset
    gives its state back; the output is the same either way."""
    x = load_16k(audioeval_clips()[0][0])
    fresh = create_denoiser("deepfilternet")
    assert fresh._state is None
    y = _stream(fresh, x)
    assert fresh._state is not None
    fresh.reset()
    assert fresh._state is None
    assert np.array_equal(_stream(fresh, x), y)


@needs_shared
def test_improves_real_noisy_speech(dfn):
    """Valentini pairs (real recorded noise): PESQ-WB up on average, and no pair made worse."""
    base = SHARED_SPEECH / "valentini"
    before, after = [], []
    for clean_path in sorted((base / "clean").glob("*.wav")):
        clean = load_16k(clean_path)
        noisy = load_16k(base / "noisy" / clean_path.name)
        dfn.reset()
        y = _stream(dfn, noisy)
        before.append(pesq(16000, clean, noisy, "wb"))
        after.append(pesq(16000, clean, y, "wb"))
    assert np.mean(after) > np.mean(before) + 0.3
    assert all(a > b - 0.05 for a, b in zip(after, before))


@needs_shared
def test_improves_speech_in_real_kitchen_noise(dfn):
    clean = load_16k(SHARED_SPEECH / "valentini" / "clean" / "p287_003.wav")
    noise = load_16k(SHARED_NOISE / "doing_the_dishes.wav")
    noisy = mix_at_snr(clean, noise, 5)
    dfn.reset()
    y = _stream(dfn, noisy)
    assert pesq(16000, clean, y, "wb") > pesq(16000, clean, noisy, "wb")


def test_a_starting_stream_takes_a_state_made_ahead():
    """The model load (a quarter of a second) is not on a starting stream's path: it takes a fresh
    state made ahead in the background, and another is made for the next start. Its attenuation
    limit is set on the taken state: the output is that of a state made with the limit."""
    from asr_stream.denoisers import deepfilternet

    spares = deepfilternet.SPARES
    x = load_16k(audioeval_clips()[0][0])
    first = _stream(create_denoiser("deepfilternet"), x)
    spares.wait()
    taken, on_path = spares.taken, spares.loaded_on_path
    second = create_denoiser("deepfilternet")
    assert np.array_equal(_stream(second, x), first)
    assert (spares.taken, spares.loaded_on_path) == (taken + 1, on_path)
    made_with_limit = create_denoiser("deepfilternet")
    made_with_limit.reset()
    made_with_limit._state = deepfilternet._library().df_create(made_with_limit._model.encode(), 20.0, None)
    assert np.array_equal(_stream(made_with_limit, x), first)
