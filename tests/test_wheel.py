"""The product as a pip user gets it: the wheel built from this checkout, installed into a new
virtual environment, run from a folder that is not the checkout, with nothing of the checkout on
its path. Its own files (presets, the AN4 model, the demo clip, the caption page) must come from
the installed package.

The new environment reaches the already installed dependencies (torch, NeMo, ...) through a
`.pth` line, so the test installs nothing from the network; `asr_stream` itself is the wheel's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO, SHARED, normalize, wer
from daemon import Daemon




def _run(cmd: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, working folder, environment) of a fresh install of the built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # only what the wheel is built from, as the Dockerfile's build context
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "asr_stream", src / "asr_stream",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx"))
    dist = root / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
                 cwd=root, env=dict(os.environ))
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("asr_stream-*.whl"))

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel],
                     cwd=root, env=dict(os.environ))
    assert installed.returncode == 0, installed.stderr
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root, env={}).stdout.strip())
    (site / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = root / "work"  # the user's folder: no checkpoints/, no samples/, no configs/
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ASR_STREAM_HOME=str(root / "home"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
               # dns48 is downloaded on first use: here it fails at once instead of waiting on the network
               ASR_STREAM_DEMUCS_URL_DNS48="http://127.0.0.1:9/dns48-11decc9d8e3f0998.th")
    return venv / "bin", work, env


def _package_file(installed, expression: str) -> Path:
    bin_dir, work, env = installed
    out = _run([bin_dir / "python", "-c", f"from asr_stream import resources; print({expression})"], work, env)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def test_the_package_runs_from_the_wheel_not_the_checkout(installed):
    bin_dir, work, env = installed
    where = _package_file(installed, "resources.__file__")
    assert where.is_relative_to(bin_dir.parent) and not where.is_relative_to(REPO)
    for expression in ("resources.sample_wav()", "resources.BUNDLED_MODELS / 'an4_fastconformer_ctc.nemo'",
                       "resources.PRESETS / 'default.yaml'"):
        path = _package_file(installed, expression)
        assert path.is_file() and path.is_relative_to(bin_dir.parent), path


def test_caption_the_bundled_clip(installed):
    bin_dir, work, env = installed
    wav = _package_file(installed, "resources.sample_wav()")
    out = _run([bin_dir / "asr-stream", "--audio_path", wav, "--pace", "fast"], work, env)
    assert out.returncode == 0, out.stderr
    assert wer([wav.with_suffix(".txt").read_text()], [out.stdout]) < 0.15, out.stdout


PRESET_EXTRA = {  # flags a preset needs here: a file instead of the microphone
    "microphone": ["--mode", "file"],
    "nemo-demucs-microphone": ["--mode", "file"],
}


@pytest.mark.parametrize("preset", ["default", "no-denoiser", "microphone", "nemo", "nemo-buffered",
                                    "demucs", "nemo-demucs-microphone"])
def test_every_preset_by_name(installed, preset):
    """Each preset loads by name; those whose models are here caption the clip, those that need a
    download say so in one line."""
    bin_dir, work, env = installed
    wav = _package_file(installed, "resources.sample_wav()")
    out = _run([bin_dir / "asr-stream", "--config", preset, "--audio_path", wav, "--pace", "fast",
                *PRESET_EXTRA.get(preset, [])], work, env)
    if preset in ("demucs", "nemo-demucs-microphone"):  # dns48 is downloaded on first use; offline here
        assert out.returncode == 2 and "dns48" in out.stderr and "Traceback" not in out.stderr, out.stderr
        *progress, error = out.stderr.strip().splitlines()
        assert "could not download" in error and [line for line in progress if "downloading" not in line] == []
    elif preset.startswith("nemo"):  # the bundled AN4 model knows letters and digits, not read speech
        assert out.returncode == 0 and "audio 9.7 s" in out.stderr, out.stderr
    else:
        assert out.returncode == 0, out.stderr
        assert wer([wav.with_suffix(".txt").read_text()], [out.stdout]) < 0.15, out.stdout


@pytest.mark.skipif(not (SHARED / "data" / "models" / "demucs_valentini_light32.th").is_file(),
                    reason="../shared's trained Demucs is absent")
def test_users_own_demucs_from_their_folder(installed, tmp_path):
    """A `.th` dropped into $ASR_STREAM_HOME/checkpoints is found by name from any folder."""
    bin_dir, work, env = installed
    folder = Path(env["ASR_STREAM_HOME"]) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cafe.th").unlink(missing_ok=True)
    (folder / "cafe.th").symlink_to(SHARED / "data" / "models" / "demucs_valentini_light32.th")
    try:
        wav = _package_file(installed, "resources.sample_wav()")
        out = _run([bin_dir / "asr-stream", "--denoiser", "cafe", "--audio_path", wav, "--pace", "fast"], work, env)
        assert out.returncode == 0, out.stderr
        assert wer([wav.with_suffix(".txt").read_text()], [out.stdout]) < 0.2, out.stdout
    finally:
        (folder / "cafe.th").unlink()


def test_eval_with_its_default_chains_on_the_bundled_clip(installed):
    bin_dir, work, env = installed
    out = _run([bin_dir / "asr-stream", "eval", "--dataset", "sample", "--conditions", "clean", "--pace", "fast",
                "--out", work / "eval"], work, env)
    assert out.returncode == 0, out.stderr
    report = "\n".join(p.read_text() for p in (work / "eval").rglob("*.md"))
    assert "default" in report and "no-denoiser" in report, report


def test_serve_and_its_client(installed):
    """The daemon's warm-up clip and caption page come from the package (a missing warm-up clip
    fails the load); the product's own client captions the clip through it."""
    bin_dir, work, env = installed
    wav = _package_file(installed, "resources.sample_wav()")
    with Daemon("--denoiser", "none", program=[str(bin_dir / "asr-stream")], cwd=work, env=env) as daemon:
        assert "<html" in daemon.get("/").lower()
        out = _run([bin_dir / "asr-stream", "--server", daemon.ws, "--audio_path", wav], work, env)
    assert out.returncode == 0, out.stderr
    assert normalize(out.stdout) and wer([wav.with_suffix(".txt").read_text()], [out.stdout]) < 0.15, out.stdout
