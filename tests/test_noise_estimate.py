"""The noise estimator: SNR from a denoiser's input and output, on real speech."""

import math

import numpy as np
import pytest

from asr_stream.denoisers import create_denoiser
from asr_stream.denoisers.gate import calibration_for
from asr_stream.evaluation.mixing import looped_segment, mix_at_snr, power
from asr_stream.denoisers.noise_estimate import InputLevel, NoiseEstimator, SpectralFloor
from conftest import GATE_HELD_OUT_NOISES, SHARED_NOISE, SHARED_SPEECH, audioeval_clips, demo_clip, load_16k, needs_shared


_stages = {}


def _denoised(name, x):
    if name not in _stages:
        _stages[name] = create_denoiser(name)
    den = _stages[name]
    den.reset()
    h = den.hop_size
    return np.concatenate([den.process(x[i : i + h]) for i in range(0, len(x), h)] + [den.flush()])


def _median_reading(x, e, calibration):
    est, values = NoiseEstimator(calibration=calibration), []
    for i in range(0, len(x), 320):
        est.update(x[i : i + 320], e[i : i + 320])
        r = est.reading().snr_db
        if r is not None:
            values.append(min(r, 60.0))
    return float(np.median(values)) if values else None


def _babble(talkers, n, rng):
    return np.sum([looped_segment(t, n, rng) / math.sqrt(power(t)) for t in talkers], axis=0).astype(np.float32)


def test_a_pause_gives_no_reading_and_a_noiseless_input_reads_infinite():
    est = NoiseEstimator()
    est.update(np.zeros(32000, np.float32), np.zeros(32000, np.float32))
    assert est.reading().snr_db is None
    speech = load_16k(demo_clip()[0])
    est.reset()
    est.update(speech, speech)  # the denoiser took nothing out
    assert est.reading().snr_db == math.inf


def test_digital_silence_is_not_the_room():
    """Padding before a noisy recording (a file that starts with zeros, a muted input) is no noise
    floor: the input level and the estimator read what they read on the recording alone. Before
    this, the zeros read as a perfectly quiet room and the gate left a noisy file undenoised for
    the first 2.5 s of its noise."""
    speech = load_16k(demo_clip()[0])[: 3 * 16000]
    noise = np.random.default_rng(3).standard_normal(len(speech)).astype(np.float32)
    x = mix_at_snr(speech, noise, 5)[0]
    e = _denoised("deepfilternet", x)
    padded_x = np.concatenate([np.zeros(2 * 16000, np.float32), x])
    padded_e = np.concatenate([np.zeros(2 * 16000, np.float32), e])
    alone, padded = InputLevel(window_s=3.0), InputLevel(window_s=3.0)
    alone.update(x[:16000])
    padded.update(padded_x[: 3 * 16000])
    assert alone.snr_db() is not None and padded.snr_db() == alone.snr_db() < 15
    padded.reset()
    padded.update(np.zeros(5 * 16000, np.float32))
    assert padded.snr_db() is None  # nothing but zeros: nothing to read
    alone, padded = NoiseEstimator(), NoiseEstimator()
    alone.update(x, e)
    padded.update(padded_x, padded_e)
    assert alone.reading().snr_db is not None and padded.reading() == alone.reading()



def test_the_per_band_floor_reads_continuous_speech_as_clean():
    """Real speech with no pauses to speak of (the shipped clips back to back): the broadband
    input level finds no floor and reads it far below clean; the per-band floor reads it clean at
    every second, the same speech in white noise at 10 dB noisy, and zeros before it change
    nothing."""
    from asr_stream.denoisers.gate import CLEAN_SPECTRAL_DB

    speech = np.concatenate([load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()])
    noisy = mix_at_snr(speech, np.random.default_rng(7).standard_normal(len(speech)).astype(np.float32), 10)[0]
    for x, clean in ((speech, True), (noisy, False)):
        spectral, level, readings = SpectralFloor(window_s=3.0), InputLevel(window_s=3.0), []
        for i in range(0, len(x) - 16000, 16000):
            spectral.update(x[i : i + 16000])
            level.update(x[i : i + 16000])
            readings.append((spectral.snr_db(), level.snr_db()))
        if clean:
            assert min(s for s, _ in readings) >= CLEAN_SPECTRAL_DB, readings
            assert min(l for _, l in readings) < CLEAN_SPECTRAL_DB - 5, readings
        else:
            assert max(s for s, _ in readings) < CLEAN_SPECTRAL_DB - 5, readings
    alone, padded = SpectralFloor(window_s=3.0), SpectralFloor(window_s=3.0)
    alone.update(noisy[:16000])
    padded.update(np.concatenate([np.zeros(16000, np.float32), noisy[:16000]]))
    assert abs(alone.frames - padded.frames) <= 3 and abs(alone.snr_db() - padded.snr_db()) < 0.5


def test_digital_silence_does_not_hide_babble():
    """Babble after padding still reads as babble a second in (zeros scored by the VAD diluted it
    below the threshold: 0.50 against 0.80 without the zeros; the padded stream also scores the
    first 0.3 s of the speech, which the unpadded one leaves to its denoiser's settling)."""
    from asr_stream.denoisers.gate import BABBLE_VAD
    from asr_stream.io.vad import SileroVAD

    speech = load_16k(demo_clip()[0])[: 2 * 16000]
    babble = _babble([load_16k(p) for p, _ in audioeval_clips()], len(speech), np.random.default_rng(4))
    x = mix_at_snr(speech, babble, 5)[0]
    e = _denoised("deepfilternet", x)
    zeros = np.zeros(2 * 16000, np.float32)
    alone, padded = NoiseEstimator(speech_detector=SileroVAD()), NoiseEstimator(speech_detector=SileroVAD())
    alone.update(x[:16000], e[:16000])
    padded.update(np.concatenate([zeros, x[:16000]]), np.concatenate([zeros, e[:16000]]))
    a, b = alone.reading().speech_like, padded.reading().speech_like
    assert a >= BABBLE_VAD and b >= BABBLE_VAD, (a, b)


def test_a_perfect_denoiser_reads_the_mixing_snr():
    """x = speech + noise and e = speech exactly: the raw reading is close to the mixing SNR."""
    speech = load_16k(demo_clip()[0])
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    for snr in (10, 5, 0):
        x, scaled = mix_at_snr(speech, noise, snr)
        clean = x - scaled  # the speech as mixed (after any clip guard)
        est, values = NoiseEstimator(), []
        for i in range(0, len(x), 320):
            est.update(x[i : i + 320], clean[i : i + 320])
            raw, _ = est.raw_snr_db()
            if raw is not None:
                values.append(raw)
        assert abs(np.median(values) - snr) < 3.5, (snr, np.median(values))  # loud half vs active speech


def test_memory_is_a_fixed_ring_over_a_long_stream():
    est = NoiseEstimator()
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    for _ in range(600):  # ten minutes
        est.update(x, 0.5 * x)
    assert est._px.shape == (est.size,) and est._filled == est.size


@pytest.mark.parametrize("denoiser", ["deepfilternet", "gtcrn"])
def test_calibrated_reading_follows_the_snr_on_shipped_speech(denoiser):
    """Real speech clips the package ships, in babble of the other clips and in white noise; the
    readings rise with the SNR and sit within 4.5 dB of it."""
    clips = [load_16k(p) for p, _ in audioeval_clips()] + [load_16k(demo_clip()[0])]
    calibration = calibration_for(denoiser)["estimator_map"]
    rng = np.random.default_rng(3)
    errors = []
    for i, speech in enumerate(clips):
        others = [c for j, c in enumerate(clips) if j != i]
        for kind in ("white", "babble"):
            noise = (rng.standard_normal(len(speech)).astype(np.float32) if kind == "white"
                     else _babble(others, len(speech), rng))
            readings = []
            for snr in (10, 5, 0):
                x = mix_at_snr(speech, noise, snr)[0]
                readings.append(_median_reading(x, _denoised(denoiser, x), calibration))
                errors.append(readings[-1] - snr)
            assert readings[0] > readings[1] > readings[2], (kind, readings)
    assert np.mean(np.abs(errors)) < 4.5, np.round(errors, 1)


@needs_shared
@pytest.mark.parametrize("denoiser", ["deepfilternet", "gtcrn"])
def test_held_out_real_noise_accuracy(denoiser):
    """The recipe's held-out split (odd LJSpeech clips, noises the calibration never saw): mean
    absolute error of the calibrated reading against the mixing SNR, -5 to 10 dB."""
    base = SHARED_SPEECH / "ljspeech"
    clips = sorted(base.glob("*.wav"))[1::2][:5]
    noises = GATE_HELD_OUT_NOISES
    calibration = calibration_for(denoiser)["estimator_map"]
    errors = []
    for i, path in enumerate(clips):
        speech, rng = load_16k(path), np.random.default_rng(i)
        noise = looped_segment(load_16k(SHARED_NOISE / f"{noises[i % len(noises)]}.wav"), len(speech), rng)
        for snr in (10, 5, 0, -5):
            x = mix_at_snr(speech, noise, snr)[0]
            r = _median_reading(x, _denoised(denoiser, x), calibration)
            errors.append(abs(r - snr))
    assert np.mean(errors) < 3.5, np.round(errors, 1)


def test_speech_like_noise_is_told_from_other_noise():
    """Babble of other real talkers reads as speech-like; white noise (and, with ../shared, every
    real noise recording) does not. Measured: babble 0.82-0.97, real noise 0.02-0.10."""
    from asr_stream.io.vad import SileroVAD

    clips = [load_16k(p) for p, _ in audioeval_clips()] + [load_16k(demo_clip()[0])]
    rng = np.random.default_rng(7)
    noises = {"white": rng.standard_normal(16000 * 20).astype(np.float32)}
    if SHARED_NOISE.is_dir():
        noises.update({p.stem: load_16k(p) for p in sorted(SHARED_NOISE.glob("*.wav"))})
    for i, speech in enumerate(clips):
        for snr in (0,):  # the hardest: the denoiser takes the most speech out along with the noise
            cases = {"babble": _babble([c for j, c in enumerate(clips) if j != i], len(speech), rng)}
            for k, v in noises.items():  # every real noise over the longest clip, white noise over all
                if k == "white" or i == len(clips) - 1:
                    cases[k] = looped_segment(v, len(speech), rng)
            for kind, noise in cases.items():
                x = mix_at_snr(speech, noise, snr)[0]
                est = NoiseEstimator(speech_detector=SileroVAD())
                est.update(x, _denoised("deepfilternet", x))
                score = est.speech_like()
                assert (score > 0.5) == (kind == "babble"), (kind, snr, score)
