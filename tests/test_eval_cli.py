"""`asr-stream eval` end to end: a small real run (real clips, real chain, two conditions)
writes its tables and plots; Ctrl-C keeps the results so far; bad input is a one-line error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from asr_stream.evaluation.manifest import load_manifest
from conftest import REPO, audioeval_clips, demo_clip, run_cli


@pytest.fixture()
def manifest(tmp_path):
    """A NeMo-style manifest of real clips, with relative and absolute paths."""
    rows = [{"audio_filepath": str(p), "text": t, "duration": 1.0} for p, t in audioeval_clips()]
    wav, text = demo_clip()
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "lj.wav").write_bytes(wav.read_bytes())
    rows.append({"audio_filepath": "clips/lj.wav", "text": text})
    path = tmp_path / "manifest.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_manifest_paths_resolve_against_its_folder(manifest):
    utterances = load_manifest(manifest)
    assert len(utterances) == len(audioeval_clips()) + 1
    assert utterances[-1].audio == manifest.parent / "clips" / "lj.wav" and utterances[-1].text


def test_a_small_real_run_writes_tables_and_plots(manifest, tmp_path):
    out = tmp_path / "results"
    proc = run_cli("eval", "--dataset", str(manifest), "--chains", "no-denoiser", "--conditions", "clean,babble@5",
                   "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert {(c["chain"], c["condition"]) for c in cells} == {("no-denoiser", "clean"), ("no-denoiser", "babble@5dB")}
    clean = next(c for c in cells if c["condition"] == "clean")
    noisy = next(c for c in cells if c["condition"] != "clean")
    assert clean["wer"] < 0.15 and noisy["wer"] > clean["wer"]  # real speech, real recogniser
    assert clean["latency_partial"]["n"] > 20 and 0 < clean["latency_partial"]["p50"] < 3.0
    assert clean["pesq"] == pytest.approx(4.64, abs=0.05) and noisy["pesq"] < 3.0
    md = (out / "results.md").read_text()
    assert "| no-denoiser | babble@5dB |" in md and "![WER vs SNR](wer_vs_snr.png)" in md
    for png in ("wer_vs_snr.png", "latency_cdf.png", "rtf_stages.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_keeps_the_results_so_far(manifest, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "asr_stream", "eval", "--dataset", str(manifest), "--chains", "no-denoiser", "--conditions",
                                   "clean,babble@0,babble@5", "--no-quality", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    clips = out / "clips.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (clips.exists() and clips.read_text().strip()):
        time.sleep(0.2)
    assert clips.exists(), "no clip finished within 300 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    done = [json.loads(line) for line in clips.read_text().splitlines()]
    assert 1 <= len(done) < 3 * len(load_manifest(manifest))
    assert "interrupted" in err.decode() and (out / "results.md").exists()
    assert json.loads((out / "results.json").read_text())["meta"]["complete"] is False


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "/nope/manifest.jsonl"], "does not exist"),
    (["--dataset", "no-such-set"], "unknown dataset"),
    (["--conditions", "loud@x"], "condition 'loud@x'"),
    (["--chains", "no-such-preset"], "config not found"),
    (["--chains", "x:foo=1"], "unknown setting(s) foo"),
    (["--limit", "0"], "--limit must be at least 1"),
])
def test_bad_input_is_a_one_line_error(args, needle, tmp_path):
    proc = run_cli("eval", *args, "--out", str(tmp_path / "r"))
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, err
    assert needle in err[-1] and not any("Traceback" in line for line in err), err


def test_a_bad_manifest_line_names_the_line(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio_filepath": "a.wav", "text": "x"}\nnot json\n')
    proc = run_cli("eval", "--dataset", str(bad), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and f"{bad}:2" in proc.stderr.decode()
