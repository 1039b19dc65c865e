"""Clients of a real daemon: `asr-stream --server` prints and writes what the local CLI does on
the same file; a microphone through the daemon; `asr-stream loadtest --server`; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import audioeval_clips, demo_clip, load_16k, run_cli
from daemon import Daemon
from test_microphone import check_transcript, speech, transcribe_live, vmic  # noqa: F401 (fixtures)

SR = 16000


@pytest.fixture(scope="module")
def daemon():
    """The default chain (DeepFilterNet3, gated, + Whisper tiny.en), as a newcomer starts it, but
    without a session limit of its own: the load test below goes to two sessions whatever this
    box measures it holds (test_admission tests the limit)."""
    with Daemon("--capacity", "off") as d:
        yield d


@pytest.fixture(scope="module")
def continuous(tmp_path_factory):
    """23 s of speech with no pause added, the demo sentence said twice."""
    clips = [load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]
    path = tmp_path_factory.mktemp("remote") / "continuous.wav"
    sf.write(path, np.concatenate([clips[0], *clips[1:], clips[0]]), SR, subtype="PCM_16")
    return path


def _records(path) -> list[dict]:
    return [{k: r[k] for k in ("start", "end", "text", "words")}
            for r in map(json.loads, path.read_text().splitlines())]


def test_the_daemon_gives_the_local_clis_finals_for_the_same_file(daemon, continuous, tmp_path):
    local = run_cli("--audio_path", str(continuous), "--timestamps", "--output", str(tmp_path / "local.jsonl"),
                    "--stats-json", str(tmp_path / "local.json"))
    remote = run_cli("--server", daemon.ws, "--audio_path", str(continuous), "--timestamps",
                     "--output", str(tmp_path / "remote.jsonl"), "--stats-json", str(tmp_path / "remote.json"))
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr.decode()
    assert remote.stdout.decode() == local.stdout.decode() and "exhibition" in local.stdout.decode()
    assert _records(tmp_path / "remote.jsonl") == _records(tmp_path / "local.jsonl")
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("local", "remote"))
    assert b["audio_seconds"] == pytest.approx(a["audio_seconds"], abs=0.02)
    assert b["server"] == daemon.ws and b["dropped_samples"] == 0 and b["denoiser"] == a["denoiser"]
    assert remote.stderr.decode().startswith("summary: audio 23.")


def test_a_microphone_through_the_daemon(daemon, vmic, speech, tmp_path):  # noqa: F811
    out, summary = transcribe_live(vmic, speech, tmp_path, "--server", daemon.ws)
    check_transcript(out, summary, speech[1])
    assert summary["pace"] == "realtime" and summary["latency_final_s"]["n"] > 0


def test_loadtest_against_the_daemon(daemon, tmp_path):
    r = run_cli("loadtest", "--server", daemon.ws, "--streams", "1,2", "--seconds", "6", "--stagger-s", "1",
                "--json", str(tmp_path / "load.json"), timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads((tmp_path / "load.json").read_text())
    results = report["results"]
    assert [x["streams"] for x in results] == [1, 2]
    for x in results:
        assert not x["errors"] and x["words"] > 0 and x["cpu_per_stream"] > 0 and x["rss_mb"] > 100
        assert x["stage_s_per_stream"]["recognizer"] > 0  # from the daemon's own stage counters
    assert report["chain"]["recognizer"] == "whisper" and report["server"] == daemon.ws  # the daemon's, from /readyz
    assert "capacity:" in r.stdout.decode()


def test_client_errors_are_one_line(daemon, continuous):
    cases = [(("--server", daemon.ws, "--audio_path", str(continuous), "--denoiser", "none"), "server's choice"),
             (("--server", "ws://127.0.0.1:9", "--audio_path", str(continuous)), "cannot reach"),
             (("--server", "ftp://127.0.0.1:9", "--audio_path", str(continuous)), "expected ws://"),
             (("--server", daemon.ws, "--audio_path", "/nonexistent.wav"), "not found"),
             (("loadtest", "--server", daemon.ws, "--denoiser", "none"), "server's choice")]
    for args, words in cases:
        r = run_cli(*args)
        err = r.stderr.decode()
        assert r.returncode == 2 and words in err and err.count("\n") == 1, (args, err)
