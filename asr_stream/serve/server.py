"""`asr-stream serve`: the captioning daemon. Sessions over one set of shared engines, through
the multi-stream scheduler, on WebSockets (aiohttp); HTTP probes, Prometheus metrics and a
caption page for the browser.

    client --PCM frames--> Connection --16 kHz--> Session (scheduler workers)
    Session --hypotheses (worker thread)--> Connection's outbox --JSON--> client

The OpenAI-style file transcription endpoint is in `transcriptions.py`. The protocol is in `protocol.py`. Everything a client sends is checked before it reaches the
chain; a client can end, break or abandon only its own session.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import signal
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSMsgType, web

from asr_stream import SAMPLE_RATE, __version__
from asr_stream.serve import admission, protocol as p
from asr_stream.errors import UserError
from asr_stream.io.framer import sanitize
from asr_stream.serve.prometheus import CONTENT_TYPE_LATEST, ServerMetrics, refusal_reason
from asr_stream.io.resampler import StreamingResampler
from asr_stream.runtime.memory import release_free_memory
from asr_stream.runtime.threads import usable_cores
from asr_stream.serve.openai_api import PATH as TRANSCRIPTIONS_PATH, TranscriptionEndpoint

log = logging.getLogger("asr_stream.serve.server")

RATE_CAP = 1.25  # a live session may send audio at most this much faster than real time...
RATE_SLACK_S = 5.0  # ...plus this much ahead (network jitter bunches frames)
MAX_OUTBOX_FINALS = 512  # finals a client has not read yet; past it, it is not reading: closed
END_WAIT_S = 120.0  # after the last audio, how long a session may take to give its finals
SEND_TIMEOUT_S = 30.0  # a message the client's socket takes no more of in this long: the client is gone


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_sessions: int = 8
    max_session_s: float | None = None  # wall-clock limit per session
    max_frame_bytes: int = 1 << 20
    max_upload_bytes: int = 25_000_000  # POST /v1/audio/transcriptions
    wyoming: str | None = None  # tcp://HOST:PORT: also serve the Wyoming STT protocol there
    token: str | None = None
    allow_origins: tuple[str, ...] = ()  # besides the server's own origin; "*" allows any
    drain_s: float = 20.0  # SIGTERM: how long in-flight sessions get to finish
    workers: int | None = None  # worker processes holding the engines (default: one per core; 0: in this process)
    stream_threads: int = 2  # scheduler threads per worker (in this process: per core)
    max_backlog_s: float = 4.0
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    warm_up: bool = True
    capacity: str = "auto"  # auto | off | a loadtest JSON file (admission.py)


def _check_config(c: ServerConfig) -> None:
    if c.max_sessions < 1:
        raise UserError(f"--max-sessions must be at least 1, got {c.max_sessions}")
    if c.max_session_s is not None and c.max_session_s <= 0:
        raise UserError(f"--max-session-seconds must be positive, got {c.max_session_s}")
    if c.max_frame_bytes < 1024:
        raise UserError(f"--max-frame-bytes must be at least 1024, got {c.max_frame_bytes}")
    if c.max_upload_bytes < 1000:
        raise UserError(f"--max-upload-mb must be at least 0.001, got {c.max_upload_bytes / 1e6:g}")
    if c.drain_s < 0 or c.max_backlog_s <= 0:
        raise UserError("--drain-seconds must not be negative and --max-backlog-s must be positive")
    if not 0 <= c.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {c.port}")
    if c.wyoming is not None:
        from asr_stream.serve.wyoming_stt import parse_uri

        parse_uri(c.wyoming)
    if c.token is not None and not c.token:
        raise UserError("--token must not be empty")
    admission.parse_mode(c.capacity)


class CaptionServer:
    """The daemon: engines, scheduler, sessions, probes and metrics behind one aiohttp app."""

    def __init__(self, settings, config: ServerConfig):
        _check_config(config)
        self.settings = settings
        self.config = config
        self.metrics = ServerMetrics()
        self.capacity = admission.fixed(config.max_sessions)  # until the engines are loaded and measured
        self.limit = self.capacity  # the capacity, lowered while sessions cost more than measured
        self.live_cost = admission.LiveCost()
        self._metering: asyncio.Task | None = None
        self.metrics.max_sessions.set(config.max_sessions)
        self.chain: dict[str, str] | None = None  # the loaded chain's stage names
        self.scheduler = None  # a MultiStreamScheduler in this process, or a WorkerPool
        self.engines_here = False  # the engines in this process (--workers 0)
        self.load_error: BaseException | None = None
        self.draining = False
        self.connections: dict[str, Connection] = {}
        # streams are made on one thread of their own: building one can take a while (DeepFilterNet
        # loads its model per stream) and the event loop must not wait; one long-lived thread keeps
        # the native libraries' allocations in one place (threads coming and going grew RSS)
        self.opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-opener")
        self._ids = 0
        self.transcriptions = TranscriptionEndpoint(self, config.max_upload_bytes)
        self.app = web.Application()
        self.app.add_routes([web.get("/", self.page), web.get("/healthz", self.healthz),
                             web.get("/readyz", self.readyz), web.get("/metrics", self.metrics_page),
                             web.get(p.PATH, self.stream), web.get("/static/{name}", self.static),
                             web.post(TRANSCRIPTIONS_PATH, self.transcriptions.handle)])

    # -- lifecycle ----------------------------------------------------------------------
    async def load(self) -> None:
        """Load the engines (in a thread: the probes answer meanwhile): in worker processes, or
        with `workers=0` in this one, under a scheduler."""
        t0 = time.monotonic()
        c = self.config
        workers = default_workers() if c.workers is None else c.workers
        measure = c.capacity == "auto" and c.warm_up
        cost = None
        if workers:
            from asr_stream.serve.worker_pool import WorkerPool

            pool = await asyncio.to_thread(WorkerPool, self.settings, workers, c.stream_threads, c.max_backlog_s,
                                           c.warm_up, measure)
            self.scheduler = pool
            await asyncio.to_thread(pool.wait_ready)
            self.metrics.watch_workers(pool)
            denoiser, recognizer = pool.names
            cost = pool.session_cost
        else:
            from asr_stream.chain.engines import load_engines
            from asr_stream.chain.many_streams import MultiStreamScheduler, session_cost, warm_up_on_sample

            engines = await asyncio.to_thread(load_engines, self.settings)
            if c.warm_up:
                await asyncio.to_thread(warm_up_on_sample, engines)
            if measure:
                cost = await asyncio.to_thread(session_cost, engines)
            self.scheduler = MultiStreamScheduler(engines, workers=c.stream_threads * usable_cores(),
                                                  max_backlog_s=c.max_backlog_s)
            self.engines_here = True
            denoiser, recognizer = engines.denoiser.name, engines.recognizer.name
        try:
            self.capacity = self._measured_capacity(denoiser, recognizer, cost)
        except UserError:
            self.scheduler.close()
            raise
        self.limit = self.capacity
        self.metrics.max_sessions.set(self.capacity.sessions)
        self._metering = asyncio.create_task(self._meter_live_cost())
        log.info(f"taking up to {self.capacity.sessions} session{'s' if self.capacity.sessions != 1 else ''} "
                 f"({self.capacity.source})", extra={"event": "capacity", "sessions": self.capacity.sessions})
        self.chain = {"denoiser": denoiser, "recognizer": recognizer}
        self.metrics.ready.set(0 if self.draining else 1)
        log.info("engines loaded", extra={"event": "ready", **self.chain, "workers": workers,
                                          "load_seconds": round(time.monotonic() - t0, 2)})

    def _measured_capacity(self, denoiser: str, recognizer: str, cost: float | None) -> admission.Capacity:
        c = self.config
        if c.capacity == "off":
            return admission.fixed(c.max_sessions)
        if c.capacity == "auto":
            if cost is None:  # --no-warm-up: nothing was run to measure
                return admission.Capacity(c.max_sessions, "--max-sessions (not measured: --no-warm-up)")
            return admission.from_cost(cost, c.max_sessions)
        return admission.from_loadtest(c.capacity, admission.describe_chain(self.settings, denoiser, recognizer),
                                       c.max_sessions)

    async def _meter_live_cost(self, every_s: float = 1.0) -> None:
        """Read what sessions cost now and lower the limit while they cost more than measured."""
        while True:
            try:
                self.live_cost.sample(self.scheduler.pids() if hasattr(self.scheduler, "pids") else [])
                limit = admission.lowered_by_live_cost(self.capacity, self.live_cost.cost())
            except Exception as exc:  # a reading that fails leaves the measured limit, and says so
                log.warning(f"cannot read what sessions cost: {exc}", extra={"event": "capacity_reading"})
                limit = self.capacity
            if limit.sessions != self.limit.sessions:
                log.info(f"taking up to {limit.sessions} session{'s' if limit.sessions != 1 else ''} "
                         f"({limit.source})", extra={"event": "capacity", "sessions": limit.sessions})
                self.metrics.max_sessions.set(limit.sessions)
            self.limit = limit
            await asyncio.sleep(every_s)

    def audio_in(self, seconds: float) -> None:
        """Count audio received by any protocol (metrics, and what sessions cost per second of it)."""
        self.metrics.audio_seconds.inc(seconds)
        self.live_cost.add_audio(seconds)

    @property
    def ready(self) -> bool:
        return self.chain is not None and not self.draining

    async def drain(self) -> None:
        """Stop taking sessions; in-flight ones get their last finals and close 1001, within
        `drain_s`; the rest are closed then."""
        self.draining = True
        self.metrics.ready.set(0)
        log.info("draining", extra={"event": "draining", "sessions": len(self.connections)})
        conns = list(self.connections.values())
        for c in conns:
            c.stop_reading("draining")
        tasks = [c.task for c in conns if c.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.config.drain_s)
            for c in conns:
                if c.task in pending:
                    await c.abort(p.CLOSE_GOING_AWAY, "server shutting down")
            if pending:
                await asyncio.wait(pending, timeout=2.0)

    def close(self) -> None:
        if self._metering is not None:
            self._metering.cancel()
        if self.scheduler is not None:
            self.scheduler.close()
        self.opener.shutdown(wait=False)

    # -- HTTP -----------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        state = self._state()
        body = {"status": state, "sessions": len(self.connections), "max_sessions": self.limit.sessions,
                "capacity": self.limit.source, "instance": self.config.instance}
        if self.capacity.session_cost is not None:
            body["session_cost"] = self.capacity.session_cost  # CPU s per audio s, measured at start
        live = self.live_cost.cost()
        if live is not None:
            body["session_cost_now"] = round(live, 3)  # over the last LiveCost.WINDOW_S
        if self.chain is not None:  # what the daemon runs (the caption page shows it)
            body["chain"] = admission.describe_chain(self.settings, self.chain["denoiser"], self.chain["recognizer"])
        if hasattr(self.scheduler, "describe"):
            body["workers"] = self.scheduler.describe()
        return web.json_response(body, status=200 if state == "ready" else 503)

    def _state(self) -> str:
        if self.load_error is not None:
            return "failed"
        if self.draining:
            return "draining"
        if self.chain is None:
            return "loading"
        if not getattr(self.scheduler, "available", True):
            return "restarting"  # every worker process is starting again
        if len(self.connections) >= self.limit.sessions:
            return "full"
        if admission.behind([c.session.backlog_s for c in list(self.connections.values())  # uploads are files
                             if getattr(c, "live", False) and getattr(c, "session", None) is not None]):
            return "behind"  # a live session is late with its captions: the box is full for now
        return "ready"

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.sessions_active.set(len(self.connections))
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=_web_file("index.html"), content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ("capture-worklet.js", "captions.js"):
            raise web.HTTPNotFound()
        return web.Response(text=_web_file(name), content_type="application/javascript")

    # -- the WebSocket --------------------------------------------------------------------
    def _refuse(self, status: int, reason: str, message: str) -> web.Response:
        self.metrics.sessions_rejected.labels(reason).inc()
        log.info("refused", extra={"event": "refused", "reason": reason, "status": status, "detail": message})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return web.json_response({"type": "error", "message": message}, status=status, headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if token is None:
            return True
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: nothing to forge
            return True
        allowed = self.config.allow_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        return urlsplit(origin).netloc == request.host  # the page this server serves

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._refuse(401, "unauthorized", "missing or wrong token (Authorization: Bearer or ?token=)")
        if not self._origin_allowed(request):
            return self._refuse(403, "origin", f"origin {request.headers.get('Origin')} is not allowed")
        try:
            params = p.StreamParams.from_query(request.query)
        except p.ProtocolError as exc:
            return self._refuse(400, "bad_request", str(exc))
        ws = web.WebSocketResponse(max_msg_size=4 * self.config.max_frame_bytes, heartbeat=20.0)
        if not ws.can_prepare(request).ok:
            return self._refuse(400, "bad_request", f"{p.PATH} takes a WebSocket upgrade")
        state = self._state()
        if state != "ready":
            return self._refuse(503, refusal_reason(state), f"not taking sessions: {state}" + {
                "full": f" ({len(self.connections)} sessions open: {self.limit.source})",
                "behind": f" (a live session is more than {admission.BEHIND_S:g} s behind its audio)"}.get(state, ""))
        conn = self.admit(lambda session_id: Connection(self, ws, params, session_id, request.remote))
        conn.task = asyncio.current_task()
        try:
            await ws.prepare(request)
            await conn.run()
        finally:
            self.release(conn)
        return ws

    def admit(self, make):
        """Take a session slot (before any await, so the limit holds) for `make(session_id)`: a
        WebSocket `Connection`, an upload, a Wyoming transcription; anything the drain can ask to
        `stop_reading` and `abort`, with the `task` it waits for."""
        self._ids += 1
        holder = make(f"{self.config.instance}/{self._ids}")
        self.connections[holder.id] = holder
        self.metrics.sessions_total.inc()
        self.metrics.sessions_active.set(len(self.connections))
        return holder

    def release(self, conn: "Connection") -> None:
        self.connections.pop(conn.id, None)
        self.metrics.sessions_active.set(len(self.connections))
        if self.engines_here:  # (worker processes give back their own)
            self.opener.submit(release_free_memory)  # off the event loop: trimming takes a few ms

    async def open_file_session(self) -> tuple[object, asyncio.Queue]:
        """A session at file pace (it waits for room, never drops audio) whose finals, and None at
        its end, arrive on the returned queue; opened off the event loop (building a stream can
        take a while)."""
        loop = asyncio.get_running_loop()
        finals: asyncio.Queue = asyncio.Queue()

        def on_hypothesis(session, hyp) -> None:  # on a scheduler worker
            if hyp is None or hyp.final:
                loop.call_soon_threadsafe(finals.put_nowait, hyp)

        session = await loop.run_in_executor(
            self.opener, functools.partial(self.scheduler.open_stream, on_hypothesis=on_hypothesis, live=False))
        return session, finals


class Connection:
    """One client's session: reads its frames into a scheduler session and sends back what the
    session recognises."""

    def __init__(self, server: CaptionServer, ws: web.WebSocketResponse, params: p.StreamParams, session_id: str,
                 peer: str | None = None):
        self.server = server
        self.peer = peer
        self.ws = ws
        self.params = params
        self.id = session_id
        self.live = params.pace == "live"
        self.decoder = p.PcmDecoder(params)
        self.resampler = StreamingResampler(params.sample_rate, SAMPLE_RATE)
        self.session = None
        self.task: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None
        self._stop_reason: str | None = None
        self._outbox: deque = deque()
        self._has_mail = asyncio.Event()
        self._finals_queued = 0
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self.started = time.monotonic()
        self.received_s = 0.0  # client-rate seconds of audio received
        self.sanitized = 0
        self.discarded = 0  # samples pending when the client left (never recognised)
        self._busy_reported = {"denoiser": 0.0, "recognizer": 0.0}

    # -- from the scheduler's workers -----------------------------------------------------
    def _on_hypothesis(self, session, hyp) -> None:
        self._loop.call_soon_threadsafe(self._post, hyp)

    def _post(self, hyp) -> None:
        if hyp is not None and not hyp.final:
            if not self.params.partials:
                return
            if self._outbox and self._outbox[-1] is not None and not self._outbox[-1].final \
                    and self._outbox[-1].utterance == hyp.utterance:
                self._outbox[-1] = hyp  # the client has not read the last partial yet: the newer one replaces it
                return
        if hyp is not None and hyp.final:
            self._finals_queued += 1
        self._outbox.append(hyp)
        self._has_mail.set()

    # -- the connection -------------------------------------------------------------------
    async def run(self) -> None:
        server, m = self.server, self.server.metrics
        # in a thread: a stream's own state can take a while to build (DeepFilterNet loads its
        # model per stream), and the other sessions' frames must not wait for it
        try:
            self.session = await asyncio.get_running_loop().run_in_executor(
                server.opener, functools.partial(server.scheduler.open_stream, on_hypothesis=self._on_hypothesis,
                                                 live=self.live))
        except Exception as exc:  # a stage that cannot even start fails this session only
            log.error("session failed to start", extra={"event": "session_error", "session": self.id,
                                                        "detail": f"{type(exc).__name__}: {exc}"})
            server.metrics.sessions_ended.labels("failed").inc()
            await self._send({"type": "error", "message": f"internal error: cannot start the session: {exc}"})
            await self._close(p.CLOSE_INTERNAL, "internal error")
            return
        self.session.latency.listener = m.observe_latency
        log.info("session opened", extra={"event": "session_open", "session": self.id, **self.params.query(),
                                          "peer": self.peer})
        await self._send({"type": "ready", "session": self.id, "instance": server.config.instance,
                          "sample_rate": self.params.sample_rate, "encoding": self.params.encoding,
                          "channels": self.params.channels, "pace": self.params.pace,
                          "partials": self.params.partials, **server.chain,
                          "max_frame_bytes": server.config.max_frame_bytes,
                          "max_session_seconds": server.config.max_session_s,
                          **({"worker": self.session.worker.index} if hasattr(self.session, "worker") else {})})
        self._reader = asyncio.create_task(self._read_loop())
        sender = asyncio.create_task(self._send_loop())
        done, _ = await asyncio.wait({self._reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if self._reader in done and self._reader.cancelled():  # stopped before it ever ran (a drain)
            reason, code, message = self._stop_reason or "gone", p.CLOSE_GOING_AWAY, None
        elif self._reader in done:
            reason, code, message = self._reader.result()
        else:
            self._reader.cancel()
            why = sender.result()
            if why == "ended":  # the session ended before its client did: a stage failed
                reason, code, message = "failed", p.CLOSE_INTERNAL, None
            elif why == "not_reading":
                reason, code, message = ("not_reading", p.CLOSE_BAD_MESSAGE,
                                         f"the client is not reading its captions ({MAX_OUTBOX_FINALS} finals unread)")
            else:
                reason, code, message = "gone", p.CLOSE_NORMAL, None
        if reason in ("end", "draining", "time_limit"):
            self._push_audio(self.resampler.flush())
            self.session.finish()
            try:
                await asyncio.wait_for(asyncio.shield(sender), END_WAIT_S)
            except asyncio.TimeoutError:
                reason, code, message = "failed", p.CLOSE_INTERNAL, "the session did not finish in time"
        else:  # the client left or broke the protocol: what it sent and is not yet recognised is logged
            self.discarded = self.session.cancel()
        if not sender.done():
            sender.cancel()
        if self.session.error is not None:
            reason, code, message = "failed", p.CLOSE_INTERNAL, f"internal error: {self.session.error}"
            log.error("session failed", extra={"event": "session_error", "session": self.id,
                                               "detail": str(self.session.error)})
        deadline = time.monotonic() + 10.0
        while not self.session.closed.is_set() and time.monotonic() < deadline:  # its worker is done with it
            await asyncio.sleep(0.01)
        summary = self.session.summary(self.live)
        server.release(self)  # the slot is free before the client hears the session is over
        if reason in ("end", "draining"):
            await self._send({"type": "end", "summary": summary, **({"reason": "draining"} if reason == "draining" else {})})
            await self._close(p.CLOSE_NORMAL if reason == "end" else p.CLOSE_GOING_AWAY,
                              "" if reason == "end" else "server draining")
        elif reason != "gone":
            await self._send({"type": "error", "message": message or reason})
            await self._close(code, reason)
        self._account(summary, reason)

    def _account(self, summary: dict, reason: str) -> None:
        m = self.server.metrics
        m.sessions_ended.labels(reason).inc()
        m.skipped_partials.inc(summary.get("skipped_partials", 0))
        self._report_busy()
        log.info("session ended", extra={"event": "session_end", "session": self.id, "reason": reason,
                                         "audio_seconds": summary["audio_seconds"],
                                         "dropped_samples": summary["dropped_samples"],
                                         "discarded_samples": self.discarded, "sanitized_samples": self.sanitized})

    def _report_busy(self) -> None:
        for stage, total in self.session.stage_busy_s.items():
            self.server.metrics.stage_busy.labels(stage).inc(max(0.0, total - self._busy_reported[stage]))
            self._busy_reported[stage] = total

    def stop_reading(self, reason: str) -> None:
        """Take no more audio: the session gives its finals, then closes (draining)."""
        self._stop_reason = reason
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def abort(self, code: int, message: str) -> None:
        if self.session is not None:
            self.session.cancel()
        await self._send({"type": "error", "message": message})
        await self._close(code, message)

    async def _read_loop(self) -> tuple[str, int, str | None]:
        """Frames into the session until the client ends, breaks the protocol, or leaves.
        Returns (reason, close code, message)."""
        limit = self.server.config.max_session_s
        max_frame = self.server.config.max_frame_bytes
        if self._stop_reason is not None:  # the drain began while this session was opening
            return self._stop_reason, p.CLOSE_GOING_AWAY, None
        try:
            while True:
                timeout = None if limit is None else max(0.0, self.started + limit - time.monotonic())
                try:
                    msg = await self.ws.receive(timeout=timeout)
                except asyncio.TimeoutError:
                    return "time_limit", p.CLOSE_BAD_MESSAGE, f"session reached its time limit ({limit:g} s)"
                if msg.type == WSMsgType.BINARY:
                    if len(msg.data) > max_frame:
                        return ("too_big", p.CLOSE_TOO_BIG,
                                f"frame of {len(msg.data)} bytes is over the limit of {max_frame}")
                    failure = await self._accept(msg.data)
                    if failure:
                        return failure
                elif msg.type == WSMsgType.TEXT:
                    try:
                        p.parse_client_text(msg.data)
                    except p.ProtocolError as exc:
                        return "bad_message", p.CLOSE_BAD_MESSAGE, str(exc)
                    return "end", p.CLOSE_NORMAL, None
                elif msg.type == WSMsgType.ERROR and getattr(msg.data, "code", None) == p.CLOSE_TOO_BIG:
                    return "too_big", p.CLOSE_TOO_BIG, str(msg.data)  # aiohttp's own guard, far past ours
                else:  # closed, closing or broken: the client is gone
                    return "gone", p.CLOSE_NORMAL, None
        except asyncio.CancelledError:
            if self._stop_reason is None:
                raise
            return self._stop_reason, p.CLOSE_GOING_AWAY, None

    async def _accept(self, data: bytes):
        x = self.decoder.decode(data)
        if not len(x):
            return None
        self.received_s += len(x) / self.params.sample_rate
        if self.live:
            allowed = (time.monotonic() - self.started) * RATE_CAP + RATE_SLACK_S
            if self.received_s > allowed:
                return ("too_fast", p.CLOSE_BAD_MESSAGE,
                        f"audio is arriving faster than real time ({self.received_s:.1f} s in "
                        f"{time.monotonic() - self.started:.1f} s); send files with ?pace=fast")
        x, bad = sanitize(x)
        self.sanitized += bad
        y = self.resampler.process(x)
        if self.live:
            self._push_audio(y)
        elif len(y):  # a file: wait for room rather than drop (the client waits for us in turn)
            room = self.server.config.max_backlog_s / 2
            piece = int(room * SAMPLE_RATE)
            for i in range(0, len(y), piece):  # a frame may hold more audio than the backlog does
                while self.session.backlog_s > room and not self.session.closed.is_set():
                    await asyncio.sleep(0.01)
                self._push_audio(y[i : i + piece])
        return None

    def _push_audio(self, y: np.ndarray) -> None:
        if len(y):
            dropped = self.session.accept_waveform(y)
            self.server.audio_in(len(y) / SAMPLE_RATE)
            if dropped:
                self.server.metrics.dropped_samples.inc(dropped)

    async def _send_loop(self) -> str:
        """Hypotheses to the client, in order, until the session's end (None). Returns why it
        stopped: "ended", "send_failed" or "not_reading"."""
        while True:
            if self._finals_queued > MAX_OUTBOX_FINALS:
                return "not_reading"
            await self._has_mail.wait()
            self._has_mail.clear()
            while self._outbox:
                hyp = self._outbox.popleft()
                if hyp is None:
                    return "ended"
                if hyp.final:
                    self._finals_queued -= 1
                msg = p.hypothesis_message(hyp)
                msg["backlog_s"] = round(self.session.backlog_s, 2)  # audio not yet recognised: the lag
                if not await self._send(msg):
                    return "send_failed"
            self._report_busy()

    async def _send(self, msg: dict) -> bool:
        if self.ws.closed or self._closing:
            return False
        try:  # a client that stops reading fills its socket: it is given up on, not waited for
            await asyncio.wait_for(self.ws.send_str(json.dumps(msg, ensure_ascii=False)), SEND_TIMEOUT_S)
            return True
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            return False

    async def _close(self, code: int, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()[:120]), 5.0)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            pass


def default_workers() -> int:
    """One worker process per core."""
    return usable_cores()


def _web_file(name: str) -> str:
    return resources.files("asr_stream.serve.web").joinpath(name).read_text(encoding="utf-8")


# -- running it -------------------------------------------------------------------------
class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, message and the record's extra fields."""

    SKIP = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self.SKIP})
        return json.dumps(out, ensure_ascii=False, default=str)


class TextLogFormatter(logging.Formatter):
    SKIP = JsonLogFormatter.SKIP

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in self.SKIP and k != "event")
        return f"asr-stream serve: {record.getMessage()}" + (f" ({extra})" if extra else "")


def configure_logging(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise UserError(f"unknown --log-format '{fmt}' (use text or json)")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else TextLogFormatter())
    root = logging.getLogger("asr_stream")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how the daemon stands; nothing when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify failed", extra={"event": "sd_notify", "detail": str(exc)})


async def serve_until_stopped(settings, config: ServerConfig) -> int:
    server = CaptionServer(settings, config)
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    port = site._server.sockets[0].getsockname()[1]
    log.info(f"listening on http://{config.host}:{port}", extra={"event": "listening", "host": config.host,
                                                                 "port": port, "instance": config.instance})
    wyoming = None
    if config.wyoming:
        from asr_stream.serve.wyoming_stt import WyomingListener

        wyoming = WyomingListener(server, config.wyoming)
        try:
            wyoming_port = await wyoming.start()
        except UserError:
            await runner.cleanup()
            raise
        log.info(f"wyoming on tcp://{wyoming.host}:{wyoming_port}",
                 extra={"event": "listening", "protocol": "wyoming", "host": wyoming.host, "port": wyoming_port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(server.load())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if loading.done() and loading.exception() is not None:
        server.load_error = loading.exception()
        stopper.cancel()
        if wyoming is not None:
            await wyoming.close()
        await runner.cleanup()
        exc = server.load_error
        raise exc if isinstance(exc, UserError) else UserError(f"cannot load the engines: {exc}")
    if loading.done():
        sd_notify("READY=1")
        await stop.wait()
    else:
        loading.cancel()
    sd_notify("STOPPING=1")
    t0 = time.monotonic()
    await server.drain()
    if wyoming is not None:
        await wyoming.close()
    await site.stop()
    await runner.cleanup()
    server.close()
    log.info("stopped", extra={"event": "stopped", "drain_seconds": round(time.monotonic() - t0, 2)})
    return code


def serve(settings, config: ServerConfig, log_format: str = "text") -> int:
    configure_logging(log_format)
    _check_config(config)
    return asyncio.run(serve_until_stopped(settings, config))
