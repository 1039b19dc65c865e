"""The daemon's worker processes over real sockets: a worker killed mid-session ends only its own
sessions (close 1011, a reason that says so), the other worker's session keeps every word, the
dead worker is started again and a new session is served."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import numpy as np
from conftest import demo_clip, load_16k, normalize, wer
from daemon import Daemon, run_session, session

SR = 16000


def _readyz(d: Daemon) -> dict:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(d.http + "/readyz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def test_a_killed_worker_ends_only_its_sessions_and_is_restarted():
    path, text = demo_clip()
    clip = load_16k(path)
    gap = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([gap, clip, gap, clip, gap])  # about 21 s, live
    with Daemon("--workers", "2", "--denoiser", "none", "--no-warm-up") as d:
        workers = {w["worker"]: w["pid"] for w in _readyz(d)["workers"]}
        assert len(workers) == 2 and all(workers.values())
        killed = {}

        async def kill_the_first_sessions_worker(ws):  # the second session is open and speaking
            await asyncio.sleep(3.0)
            killed["worker"] = first_worker[0]
            os.kill(workers[first_worker[0]], signal.SIGKILL)

        first_worker: list[int] = []

        async def both():
            victim = asyncio.create_task(run_session(d.ws, audio))
            while not first_worker and not victim.done():
                first_worker.extend(w["worker"] for w in _readyz(d)["workers"] if w["sessions"])
                await asyncio.sleep(0.05)
            survivor = asyncio.create_task(run_session(d.ws, audio, on_open=kill_the_first_sessions_worker))
            return await victim, await survivor

        victim, survivor = asyncio.run(both())
        assert victim.ready["worker"] == killed["worker"]
        assert survivor.ready["worker"] != killed["worker"]  # the least-loaded worker took the second session

        # the killed worker's session: 1011 and a reason naming what happened
        assert victim.close_code == 1011, (victim.close_code, victim.messages[-1:])
        error = victim.last("error")
        assert error is not None and "worker process" in error["message"] and "died" in error["message"], error
        # the other worker's session: every word of both copies, nothing dropped
        assert survivor.close_code == 1000, survivor.messages[-1:]
        end = survivor.last("end")
        assert end["summary"]["dropped_samples"] == 0
        assert wer([f"{text} {text}"], [survivor.text]) < 0.08, survivor.text

        # the dead worker comes back (a new pid) and new sessions are served
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = {w["worker"]: w for w in _readyz(d)["workers"]}
            if state[killed["worker"]]["state"] == "ready" and state[killed["worker"]]["pid"] != workers[killed["worker"]]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"worker {killed['worker']} was not restarted:\n{d.log}")
        assert d.metric("asr_stream_worker_restarts_total") == 1
        assert d.metric("asr_stream_sessions_ended_total", reason="failed") == 1
        fresh = [session(d.ws, clip, realtime=False, query={"pace": "fast"}) for _ in range(2)]
        assert {r.ready["worker"] for r in fresh} == {0, 1}  # one session after the other: both workers serve
        for r in fresh:
            assert r.close_code == 1000 and wer([text], [r.text]) < 0.08, r.text
        assert "worker died" in d.log and "worker restarting" in d.log


def test_a_worker_that_cannot_load_stops_the_daemon_with_a_clear_error():
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "asr_stream", "serve", "--port", "0", "--workers", "2",
                           "--denoiser", "none", "--model", "/nonexistent/model", "--no-warm-up"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error" in last and "/nonexistent/model" in last and "Traceback" not in proc.stderr, proc.stderr
