"""The daemon's engines in worker processes, so that streams use every core: each worker loads
the chain's engines and runs a `MultiStreamScheduler` over them; the daemon puts each session
on the least-loaded worker and talks to it over a pipe.

    Connection --RemoteSession.accept_waveform--> sender thread --pipe--> worker: Session
    worker: hypotheses, progress, end --pipe--> reader thread --> RemoteSession --> on_hypothesis

One worker dying (a native crash, the OOM killer, kill -9) ends only its own sessions, each
with an error that says so; the worker is started again and new sessions are served meanwhile
by the others. `RemoteSession` has the part of `multistream.Session` the daemon uses.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.runtime.memory import release_free_memory
from asr_stream.runtime.threads import name_os_thread

log = logging.getLogger("asr_stream.serve.server")

PROGRESS_S = 0.02  # how often a worker reports its sessions' backlog, drops and stage time
OPEN_TIMEOUT_S = 120.0  # a stream that takes longer than this to build (DeepFilterNet loads per stream)
LOAD_TIMEOUT_S = 600.0


class WorkerDied(RuntimeError):
    def __init__(self, worker: int, pid: int | None, exitcode: int | None):
        how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
               else f"exit code {exitcode}" if exitcode is not None else "its pipe broke")
        super().__init__(f"worker process {worker} (pid {pid}) died ({how}); its sessions ended, the others go on")


class SessionFailed(RuntimeError):
    """A session's failure, as its worker reported it."""


class _LatencyRelay:
    """Stands in for a session's `LatencyTracker`: the worker measures, the daemon listens."""

    listener: Callable[[str, float], None] | None = None


class RemoteSession:
    """A session on a worker process, driven like `multistream.Session`."""

    def __init__(self, worker: "_Worker", session_id: int, on_hypothesis: Callable, live: bool | None):
        self.id = session_id
        self.worker = worker
        self.on_hypothesis = on_hypothesis
        self.live = live
        self.latency = _LatencyRelay()
        self.closed = threading.Event()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self.stage_busy_s = {"denoiser": 0.0, "recognizer": 0.0}
        self._sent = 0  # samples sent to the worker
        self._consumed = 0  # samples the worker took from its pending audio, or dropped
        self._dropped = 0  # as the worker reported them
        self._dropped_told = 0  # ... and as `accept_waveform` has returned them
        self._summary: dict | None = None
        self._finished = False

    # -- the daemon's side ----------------------------------------------------------------
    def accept_waveform(self, samples: np.ndarray) -> int:
        """Queue 16 kHz audio for the worker (never waits). Returns the samples the worker has
        dropped since the last call (a live session more than `max_backlog_s` behind)."""
        samples = np.asarray(samples, np.float32)
        if len(samples) and not self._finished and not self.closed.is_set():
            self._sent += len(samples)
            self.worker.send(("audio", self.id, samples))
        dropped, self._dropped_told = self._dropped - self._dropped_told, self._dropped
        return dropped

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.worker.send(("finish", self.id))

    def cancel(self) -> int:
        discarded = int(self.backlog_s * SAMPLE_RATE)
        self._finished = True
        self.worker.send(("cancel", self.id))
        return discarded

    @property
    def backlog_s(self) -> float:
        """Audio sent and not yet taken by the worker (never less than the worker's own backlog)."""
        return max(0, self._sent - self._consumed) / SAMPLE_RATE

    def summary(self, live: bool) -> dict:
        if self._summary is not None:
            return self._summary
        audio_s = self._consumed / SAMPLE_RATE  # the worker died before it could say
        return {"session": self.id, "audio_seconds": round(audio_s, 3), "pace": "realtime" if live else "fast",
                "dropped_samples": int(self._dropped), "denoiser": self.worker.names[0],
                "recognizer": self.worker.names[1]}

    # -- the worker's side (the reader thread) ----------------------------------------------
    def _progress(self, consumed: int, dropped: int, busy: dict) -> None:
        self._consumed, self._dropped = consumed, dropped
        self.stage_busy_s = busy

    def _hypothesis(self, hyp, latencies) -> None:
        listener = self.latency.listener
        if listener is not None:
            for kind, seconds in latencies:
                listener(kind, seconds)
        self.on_hypothesis(self, hyp)

    def _end(self, summary: dict | None, error: BaseException | None) -> None:
        if self.closed.is_set():
            return
        if summary is not None:
            self._summary = summary
            self._consumed = self._sent
        self.error = error
        self.opened.set()
        self.closed.set()
        self.on_hypothesis(self, None)


class _Worker:
    """One worker process, seen from the daemon: its pipe, its sessions, a sender and a reader."""

    def __init__(self, pool: "WorkerPool", index: int):
        self.pool = pool
        self.index = index
        self.sessions: dict[int, RemoteSession] = {}
        self.last_assigned = 0
        self.names = ("", "")
        self.session_cost: float | None = None  # CPU s per audio s of one session, when measured
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        parent, child = pool.context.Pipe(duplex=True)
        self.conn = parent
        self.process = pool.context.Process(
            target=worker_main, name=f"asr-stream-worker-{index}", daemon=True,
            args=(child, pool.settings, pool.stream_threads, pool.max_backlog_s, pool.warm_up, pool.measure))
        self.process.start()
        child.close()
        self.pid = self.process.pid
        self._sender = threading.Thread(target=self._send_loop, name=f"worker-{index}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"worker-{index}-read", daemon=True)
        self._sender.start()
        self._reader.start()

    def send(self, msg: tuple) -> None:
        self._outbox.put(msg)  # the event loop never waits on a full pipe

    def _send_loop(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self.conn.send(msg)
            except (OSError, ValueError):  # the worker is gone: the reader reports it
                return

    def _read_loop(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "ready":
                self.names, self.session_cost = (msg[1], msg[2]), msg[3]
                self.ready.set()
                continue
            if kind == "load_failed":
                self.load_error = msg[1]
                self.ready.set()
                continue
            session = self.sessions.get(msg[1])
            if session is None:
                continue
            if kind == "progress":
                session._progress(*msg[2:])
            elif kind == "hyp":
                session._hypothesis(msg[2], msg[3])
            elif kind == "opened":
                session.opened.set()
            elif kind in ("open_failed", "end"):
                self.sessions.pop(session.id, None)
                error = msg[2] if kind == "open_failed" else msg[3]
                session._end(msg[2] if kind == "end" else None, None if error is None else SessionFailed(error))
        self._died()

    def _died(self) -> None:
        self.process.join(5)
        self._outbox.put(None)
        self.conn.close()
        if self.pool.closing:
            return
        error = WorkerDied(self.index, self.pid, self.process.exitcode)
        lost = list(self.sessions.values())
        self.sessions.clear()
        log.error("worker died", extra={"event": "worker_died", "worker": self.index, "pid": self.pid,
                                        "exitcode": self.process.exitcode, "sessions": len(lost)})
        for session in lost:
            session._end(None, error)
        self.ready.set()  # no one waits on a worker that is gone
        self.pool._restart(self)

    def stop(self) -> None:
        self.send(("stop",))
        self._outbox.put(None)


class WorkerPool:
    """`workers` processes, each with the chain's engines and `stream_threads` scheduler threads."""

    def __init__(self, settings, workers: int, stream_threads: int = 2, max_backlog_s: float = 4.0,
                 warm_up: bool = True, measure: bool = False):
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.settings = settings
        self.stream_threads = stream_threads
        self.max_backlog_s = max_backlog_s
        self.warm_up = warm_up
        self.measure = measure  # each worker measures one session's cost after its warm-up
        self.context = mp.get_context("spawn")  # never fork a process that holds threads and models
        self.closing = False
        self.restarts = 0
        self._ids = itertools.count(1)
        self._turns = itertools.count(1)
        self._lock = threading.Lock()
        self.workers = [_Worker(self, i) for i in range(workers)]

    def wait_ready(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Block until every worker has loaded its engines; a worker that cannot is a UserError."""
        deadline = time.monotonic() + timeout
        for w in list(self.workers):
            w.ready.wait(max(0.0, deadline - time.monotonic()))
            if w.load_error is not None:
                self.close()
                raise UserError(w.load_error)
            if not w.ready.is_set() or not w.process.is_alive():
                self.close()
                raise UserError(f"worker process {w.index} did not load the engines "
                                f"(exit code {w.process.exitcode})")
        self.measure = False  # a worker started again later serves at once

    @property
    def names(self) -> tuple[str, str]:
        return next((w.names for w in self.workers if w.names[0]), ("", ""))

    @property
    def session_cost(self) -> float | None:
        """The costliest worker's measurement (CPU s per audio s of one session), if measured."""
        costs = [w.session_cost for w in self.workers if w.session_cost is not None]
        return max(costs) if costs else None

    @property
    def available(self) -> bool:
        return any(self._serving(w) for w in self.workers)

    @staticmethod
    def _serving(w: _Worker) -> bool:
        return w.ready.is_set() and w.load_error is None and w.process.is_alive()

    def open_stream(self, on_hypothesis: Callable, live: bool | None = None) -> RemoteSession:
        """A session on the least-loaded worker; blocks until the worker has built its stream."""
        with self._lock:
            serving = [w for w in self.workers if self._serving(w)]
            if not serving:
                raise SessionFailed("no worker process is running (one is restarting)")
            worker = min(serving, key=lambda w: (len(w.sessions), w.last_assigned))  # ties: round robin
            worker.last_assigned = next(self._turns)
            session = RemoteSession(worker, next(self._ids), on_hypothesis, live)
            worker.sessions[session.id] = session
        worker.send(("open", session.id, live))
        if not session.opened.wait(OPEN_TIMEOUT_S):
            worker.sessions.pop(session.id, None)
            raise SessionFailed(f"worker process {worker.index} did not open the stream in time")
        if session.error is not None:
            raise session.error
        return session

    def pids(self) -> list[int]:
        """The worker processes now (their CPU counts in what sessions cost)."""
        return [w.pid for w in self.workers if w.pid]

    def describe(self) -> list[dict]:
        return [{"worker": w.index, "pid": w.pid, "state": "ready" if self._serving(w) else "starting",
                 "sessions": sorted(w.sessions)} for w in self.workers]

    def _restart(self, dead: _Worker) -> None:
        with self._lock:
            if self.closing:
                return
            self.restarts += 1
            fresh = _Worker(self, dead.index)
            self.workers[self.workers.index(dead)] = fresh
        log.info("worker restarting", extra={"event": "worker_restart", "worker": dead.index, "pid": fresh.pid})

    def close(self, timeout: float = 5.0) -> None:
        self.closing = True
        for w in self.workers:
            w.stop()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2)


# -- inside a worker process ----------------------------------------------------------------
def worker_main(conn, settings, stream_threads: int, max_backlog_s: float, warm_up: bool,
                measure: bool = False) -> None:
    """A worker process: load the engines, then open, feed and end sessions as the daemon says."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the daemon's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from asr_stream.chain.engines import load_engines
    from asr_stream.chain.many_streams import MultiStreamScheduler

    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            try:
                conn.send(msg)
            except (OSError, ValueError):
                os._exit(0)  # the daemon is gone

    try:
        engines = load_engines(settings)
        if warm_up:
            from asr_stream.chain.many_streams import warm_up_on_sample

            warm_up_on_sample(engines)
        cost = None
        if measure:
            from asr_stream.chain.many_streams import session_cost

            cost = session_cost(engines)
    except Exception as exc:  # a bad model path, a missing package: the daemon says it and exits 2
        send(("load_failed", str(exc) if isinstance(exc, UserError) else f"cannot load the engines: {exc}"))
        return
    scheduler = MultiStreamScheduler(engines, workers=stream_threads, max_backlog_s=max_backlog_s)
    sessions: dict = {}
    latencies: dict[int, list] = {}
    send(("ready", engines.denoiser.name, engines.recognizer.name, cost))

    def on_hypothesis(sid: int, session, hyp) -> None:
        if hyp is None:
            sessions.pop(sid, None)
            latencies.pop(sid, None)
            send(("end", sid, session.summary(session.live), None if session.error is None else str(session.error)))
            return
        got, latencies[sid] = latencies.get(sid, []), []
        send(("hyp", sid, hyp, got))

    def open_stream(sid: int, live) -> None:
        try:
            session = scheduler.open_stream(on_hypothesis=lambda s, h: on_hypothesis(sid, s, h), live=live)
        except Exception as exc:
            send(("open_failed", sid, f"cannot start the session: {exc}"))
            return
        session.live = bool(live) if live is not None else bool(settings.pace == "realtime")
        latencies[sid] = []
        session.latency.listener = lambda kind, s: latencies.setdefault(sid, []).append((kind, s))
        sessions[sid] = session
        send(("opened", sid))

    def report() -> None:
        name_os_thread()
        last: dict[int, tuple] = {}
        while True:
            time.sleep(PROGRESS_S)
            for sid, s in list(sessions.items()):
                state = (s.accepted_samples - s._pending_samples, s.dropped_samples,
                         round(s.stage_busy_s["denoiser"], 3), round(s.stage_busy_s["recognizer"], 3))
                if last.get(sid) != state:
                    last[sid] = state
                    send(("progress", sid, state[0], state[1], {"denoiser": state[2], "recognizer": state[3]}))
            gone = set(last) - set(sessions)
            for sid in gone:
                last.pop(sid)
            if gone:  # their native state has been freed by now: give the pages back
                release_free_memory()

    threading.Thread(target=report, name="progress", daemon=True).start()
    opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-opener", initializer=name_os_thread)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "stop":
            break
        if kind == "open":
            opener.submit(open_stream, msg[1], msg[2])
            continue
        session = sessions.get(msg[1])
        if session is None:
            continue
        if kind == "audio":
            session.accept_waveform(msg[2])
        elif kind == "finish":
            session.finish()
        elif kind == "cancel":
            session.cancel()
    scheduler.close()
    os._exit(0)  # native libraries' threads need not be joined
