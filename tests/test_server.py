"""`asr-stream serve` over real sockets on 127.0.0.1: real speech through the real engines,
sessions side by side, every refusal, clients that vanish, a failing session, the drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, audioeval_clips, demo_clip, load_16k, normalize, wer
from daemon import Daemon, pcm, run_session, session

SR = 16000


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, str]]:
    by_name = {p.stem: (load_16k(p), t) for p, t in audioeval_clips()}
    path, text = demo_clip()
    return {"demo": (load_16k(path), text), "fox": by_name["quick_brown_fox"], "hello": by_name["hello_world"]}


@pytest.fixture(scope="module")
def plain():
    """The Whisper chain with no denoiser, three sessions at most."""
    with Daemon("--denoiser", "none", "--no-warm-up", "--max-sessions", "3") as d:
        yield d


@pytest.fixture(scope="module")
def guarded():
    """Token (from the environment), an allowed origin, small frames, short sessions, one slot."""
    with Daemon("--denoiser", "none", "--no-warm-up", "--max-sessions", "1", "--max-session-seconds", "4",
                "--max-frame-bytes", "65536", "--allow-origin", "https://captions.example",
                env={"ASR_STREAM_TOKEN": "s3cret"}) as d:
        yield d


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    import julius
    import torch

    return julius.resample_frac(torch.from_numpy(x), SR, rate).numpy()


# -- sessions ---------------------------------------------------------------------------
def test_concurrent_sessions_each_get_their_own_settings_and_text(plain, clips):
    demo, demo_text = clips["demo"]
    fox, fox_text = clips["fox"]
    hello, hello_text = clips["hello"]

    async def three():
        return await asyncio.gather(
            run_session(plain.ws, demo, realtime=True),  # s16le, 16 kHz, live, partials
            run_session(plain.ws, _resample(np.concatenate([fox, _silence(0.5)]), 44100), rate=44100,
                        encoding="f32le", channels=2, realtime=False, query={"pace": "fast", "partials": "false"}),
            run_session(plain.ws, _resample(np.concatenate([hello, _silence(1.0)]), 8000), rate=8000, realtime=True))

    a, b, c = asyncio.run(three())
    for r in (a, b, c):
        assert r.close_code == 1000 and r.last("end") is not None, r.messages[-3:]
    assert (a.ready["sample_rate"], a.ready["encoding"], a.ready["channels"], a.ready["pace"]) == (16000, "s16le", 1, "live")
    assert (b.ready["sample_rate"], b.ready["encoding"], b.ready["channels"], b.ready["pace"]) == (44100, "f32le", 2, "fast")
    assert b.ready["partials"] is False and not b.partials and a.partials
    assert c.ready["sample_rate"] == 8000
    assert len({a.ready["session"], b.ready["session"], c.ready["session"]}) == 3
    assert wer([demo_text], [a.text]) < 0.25, a.text
    assert wer([fox_text], [b.text]) < 0.25, b.text
    assert "hello world" in normalize(c.text), c.text
    assert "fox" not in normalize(a.text + c.text) and "printing" not in normalize(b.text + c.text)
    # the protocol's shapes: one final per utterance, word times on the session's own timeline
    for r, seconds in ((a, len(demo) / SR), (b, len(fox) / SR + 0.5)):
        utterances = [m["utterance"] for m in r.finals]
        assert utterances == sorted(set(utterances))
        for m in r.finals:
            assert m["stable"] == len(m["words"]) and m["text"]
            assert all(0 <= w["start"] <= w["end"] <= seconds + 0.1 for w in m["words"])
        summary = r.last("end")["summary"]
        assert summary["dropped_samples"] == 0 and summary["audio_seconds"] == pytest.approx(seconds, abs=0.05)
    assert a.last("end")["summary"]["latency_final_s"]["n"] > 0


def test_bad_parameters_are_refused_at_the_handshake(plain):
    for query in ({"encoding": "mp3"}, {"sample_rate": "fast"}, {"sample_rate": "100"}, {"channels": "0"},
                  {"pace": "slow"}, {"partials": "maybe"}, {"model": "/etc/passwd"}, {"denoiser": "demucs"}):
        r = session(plain.ws, None, query=query)
        assert r.status == 400, query
    assert plain.http_status("/v1/stream") == 400  # not a WebSocket upgrade
    assert plain.metric("asr_stream_sessions_rejected_total", reason="bad_request") >= 9
    assert plain.http_status("/readyz") == 200


def test_capacity_is_refused_with_503_and_freed_when_sessions_end(plain):
    async def run():
        release = asyncio.Event()

        async def hold(ws):  # an open session that sends nothing until released
            await release.wait()

        holders = [asyncio.create_task(run_session(plain.ws, _silence(0.2), realtime=False, on_open=hold))
                   for _ in range(3)]
        while plain.metric("asr_stream_sessions_active") < 3:
            await asyncio.sleep(0.05)
        full_ready = await asyncio.to_thread(plain.http_status, "/readyz")
        refused = await run_session(plain.ws, None)
        release.set()
        held = await asyncio.gather(*holders)
        return full_ready, refused, held

    full_ready, refused, held = asyncio.run(run())
    assert full_ready == 503 and refused.status == 503
    assert all(h.close_code == 1000 for h in held)
    assert plain.metric("asr_stream_sessions_rejected_total", reason="capacity") >= 1
    deadline = time.monotonic() + 10
    while plain.http_status("/readyz") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plain.http_status("/readyz") == 200


def test_protocol_breaches_get_an_error_and_their_close_code(plain, clips):
    async def send_then(payload, kind):
        async def breach(ws):
            try:
                await (ws.send_bytes(payload) if kind == "bytes" else ws.send_str(payload))
            except ConnectionError:  # the server may close before the whole frame is sent
                pass

        return await run_session(plain.ws, None, on_open=breach)

    big = asyncio.run(send_then(b"\0" * (2 << 20), "bytes"))  # over --max-frame-bytes (1 MiB)
    assert big.close_code == 1009 and "over the limit" in big.last("error")["message"]
    # past four times the limit the server stops reading at once: 1009, or a reset while the
    # client is still writing (1006); either way that session ends and the server serves on
    huge = asyncio.run(send_then(b"\0" * (5 << 20), "bytes"))
    assert huge.close_code in (1006, 1009) and not huge.finals
    bad = asyncio.run(send_then('{"type": "start"}', "text"))
    assert bad.close_code == 1008 and "end" in bad.last("error")["message"]
    notjson = asyncio.run(send_then("hello", "text"))
    assert notjson.close_code == 1008
    demo, _ = clips["demo"]
    fast = session(plain.ws, np.tile(demo, 2), realtime=False)  # 19 s at once on a live session
    assert fast.close_code == 1008 and "pace=fast" in fast.last("error")["message"]
    assert plain.http_status("/readyz") == 200


def test_token_origin_frame_size_and_time_limit(guarded, clips):
    demo, _ = clips["demo"]
    hello, _ = clips["hello"]
    one_second = hello
    assert session(guarded.ws, one_second, realtime=False).status == 401
    assert session(guarded.ws, one_second, realtime=False, query={"token": "wrong"}).status == 401
    assert session(guarded.ws, one_second, realtime=False, headers={"Authorization": "Bearer s3cre"}).status == 401
    ok_header = session(guarded.ws, np.concatenate([hello, _silence(0.6)]), realtime=False,
                        headers={"Authorization": "Bearer s3cret"}, query={"pace": "fast"})
    assert ok_header.close_code == 1000 and "hello world" in normalize(ok_header.text)
    ok_query = session(guarded.ws, one_second, realtime=False, query={"token": "s3cret", "pace": "fast"})
    assert ok_query.close_code == 1000
    auth = {"Authorization": "Bearer s3cret"}
    evil = session(guarded.ws, None, headers={**auth, "Origin": "https://evil.example"})
    assert evil.status == 403
    allowed = session(guarded.ws, one_second, realtime=False, query={"pace": "fast"},
                      headers={**auth, "Origin": "https://captions.example"})
    assert allowed.close_code == 1000
    own = session(guarded.ws, one_second, realtime=False, query={"pace": "fast"},
                  headers={**auth, "Origin": f"http://127.0.0.1:{guarded.port}"})
    assert own.close_code == 1000
    big = session(guarded.ws, _silence(4.0), realtime=False, frame_s=4.0, headers=auth, query={"pace": "fast"})
    assert big.close_code == 1009  # 128 KB frame over --max-frame-bytes 65536
    # a live session past --max-session-seconds 4: its finals so far, then the error and 1008
    limited = session(guarded.ws, demo, realtime=True, headers=auth)
    assert limited.close_code == 1008 and "time limit" in limited.last("error")["message"]
    assert "printing" in normalize(limited.text)
    assert guarded.metric("asr_stream_sessions_rejected_total", reason="unauthorized") == 3
    assert guarded.metric("asr_stream_sessions_rejected_total", reason="origin") == 1
    assert guarded.metric("asr_stream_final_latency_seconds_count") > 0
    assert guarded.metric("asr_stream_audio_seconds_total") > 4
    assert guarded.metric("asr_stream_stage_busy_seconds_total", stage="recognizer") > 0
    assert guarded.http_status("/readyz") == 200


def test_a_vanished_client_frees_its_slot(guarded, tmp_path, clips):
    import soundfile as sf

    demo, _ = clips["demo"]
    wav = tmp_path / "long.wav"
    sf.write(wav, np.tile(demo, 3), SR)
    env = dict(PYTHONPATH=str(REPO), ASR_STREAM_TOKEN="s3cret")
    client = subprocess.Popen([sys.executable, "-m", "asr_stream", "--server", guarded.ws, "--audio_path", str(wav),
                               "--pace", "realtime"], cwd=REPO, env=dict(os.environ, **env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while guarded.metric("asr_stream_sessions_active") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        assert guarded.http_status("/readyz") == 503  # its only slot is taken
    finally:
        client.kill()  # gone mid-stream, without a word
        client.wait(10)
    deadline = time.monotonic() + 15
    while guarded.http_status("/readyz") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guarded.http_status("/readyz") == 200
    assert guarded.metric("asr_stream_sessions_ended_total", reason="gone") >= 1
    after = session(guarded.ws, clips["hello"][0], realtime=False, query={"pace": "fast"},
                    headers={"Authorization": "Bearer s3cret"})
    assert after.close_code == 1000


def test_a_failing_stage_ends_its_own_session_only(clips):
    from failing_stages import POISON

    demo, demo_text = clips["demo"]
    poisoned = np.concatenate([clips["fox"][0], np.full(SR // 2, POISON, np.float32), clips["fox"][0]])
    with Daemon("--denoiser", "failing_stages:poisoned_denoiser", "--no-gate", "--no-warm-up") as d:
        async def both():
            return await asyncio.gather(run_session(d.ws, demo, realtime=True),
                                        run_session(d.ws, poisoned, realtime=True))

        healthy, broken = asyncio.run(both())
        assert broken.close_code == 1011 and "poisoned" in broken.last("error")["message"]
        assert healthy.close_code == 1000 and wer([demo_text], [healthy.text]) < 0.25
        assert d.http_status("/readyz") == 200
        assert d.metric("asr_stream_sessions_ended_total", reason="failed") == 1


def test_sigterm_drains_in_flight_sessions_then_exits_0(clips):
    demo, _ = clips["demo"]
    speech = np.tile(demo, 2)  # 19 s of speech: the drain comes in its middle
    with Daemon("--denoiser", "none", "--no-warm-up", "--drain-seconds", "15", "--log-format", "json") as d:
        async def run():
            async def drain_soon(ws):
                async def later():
                    await asyncio.sleep(5.0)
                    d.signal(signal.SIGTERM)
                asyncio.get_running_loop().create_task(later())

            live = asyncio.create_task(run_session(d.ws, speech, realtime=True, on_open=drain_soon))
            while not any('"draining"' in line for line in d.lines):
                await asyncio.sleep(0.05)
                assert not live.done(), "the session ended before the drain"
            ready = await asyncio.to_thread(d.http_status, "/readyz")
            refused = await run_session(d.ws, None)
            return await live, ready, refused

        t0 = time.monotonic()
        live, ready, refused = asyncio.run(run())
        assert ready == 503 and refused.status == 503
        assert live.close_code == 1001
        end = live.last("end")
        assert end is not None and end["reason"] == "draining"
        assert "printing" in normalize(live.text)  # the finals of what it had sent
        assert 4.0 < end["summary"]["audio_seconds"] < 12.0
        assert d.wait(30) == 0 and time.monotonic() - t0 < 40
        events = [json.loads(line)["event"] for line in d.lines if line.startswith("{")]
        assert len(events) == len(d.lines)  # every log line is JSON
        for e in ("listening", "ready", "session_open", "draining", "session_end", "stopped"):
            assert e in events


def test_serve_bad_input_is_a_one_line_error():
    from conftest import run_cli

    r = run_cli("serve", "--port", "0", "--max-sessions", "0")
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and "--max-sessions" in r.stderr.decode()
    r = run_cli("serve", "--port", "0", "--denoiser", "none", "--no-warm-up", "--model", "/nonexistent/model")
    assert r.returncode == 2 and "error" in r.stderr.decode().splitlines()[-1]
    assert "Traceback" not in r.stderr.decode()
    with Daemon("--denoiser", "none", "--no-warm-up", wait_ready=False) as d:
        taken = run_cli("serve", "--port", str(d.port), "--denoiser", "none")
        assert taken.returncode == 2 and "cannot listen" in taken.stderr.decode()


def test_the_page_and_its_scripts_are_served(plain):
    page = plain.get("/")
    assert "static/captions.js" in page and 'id="start"' in page
    assert "registerProcessor" in plain.get("/static/capture-worklet.js")
    assert plain.http_status("/static/../server.py") == 404
    assert plain.http_status("/static/index.html") == 404
    assert json.loads(plain.get("/healthz"))["status"] == "alive"




def test_systemd_hears_ready_once_the_engines_are_loaded_and_stopping_on_drain(tmp_path):
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(120)
        with Daemon("--denoiser", "none", "--no-warm-up", env={"NOTIFY_SOCKET": address}, wait_ready=False) as d:
            assert sock.recv(256) == b"READY=1"
            assert d.http_status("/readyz") == 200
            d.signal(signal.SIGTERM)
            assert sock.recv(256) == b"STOPPING=1"
            assert d.wait(30) == 0


def test_a_file_session_in_frames_longer_than_the_backlog_loses_nothing(plain, clips):
    demo, demo_text = clips["demo"]
    audio = np.concatenate([demo, _silence(0.5)])
    r = session(plain.ws, audio, realtime=False, frame_s=10.0, encoding="f32le", query={"pace": "fast"})  # 640 KB frames
    assert r.close_code == 1000 and r.last("end")["summary"]["dropped_samples"] == 0
    assert r.last("end")["summary"]["audio_seconds"] == pytest.approx(len(audio) / SR, abs=0.02)
    assert wer([demo_text], [r.text]) < 0.25


def test_sessions_opened_and_closed_leave_no_python_allocations_behind(clips):
    """A daemon runs for weeks: sessions that end, that send no partials and whose client
    vanishes mid-stream must leave nothing behind. Python allocations retained after 45 more
    sessions (tracemalloc, through the daemon's own gauge) stay within 1 MB: one leaked
    session's audio and state alone is more than 40 KB."""
    import aiohttp

    hello = clips["hello"][0]
    url_query = "sample_rate=16000&encoding=s16le&channels=1&pace=fast"

    async def vanish(url):  # half the audio, then the connection drops without a close frame
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{url}/v1/stream?{url_query}")
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            await ws.send_bytes(pcm(hello[: len(hello) // 2]))
            ws._response.connection.transport.abort()

    async def rounds(url, n):
        for _ in range(n):
            ended = await asyncio.gather(run_session(url, hello, realtime=False, query={"pace": "fast"}),
                                         run_session(url, hello, realtime=False,
                                                     query={"pace": "fast", "partials": "false"}),
                                         vanish(url))
            assert [r.close_code for r in ended[:2]] == [1000, 1000]
            assert all(normalize(r.text) for r in ended[:2])

    def settled(d):
        deadline = time.monotonic() + 30
        while d.metric("asr_stream_sessions_active") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.metric("asr_stream_sessions_active") == 0
        return d.metric("asr_stream_python_traced_bytes")

    with Daemon("--denoiser", "none", "--no-warm-up", "--max-sessions", "4", env={"PYTHONTRACEMALLOC": "1"}) as d:
        asyncio.run(rounds(d.ws, 5))  # first use: caches, pools, the interpreter's own arenas
        base = settled(d)
        asyncio.run(rounds(d.ws, 15))
        grown = settled(d) - base
        assert base > 0
        assert d.metric("asr_stream_sessions_ended_total", reason="gone") >= 20
    assert grown < 1_000_000, f"{grown / 1e3:.0f} KB retained over 45 sessions"
