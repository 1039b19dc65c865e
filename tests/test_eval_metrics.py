"""WER/CER and enhancement scores against values known by hand or by definition."""

from __future__ import annotations

import numpy as np
import pytest

from asr_stream.evaluation import metrics
from asr_stream.io.audio_files import load_16k
from conftest import demo_clip


def test_wer_and_cer_on_hand_made_pairs():
    # 1 substitution (sat->sit) + 1 deletion (the) over 6 + 3 reference words; 1 insertion (on)
    out = metrics.error_rates(["the cat sat on the mat", "a b c"], ["the cat sit on mat", "a b c d"])
    assert out["words"] == 9
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 1, 1)
    assert out["wer"] == pytest.approx(3 / 9)
    assert metrics.error_rates(["abc"], ["abd"])["cer"] == pytest.approx(1 / 3)


def test_the_normaliser_ignores_case_punctuation_and_number_forms():
    out = metrics.error_rates(["It's 5 o'clock, Mr. Smith!"], ["it's five o'clock mister smith"])
    assert out["wer"] == 0.0
    assert metrics.normalize("Colour, COLOR.") == metrics.normalize("color color")


def test_other_languages_use_the_basic_normaliser():
    out = metrics.error_rates(["Guten Tag, Welt!"], ["guten tag welt"], language="de")
    assert out["wer"] == 0.0


def test_pesq_and_stoi_of_identical_signals_are_their_maxima():
    speech = load_16k(demo_clip()[0])
    assert metrics.pesq_wb(speech, speech) == pytest.approx(4.644, abs=0.01)
    assert metrics.stoi(speech, speech) == pytest.approx(1.0, abs=1e-6)


def test_noise_lowers_every_score():
    speech = load_16k(demo_clip()[0])
    noisy = speech + np.random.default_rng(0).normal(0, 0.05, len(speech)).astype(np.float32)
    assert metrics.pesq_wb(speech, noisy) < 2.0
    assert metrics.stoi(speech, noisy) < 0.95
    clean_mos, noisy_mos = metrics.dnsmos(speech), metrics.dnsmos(noisy)
    assert noisy_mos["bak"] < clean_mos["bak"] - 1.0 and noisy_mos["ovrl"] < clean_mos["ovrl"]
