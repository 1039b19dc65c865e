"""`asr-stream loadtest`: real-time sessions of real speech through shared engines, measured."""

import json

from conftest import run_cli

from asr_stream.serve.loadtest import LoadResult, find_capacity, speech_tracks


def _result(n: int, holds: bool) -> LoadResult:
    return LoadResult(n, 10.0, 0.1, 0.2, 0.5, 1.0, 10, 0.1, 0.2, 300.0, 0.0, 0, [], 1.0, 0.5, holds=holds)


def test_the_search_finds_the_largest_n_that_holds():
    ran = []

    def run(n):
        ran.append(n)
        return _result(n, holds=n <= 5)

    capacity, results = find_capacity(run, max_streams=64, log=lambda _: None)
    assert capacity == 5
    assert ran == [1, 2, 4, 8, 6, 5]  # doubling, then halving the gap
    assert capacity == max(r.streams for r in results if r.holds)
    assert find_capacity(lambda n: _result(n, False), log=lambda _: None)[0] == 0
    assert find_capacity(lambda n: _result(n, n != 3), ladder=[1, 2, 3], log=lambda _: None)[0] == 2


def test_tracks_are_continuous_speech_starting_at_different_files():
    from conftest import audioeval_clips, demo_clip

    files = [demo_clip()[0]] + [p for p, _ in audioeval_clips()]
    tracks = speech_tracks(files, 3, 20.0)
    assert [len(t) for t in tracks] == [20 * 16000] * 3
    assert not (tracks[0][:16000] == tracks[1][:16000]).all()


def test_loadtest_runs_real_time_sessions_and_reports_each_n(tmp_path):
    out = tmp_path / "load.json"
    proc = run_cli("loadtest", "--streams", "1,3", "--seconds", "8", "--stagger-s", "1", "--denoiser", "none",
                   "--asr", "nemo", "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"capacity:" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["streams"] for r in report["results"]] == [1, 3]
    for r in report["results"]:
        assert r["errors"] == [] and r["words"] > 5 and r["final_p95_s"] is not None
        assert r["audio_seconds"] == 8.0 and r["rss_mb"] > 50
    assert report["capacity"] in (0, 1, 3)
    assert report["results"][1]["batch"]["requests"] > 0
    # what `serve --capacity FILE` checks the file against
    assert report["chain"]["denoiser"] == "none" and report["chain"]["recognizer"] == "nemo" and report["cores"] >= 1
    stages = report["results"][0]["stage_s_per_stream"]
    assert stages["denoiser"] < stages["recognizer"] and 0 < stages["recognizer"] < 1.0, stages  # keeps up, live


def test_loadtest_bad_input_is_a_one_line_error():
    for args in (["--streams", "two"], ["--streams", "0"], ["--seconds", "0"], ["--audio", "/no/such.wav"],
                 ["--bogus"]):
        proc = run_cli("loadtest", *args, "--denoiser", "none", timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert err.count("\n") == 1 and "error" in err, err
