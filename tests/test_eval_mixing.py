"""Noise mixing: the requested SNR on active speech, the same audio every time, babble."""

from __future__ import annotations

import numpy as np
import pytest

from asr_stream.io.audio_files import load_16k
from asr_stream.evaluation.mixing import Condition, Mixer, active_speech_mask, mix_at_snr, snr_db
from conftest import audioeval_clips, demo_clip


@pytest.fixture(scope="module")
def speech():
    return load_16k(demo_clip()[0])


@pytest.mark.parametrize("snr", [-5, 0, 5, 10, 20])
def test_mixture_hits_the_requested_snr_on_active_speech(speech, snr):
    mask = active_speech_mask(speech)
    assert 0.5 < mask.mean() < 1.0  # the clip has pauses, which must not count as speech
    noise = np.random.default_rng(1).normal(0, 0.1, len(speech)).astype(np.float32)
    mixture, scaled = mix_at_snr(speech, noise, snr, mask)
    speech_part = mixture - scaled
    assert snr_db(speech_part, scaled, mask) == pytest.approx(snr, abs=0.1)
    assert np.max(np.abs(mixture)) <= 0.99 + 1e-6


def test_whole_clip_level_would_be_wrong(speech):
    """Speech with a long silence added: the active-speech SNR stays put, a whole-clip one would drift."""
    padded = np.concatenate([speech, np.zeros(5 * 16000, np.float32)])
    mask = active_speech_mask(padded)
    assert mask[len(speech) + 16000:].sum() == 0
    noise = np.random.default_rng(2).normal(0, 0.1, len(padded)).astype(np.float32)
    mixture, scaled = mix_at_snr(padded, noise, 5.0, mask)
    assert snr_db(mixture - scaled, scaled, mask) == pytest.approx(5.0, abs=0.1)
    whole = snr_db(mixture - scaled, scaled, np.ones(len(padded), bool))
    assert whole < 4.0


def test_conditions_are_deterministic_and_babble_uses_other_utterances(speech, tmp_path):
    speech = 0.3 * speech  # quiet enough that the mixture is never scaled down against clipping
    others = [load_16k(p) for p, _ in audioeval_clips()]
    mixer = Mixer(tmp_path, babble_sources=[speech] + others)
    babble = Condition.parse("babble@5")
    a, _ = mixer.make(speech, babble, "clip", index=0)
    b, _ = mixer.make(speech, babble, "clip", index=0)
    c, _ = mixer.make(speech, babble, "other-clip", index=0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert snr_db(speech, a - speech, active_speech_mask(speech)) == pytest.approx(5.0, abs=0.1)
    assert mixer.make(speech, Condition.parse("clean"), "clip")[0] is speech


def test_condition_names():
    assert Condition.parse("clean").name == "clean"
    assert Condition.parse("10").name == "any@10dB"
    assert Condition.parse("running_tap@0").name == "running_tap@0dB"
