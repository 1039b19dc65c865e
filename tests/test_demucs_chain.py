"""Demucs as the chain's denoiser stage: `asr-stream --denoiser FILE.th|NAME|dns48 ...` end to end."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_stream.denoisers.demucs import Demucs
from conftest import SHARED, demo_clip, needs_shared, run_cli, shared_tsv, wer
from test_cli import _ok, _one_line_error

REAL_CHECKPOINT = SHARED / "data" / "models" / "demucs_valentini_light32.th"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A small causal Demucs saved as a plain state dict (the published files' format)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.th"
    torch.save(Demucs(hidden=8, depth=3).state_dict(), path)
    return path


def test_dry_demucs_stage_keeps_speech_aligned_through_the_chain(small_checkpoint, tmp_path):
    """With dry=1 the stage must hand on exactly its (aligned) input: the transcript of the
    demo clip comes through unchanged, and the summary names the stage."""
    wav, ref = demo_clip()
    stats = tmp_path / "s.json"
    out = _ok(run_cli("--audio_path", str(wav), "--denoiser", str(small_checkpoint), "--dry", "1",
                      "--stats-json", str(stats)))
    assert wer([ref], [out]) < 0.1, out
    summary = json.loads(stats.read_text())
    assert summary["denoiser"] == "small" and summary["dropped_frames"] == 0


def test_checkpoint_by_name_from_checkpoints_folder(small_checkpoint, tmp_path):
    from asr_stream.denoisers import create_denoiser
    from asr_stream.denoisers.demucs_checkpoint import load_demucs

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "cafe.th").write_bytes(small_checkpoint.read_bytes())
    model = load_demucs("cafe", checkpoints_dir=folder)
    assert model.hparams["hidden"] == 8 and model.hparams["depth"] == 3
    stage = create_denoiser(str(folder / "cafe.th"), denoise_hop=64)
    assert stage.hop_size == 64 and stage.name == "cafe"


@pytest.mark.parametrize("args,needle", [
    (["--denoiser", "/nonexistent/model.th"], "does not exist"),
    (["--denoise-hop", "100"], "--denoise-hop"),
    (["--dry", "1.5"], "--dry"),
])
def test_bad_demucs_options(small_checkpoint, args, needle):
    wav, _ = demo_clip()
    if args[0] != "--denoiser":
        args = ["--denoiser", str(small_checkpoint), *args]
    _one_line_error(run_cli("--audio_path", str(wav), *args), needle)


class _WritesAFile:
    """A pickle payload: unpickling it would create `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.path),)


def test_bad_checkpoint_files_from_the_cli(tmp_path):
    wav, _ = demo_clip()
    junk = tmp_path / "junk.th"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    _one_line_error(run_cli("--audio_path", str(wav), "--denoiser", str(junk)), "not a PyTorch checkpoint")
    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil.th"
    torch.save({"state": _WritesAFile(str(pwned))}, evil)
    _one_line_error(run_cli("--audio_path", str(wav), "--denoiser", str(evil)), "refusing to run code")
    assert not pwned.exists()


def test_pretrained_name_offline_names_the_url(tmp_path):
    """dns48 with no network (here: a closed port on 127.0.0.1) is a one-line error with the URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/dns48-11decc9d8e3f0998.th"
    wav, _ = demo_clip()
    proc = run_cli("--audio_path", str(wav), "--denoiser", "dns48",
                   env={"ASR_STREAM_DEMUCS_URL_DNS48": url, "TORCH_HOME": str(tmp_path)})
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, err
    assert not any("Traceback" in line for line in err), err
    assert "downloading" in err[0] and url in err[-1] and "could not download" in err[-1], err


@needs_shared
@pytest.mark.skipif(not REAL_CHECKPOINT.is_file(), reason="../shared checkpoint is absent")
def test_real_checkpoint_in_the_chain_on_real_noisy_speech(tmp_path):
    """The trained Demucs before Whisper on Valentini's noisy recordings: the words come through."""
    clips = shared_tsv("valentini")
    noisy = [sf.read(path.parent.parent / "noisy" / path.name, dtype="float32")[0] for path, _ in clips]
    gap = np.zeros(16000, np.float32)
    audio = np.concatenate([np.concatenate([x, gap]) for x in noisy])
    wav = tmp_path / "noisy.wav"
    sf.write(wav, audio, 16000)
    stats = tmp_path / "s.json"
    out = _ok(run_cli("--audio_path", str(wav), "--denoiser", str(REAL_CHECKPOINT), "--stats-json", str(stats)))
    score = wer([" ".join(t for _, t in clips)], [out])
    assert score < 0.5, (score, out)
    summary = json.loads(stats.read_text())
    assert summary["dropped_frames"] == 0 and summary["denoiser"] == REAL_CHECKPOINT.stem, summary
