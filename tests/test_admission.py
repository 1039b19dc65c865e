"""The daemon's session limit comes from a measurement of its chain on this machine (at start, or
a loadtest of the same chain), and it takes no one new while a live session is behind."""

import asyncio
import json

import pytest

from asr_stream.errors import UserError
from asr_stream.serve import admission
from conftest import demo_clip, load_16k, run_cli
from daemon import Daemon, run_session


def test_the_estimate_is_what_the_cores_hold_under_the_ceiling():
    assert admission.from_cost(0.2, ceiling=64, cores=2).sessions == 8  # 2 cores x 0.8 / 0.2
    assert admission.from_cost(0.5, ceiling=64, cores=4).sessions == 6
    assert admission.from_cost(3.0, ceiling=64, cores=2).sessions == 1  # never none
    capped = admission.from_cost(0.1, ceiling=4, cores=2)
    assert capped.sessions == 4 and "--max-sessions 4 caps it" in capped.source


def _loadtest_file(tmp_path, chain: dict, capacity: int = 3, cores: int = 2):
    path = tmp_path / "load.json"
    path.write_text(json.dumps({"capacity": capacity, "chain": chain, "cores": cores, "results": []}))
    return str(path)


def test_a_loadtest_of_another_chain_or_machine_is_refused(tmp_path):
    chain = {"denoiser": "none", "recognizer": "whisper", "model": "tiny.en", "gate": False}
    path = _loadtest_file(tmp_path, chain)
    assert admission.from_loadtest(path, chain, ceiling=8, cores=2).sessions == 3
    with pytest.raises(UserError, match="measured another chain .*denoiser 'none' there, 'deepfilternet' here"):
        admission.from_loadtest(path, {**chain, "denoiser": "deepfilternet", "gate": False}, ceiling=8, cores=2)
    with pytest.raises(UserError, match="measured on 2 cores; this daemon has 8"):
        admission.from_loadtest(path, chain, ceiling=8, cores=8)
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": []}')
    with pytest.raises(UserError, match="is not an 'asr-stream loadtest --json' file"):
        admission.parse_mode(str(bad))


def test_the_daemon_measures_its_chain_at_start():
    """Whisper without a denoiser, in the daemon's own process: one session of the sample is run
    after the warm-up and the limit is what the cores hold (at most --max-sessions)."""
    with Daemon("--denoiser", "none", "--workers", "0", "--max-sessions", "64") as d:
        ready = json.loads(d.get("/readyz"))
        assert ready["capacity"].startswith("measured at start: one session takes"), ready
        # the limit is what the measured cost and this machine's cores give, under the ceiling
        assert ready["session_cost"] > 0
        assert ready["max_sessions"] == admission.from_cost(ready["session_cost"], ceiling=64).sessions, ready
        assert d.metric("asr_stream_max_sessions") == ready["max_sessions"]
        assert "taking up to" in d.log


def test_the_daemon_takes_what_a_loadtest_of_its_chain_held(tmp_path):
    """A real loadtest (one real-time stream of speech) writes the file; a daemon of the same chain
    takes what it held; one of another chain stops with one line and exit code 2."""
    out = tmp_path / "load.json"
    r = run_cli("loadtest", "--denoiser", "none", "--streams", "1", "--seconds", "4", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    measured = json.loads(out.read_text())
    assert measured["chain"]["denoiser"] == "none" and measured["chain"]["recognizer"] == "whisper"
    held = measured["capacity"]
    with Daemon("--denoiser", "none", "--no-warm-up", "--capacity", str(out)) as d:
        ready = json.loads(d.get("/readyz"))
        assert ready["max_sessions"] == max(1, held) and ready["capacity"].startswith("loadtest load.json"), ready
    r = run_cli("serve", "--port", "0", "--no-warm-up", "--denoiser", "none", "--model", "base",
                "--capacity", str(out), timeout=300)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and "measured another chain" in err[-1] and "Traceback" not in r.stderr.decode(), err


def test_capacity_flag_errors_are_one_line():
    r = run_cli("serve", "--port", "0", "--capacity", "/nonexistent/load.json")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and "--capacity" in err, err


def test_a_live_session_behind_its_audio_keeps_new_sessions_out():
    """A denoiser twice as slow as real time (a user's model too heavy for the box): its live
    session falls behind, /readyz says so and a new handshake gets 503; once it has ended the
    daemon takes sessions again."""
    audio = load_16k(demo_clip()[0])[: 16000 * 6]
    with Daemon("--denoiser", "failing_stages:slow_denoiser", "--no-gate", "--workers", "0", "--no-warm-up",
                "--max-sessions", "4", "--max-backlog-s", "8") as d:

        async def main():
            seen, polls = {}, []

            async def poll():
                for _ in range(300):
                    await asyncio.sleep(0.1)
                    body = json.loads(await asyncio.to_thread(d.get, "/readyz"))
                    if body["status"] == "behind":
                        seen["readyz"] = body
                        seen["refused"] = await run_session(d.ws, None)
                        return

            async def on_open(ws):
                polls.append(asyncio.get_running_loop().create_task(poll()))

            slow = await run_session(d.ws, audio, on_open=on_open)
            await asyncio.gather(*polls)
            return seen, slow

        seen, slow = asyncio.run(main())
        assert seen.get("readyz", {}).get("sessions") == 1, seen
        assert seen["refused"].status == 503
        assert slow.finals, slow.messages  # the slow session itself is served to its end
        assert d.metric("asr_stream_sessions_rejected_total", reason="capacity") >= 1
        assert d.http_status("/readyz") == 200  # caught up (ended): taking sessions again
