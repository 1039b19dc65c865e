"""Clients of the daemon: `asr-stream --server URL ...` captions a file, stdin or a microphone
through a running `asr-stream serve`, printing and writing exactly what the local chain would.

    source --ring buffer--> PCM frames --WebSocket--> daemon --JSON--> captions / writer
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from asr_stream import SAMPLE_RATE
from asr_stream.serve import protocol as p
from asr_stream.errors import StageError, UserError
from asr_stream.io.ring_buffer import RingBuffer
from asr_stream.chain.one_stream import ChainClock
from asr_stream.output.stats import LatencyTracker, latency_summary

READ_S = 0.02  # one frame: 20 ms, as a live source delivers it


class RemoteError(StageError):
    """The daemon ended the session with an error."""

    def __init__(self, message: str, code: int | None):
        RuntimeError.__init__(self, f"server: {message}" + (f" (close {code})" if code else ""))
        self.stage, self.cause, self.code = "server", None, code


def stream_url(server: str, params: p.StreamParams, token: str | None = None) -> str:
    """The session URL for a server given as ws://HOST:PORT (or http://, or with a path prefix,
    as behind a proxy)."""
    parts = urlsplit(server if "://" in server else f"ws://{server}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise UserError(f"--server: expected ws://HOST:PORT, got '{server}'")
    query = params.query() | ({"token": token} if token else {})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + p.PATH, urlencode(query), ""))


def http_url(server: str, path: str) -> str:
    parts = urlsplit(server if "://" in server else f"ws://{server}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


async def connect(http: aiohttp.ClientSession, server: str, params: p.StreamParams, token: str | None = None):
    """Open a session; a refusal becomes a one-line UserError naming the server's reason."""
    url = stream_url(server, params)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        ws = await http.ws_connect(url, headers=headers, max_msg_size=0, heartbeat=20.0)
    except aiohttp.WSServerHandshakeError as exc:
        raise UserError(f"the server refused the session: HTTP {exc.status} {exc.message}") from None
    except aiohttp.ClientError as exc:
        raise UserError(f"cannot reach the server at {server}: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot reach the server at {server}: {exc.strerror or exc}") from None
    ready = await ws.receive()
    if ready.type != aiohttp.WSMsgType.TEXT:
        raise RemoteError("closed before the session was ready", ws.close_code)
    msg = json.loads(ready.data)
    if msg.get("type") == "error":
        raise RemoteError(msg.get("message", "error"), ws.close_code)
    return ws, msg


@dataclass
class RemoteRun:
    """What one remote session gave: its finals, the server's summary, and client-side latency."""

    finals: list
    summary: dict
    latency: LatencyTracker


async def stream_source(server: str, source, params: p.StreamParams, on_hypothesis, token: str | None = None,
                        max_seconds: float | None = None, stop: threading.Event | None = None) -> RemoteRun:
    """Send `source`'s audio (mono float32 at its own rate, through a ring buffer as the local
    chain reads it) and hand each hypothesis to `on_hypothesis` as it comes back."""
    stop = stop or threading.Event()
    ring = RingBuffer(int(source.sample_rate * 10))
    clock = ChainClock(keep_s=600.0)
    latency = LatencyTracker()
    finals, summary = [], {}
    block = max(1, int(source.sample_rate * READ_S))
    limit = int(max_seconds * source.sample_rate) if max_seconds else None
    async with aiohttp.ClientSession() as http:
        ws, _ = await connect(http, server, params, token)
        source.start(ring)
        sent = 0

        async def send() -> None:
            nonlocal sent
            while not stop.is_set() and (limit is None or sent < limit):
                x, arrival = await asyncio.to_thread(ring.read, block, 0.1)
                if not len(x):
                    if ring.closed and len(ring) == 0:
                        break
                    continue
                if limit is not None:
                    x = x[: limit - sent]
                sent += len(x)
                clock.mark(int(sent * SAMPLE_RATE / source.sample_rate), arrival)
                await ws.send_bytes(p.encode_pcm(x, params.encoding))
            source.stop()
            await ws.send_str(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        error = None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind in ("partial", "final"):
                    hyp = p.hypothesis_from_message(data, emitted_at=time.monotonic())
                    latency.observe(hyp, clock.arrival_of)
                    if hyp.final:
                        finals.append(hyp)
                    on_hypothesis(hyp)
                elif kind == "end":
                    summary = data["summary"]
                elif kind == "error":
                    error = data.get("message", "error")
        finally:
            if not sender.done():
                sender.cancel()
            source.stop()
            await ws.close()
        if sender.done() and not sender.cancelled() and sender.exception() is not None and error is None:
            error = f"sending failed: {sender.exception()}"
        if error is not None or not summary:
            raise RemoteError(error or "the connection closed before the session ended", ws.close_code)
        if ws.close_code == p.CLOSE_GOING_AWAY:
            summary["server_draining"] = True
        summary["dropped_samples"] += int(source.dropped * SAMPLE_RATE / source.sample_rate)
        return RemoteRun(finals, summary, latency)


def run_remote(s, server: str, captions=None, writer=None, token: str | None = None) -> tuple[dict, list]:
    """The local `pipeline.run`, through a daemon: same captions, same writer, same summary keys
    (latency as this client saw it; the server's own is kept beside it)."""
    from asr_stream.chain.pipeline import make_source

    source = make_source(s)
    live = s.mode == "microphone" or s.pace == "realtime"
    params = p.StreamParams(sample_rate=source.sample_rate, encoding="f32le", channels=1,
                            pace="live" if live else "fast")
    stop = threading.Event()
    interrupts = 0

    def on_hypothesis(hyp):
        if captions is not None:
            captions.update(hyp)
        if writer is not None and hyp.final:
            writer.write(hyp)

    async def main() -> RemoteRun:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal():
            nonlocal interrupts
            interrupts += 1
            stop.set() if interrupts == 1 else task.cancel()  # first: flush the last words; second: leave

        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
                handled.append(sig)
        try:
            return await stream_source(server, source, params, on_hypothesis, token, s.max_seconds, stop)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        raise UserError("interrupted before the server sent the last captions") from None
    finally:
        source.stop()
        if captions is not None:
            captions.close()
        if writer is not None:
            writer.close()
    summary = dict(result.summary, server=server, interrupted=interrupts > 0)
    if live:
        summary["server_latency_final_s"] = summary.get("latency_final_s")
        summary["latency_partial_s"] = latency_summary(result.latency.partial)
        summary["latency_final_s"] = latency_summary(result.latency.final)
    return summary, result.finals
