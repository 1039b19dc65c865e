"""The daemon's session limit comes from a measurement of its chain on this machine (at start, or
a loadtest of the same chain), is lowered while its sessions cost more than that (in noise), and it
takes no one new while a live session is behind."""

import asyncio
import json
import time

import numpy as np
import pytest

from asr_stream.errors import UserError
from asr_stream.serve import admission
from conftest import audioeval_clips, demo_clip, load_16k, mix_at_snr, run_cli
from daemon import Daemon, run_session, session


def test_the_estimate_is_what_the_cores_hold_under_the_ceiling():
    assert admission.from_cost(0.2, ceiling=64, cores=2).sessions == 8  # 2 cores x 0.8 / 0.2
    assert admission.from_cost(0.5, ceiling=64, cores=4).sessions == 6
    assert admission.from_cost(3.0, ceiling=64, cores=2).sessions == 1  # never none
    capped = admission.from_cost(0.1, ceiling=4, cores=2)
    assert capped.sessions == 4 and "--max-sessions 4 caps it" in capped.source


def _burn_cpu(seconds: float) -> None:
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        sum(i * i for i in range(10_000))


def test_live_cost_is_cpu_per_second_of_audio_over_the_last_window():
    """Real CPU burnt in this process against audio said to have arrived: no reading on too little
    audio, the ratio over the window, and the window forgets what is older than it."""
    live = admission.LiveCost()
    live.sample([], now=0.0)
    live.add_audio(4.0)
    _burn_cpu(0.2)
    live.sample([], now=1.0)
    assert live.cost() is None  # 4 s of audio is too little to say what a session costs
    t0 = time.process_time()
    live.add_audio(8.0)
    _burn_cpu(0.6)
    live.sample([], now=2.0)
    spent = time.process_time() - t0 + 0.2
    assert live.cost() == pytest.approx(spent / 12.0, rel=0.15)
    live.add_audio(12.0)  # later, cheap audio: the window now starts after the costly part
    live.sample([], now=2.0 + admission.LiveCost.WINDOW_S + 1)
    live.sample([], now=2.0 + admission.LiveCost.WINDOW_S + 2)
    assert live.cost() < 0.05
    live.sample([], now=2.0 + 3 * admission.LiveCost.WINDOW_S)
    live.sample([], now=2.0 + 3 * admission.LiveCost.WINDOW_S + 1)
    assert live.cost() is None  # no audio in the window: no reading, the measured limit stands


def test_a_measured_limit_is_lowered_by_what_sessions_cost_now_never_raised():
    start = admission.from_cost(0.2, ceiling=64, cores=2)  # 8 sessions
    noisy = admission.lowered_by_live_cost(start, 0.5, cores=2)  # 2 cores x 0.9 / 0.5
    assert noisy.sessions == 3 and noisy.source.startswith("measured live: sessions take 0.50"), noisy
    assert admission.lowered_by_live_cost(start, 0.1, cores=2) == start  # cheaper: the limit stays
    assert admission.lowered_by_live_cost(start, None, cores=2) == start
    fixed = admission.fixed(4)  # --capacity off: --max-sessions alone
    assert admission.lowered_by_live_cost(fixed, 5.0, cores=2) == fixed


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


def _speech_in_babble() -> np.ndarray:
    """14 s of speech at 5 dB under babble made of the same talker's other sentences (shifted)."""
    clip = load_16k(demo_clip()[0])
    speech = np.concatenate([clip] + [load_16k(p) for p, _ in audioeval_clips()])
    babble = sum(np.roll(np.tile(clip, 2)[: len(speech)], k * len(clip) // 3) for k in (1, 2, 3))
    return mix_at_snr(speech, babble, 5.0)


def test_sessions_in_noise_lower_the_limit_measured_on_clean_speech():
    """The default chain measures its cost at start on the clean sample (the gate stops the
    denoiser); a live session of speech in babble runs the denoiser and costs more, and the
    daemon, which reads what its sessions cost from its own and its worker's CPU, lowers its
    limit to match."""
    audio = _speech_in_babble()
    with Daemon("--workers", "1", "--max-sessions", "64") as d:
        start = json.loads(d.get("/readyz"))
        assert start["capacity"].startswith("measured at start") and "session_cost_now" not in start, start
        result = session(d.ws, audio)
        assert result.finals, result.messages
        ready = json.loads(d.get("/readyz"))
        assert ready["session_cost_now"] > start["session_cost"], (start, ready)
        lowered = admission.lowered_by_live_cost(admission.from_cost(start["session_cost"], ceiling=64),
                                                 ready["session_cost_now"])
        assert ready["max_sessions"] == lowered.sessions, (start, ready)
        if start["max_sessions"] > 1:  # (a box that holds one session at best holds one in noise too)
            assert lowered.sessions < start["max_sessions"] and ready["capacity"].startswith("measured live"), ready
        assert d.metric("asr_stream_max_sessions") == ready["max_sessions"]
