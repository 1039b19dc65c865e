"""Where files are found: the package's own files, the user's folder ($ASR_STREAM_HOME), the
working directory's checkpoints/, in that documented order, whatever the current directory."""

from __future__ import annotations

import shutil

import pytest
import torch

from asr_stream import resources
from asr_stream.denoisers.demucs import Demucs
from asr_stream.errors import UserError


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the checkout and an empty user folder."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv(resources.HOME_ENV, str(home))
    monkeypatch.chdir(work)
    return home, work


def _demucs_file(path, hidden: int):
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(Demucs(hidden=hidden, depth=3).state_dict(), path)
    return path


def test_bundled_files_are_inside_the_package():
    package = resources.PRESETS.parents[1]
    for path in (resources.sample_wav(), resources.sample_wav().with_suffix(".txt"),
                 resources.BUNDLED_MODELS / "an4_fastconformer_ctc.nemo"):
        assert path.is_file() and resources.is_bundled(path)
        assert path.resolve().is_relative_to(package.resolve())
    assert {"default", "no-denoiser", "nemo", "microphone", "demucs"} <= set(resources.preset_names())


def test_presets_by_name_from_any_folder_and_the_users_own_first(elsewhere):
    from asr_stream.chain.presets import load_preset

    home, _ = elsewhere
    assert load_preset("no-denoiser")["denoiser"] == "none"
    (home / "configs").mkdir(parents=True)
    (home / "configs" / "no-denoiser.yaml").write_text("denoiser: rnnoise\n")
    (home / "configs" / "cafe.yaml").write_text("denoiser: gtcrn\n")
    assert load_preset("no-denoiser")["denoiser"] == "rnnoise"
    assert load_preset("cafe")["denoiser"] == "gtcrn"
    assert "cafe" in resources.preset_names()
    with pytest.raises(UserError) as excinfo:
        load_preset("nosuch")
    message = str(excinfo.value)
    assert "nosuch" in message and "default" in message and "\n" not in message


def test_demucs_by_name_from_the_user_folder_then_the_working_directory(elsewhere):
    from asr_stream.denoisers import load_denoiser_engine
    from asr_stream.denoisers.demucs_checkpoint import load_demucs

    home, work = elsewhere
    with pytest.raises(UserError, match="no Demucs checkpoint"):
        load_demucs("demucs")
    _demucs_file(work / "checkpoints" / "cafe.th", hidden=4)
    assert load_demucs("cafe").hparams["hidden"] == 4
    assert load_demucs("demucs").hparams["hidden"] == 4  # the one .th
    _demucs_file(home / "checkpoints" / "cafe.th", hidden=8)
    assert load_demucs("cafe").hparams["hidden"] == 8  # the user folder wins
    with pytest.raises(UserError, match="several"):
        load_demucs("demucs")
    engine = load_denoiser_engine("cafe")
    assert engine.create_stream().name == "cafe"


def test_nemo_model_by_name_defaults_to_the_bundled_one(elsewhere):
    from asr_stream.recognizers.nemo_model import resolve_model_path

    home, work = elsewhere
    bundled = resources.BUNDLED_MODELS / "an4_fastconformer_ctc.nemo"
    assert resolve_model_path(None) == str(bundled)
    assert resolve_model_path("an4_fastconformer_ctc") == str(bundled)
    mine = home / "checkpoints" / "an4_fastconformer_ctc.nemo"
    mine.parent.mkdir(parents=True)
    shutil.copy(bundled, mine)
    assert resolve_model_path("an4_fastconformer_ctc.nemo") == str(mine)
    assert resolve_model_path(None) == str(mine)
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_path("missing.nemo")
    assert resolve_model_path("stt_en_fastconformer_ctc_large") == "stt_en_fastconformer_ctc_large"


def test_onnx_exports_of_a_bundled_model_never_go_into_the_package(elsewhere, monkeypatch):
    from asr_stream.recognizers import nemo_onnx

    path = nemo_onnx.export_path(str(resources.BUNDLED_MODELS / "an4_fastconformer_ctc.nemo"), "offline")
    assert path.parent == nemo_onnx.CACHE_DIR and not resources.is_bundled(path)
    home, _ = elsewhere
    mine = home / "checkpoints" / "an4_fastconformer_ctc.nemo"
    mine.parent.mkdir(parents=True)
    shutil.copy(resources.BUNDLED_MODELS / "an4_fastconformer_ctc.nemo", mine)
    assert nemo_onnx.export_path(str(mine), "offline").parent == mine.parent
