"""Many streams over one set of engines: the scheduler a daemon and the load test run.

    session.accept_waveform --pending (bounded)--> [workers: denoise + decode, one session
    at a time, round robin] --> session.events / on_hypothesis

A session is an independent stream: its own denoiser and recogniser state over the shared
engines (`engines.Engines`). A pool of workers takes ready sessions in arrival order; each turn
denoises and decodes everything the session has pending, so every waiting session is served
before any is served twice (no stream starves). Model calls go through the engines' batchers:
sessions decoding at the same time share one model call.

Overload, in the order it sheds:
1. partial decodes: a recogniser handed a backlog skips the partials it is behind on (Whisper;
   finals are never skipped), and counts them (`skipped_partials`);
2. audio: a session's pending audio is bounded (`max_backlog_s`); past it, the oldest pending
   audio is dropped and counted (`dropped_samples`), so latency stays bounded.
A failing stage fails its own session (its error is kept and reported), never the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.chain.engines import Engines
from asr_stream.errors import StageError, UserError
from asr_stream.chain.one_stream import BLOCK_SAMPLES, ChainClock
from asr_stream.stages import Hypothesis
from asr_stream.output.stats import LatencyTracker
from asr_stream.runtime.threads import name_os_thread

POLL = 0.05


class Session:
    """One stream: feed it with `accept_waveform`, end it with `finish`; hypotheses arrive on
    `events` (a queue ending with None) or through the scheduler's `on_hypothesis`."""

    def __init__(self, scheduler: "MultiStreamScheduler", session_id: int, engines: Engines,
                 max_backlog_s: float, on_hypothesis: Callable | None, live: bool | None = None):
        self.id = session_id
        self.scheduler = scheduler
        self.denoiser, self.recognizer = engines.create_streams(live=live)
        self.hop = self.denoiser.hop_size
        self.block = max(1, BLOCK_SAMPLES // self.hop) * self.hop  # several hops per call: a tenth of the cost
        self.max_backlog = int(max_backlog_s * SAMPLE_RATE)
        self.on_hypothesis = on_hypothesis
        self.events: queue.Queue = queue.Queue()
        self.clock = ChainClock(keep_s=120.0)
        self.latency = LatencyTracker()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a worker took the pending audio
        self._pending: deque[tuple[np.ndarray, float]] = deque()  # (samples, arrival)
        self._pending_samples = 0
        self._carry = np.zeros(0, np.float32)  # samples short of a denoiser hop
        self._carry_arrival = 0.0
        self._denoised = 0  # denoised samples handed to the recogniser
        self._finishing = False
        self._queued = False  # in the scheduler's ready queue
        self._running = False  # a worker holds it
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.accepted_samples = 0
        self.processed_samples = 0  # on the recogniser's timeline (dropped audio is not on it)
        self.dropped_samples = 0
        self.busy_s = 0.0  # worker seconds spent on this session
        self.stage_busy_s = {"denoiser": 0.0, "recognizer": 0.0}
        self.opened_at = time.monotonic()

    # -- the client's side --------------------------------------------------------------
    def accept_waveform(self, samples: np.ndarray, arrival: float | None = None, block: bool = False) -> int:
        """Queue 16 kHz mono audio. A live source (`block=False`) never waits: when the session
        is more than `max_backlog_s` behind, the oldest pending samples are dropped to make room,
        and the number dropped is returned (and counted). A file fed as fast as it can be
        (`block=True`) waits for room instead, so nothing is dropped."""
        samples = np.asarray(samples, np.float32)
        if self._finishing or not len(samples):
            return 0
        arrival = time.monotonic() if arrival is None else arrival
        piece = max(1, self.max_backlog // 2)
        if block and len(samples) > piece:
            for i in range(0, len(samples), piece):
                self.accept_waveform(samples[i : i + piece], arrival, block=True)
            return 0
        dropped = 0
        with self._lock:
            while block and self._pending_samples and self._pending_samples + len(samples) > self.max_backlog:
                if self.closed.is_set() or not self._room.wait(timeout=POLL * 4):
                    if self.closed.is_set():
                        return 0
            self._pending.append((samples, arrival))
            self._pending_samples += len(samples)
            self.accepted_samples += len(samples)
            while self._pending_samples > self.max_backlog:
                old, t = self._pending.popleft()
                cut = min(len(old), self._pending_samples - self.max_backlog)
                if cut < len(old):
                    self._pending.appendleft((old[cut:], t))
                self._pending_samples -= cut
                dropped += cut
            self.dropped_samples += dropped
            self._wake()
        return dropped

    def finish(self) -> None:
        """No more audio: what is pending is still recognised, then the finals and None."""
        with self._lock:
            self._finishing = True
            self._wake()

    def cancel(self) -> int:
        """The client is gone: its pending audio is discarded (and returned as a count), and
        the session closes after at most one more turn, freeing its slot."""
        with self._lock:
            discarded = self._pending_samples
            self._pending.clear()
            self._pending_samples = 0
            self._carry = np.zeros(0, np.float32)
            self._room.notify_all()
            self._finishing = True
            self._wake()
        return discarded

    def wait_turned(self, timeout: float | None = None) -> bool:
        """Until everything queued so far has had its turn (or the session closed)."""
        with self._lock:
            return self._room.wait_for(lambda: self.closed.is_set() or not (self._pending_samples or self._queued
                                                                            or self._running), timeout)

    @property
    def backlog_s(self) -> float:
        return self._pending_samples / SAMPLE_RATE

    def stats(self) -> dict:
        audio_s = self.processed_samples / SAMPLE_RATE
        return {"session": self.id, "audio_seconds": round(audio_s, 3),
                "dropped_seconds": round(self.dropped_samples / SAMPLE_RATE, 3),
                "skipped_partials": int(getattr(self.recognizer, "skipped_partials", 0)),
                "busy_seconds": round(self.busy_s, 3), "error": str(self.error) if self.error else None}

    def summary(self, live: bool) -> dict:
        """The session's summary, in the CLI's shape (`stats.summarize`), for its client."""
        from asr_stream.output.stats import latency_summary

        audio_s = self.processed_samples / SAMPLE_RATE
        wall = time.monotonic() - self.opened_at
        rtf = lambda v: round(v / audio_s, 4) if audio_s else None  # noqa: E731
        out = {"session": self.id, "audio_seconds": round(audio_s, 3), "wall_seconds": round(wall, 3),
               "rtf": rtf(max(self.stage_busy_s.values()) if live else wall),
               "rtf_stages": {k: rtf(v) for k, v in self.stage_busy_s.items()},
               "pace": "realtime" if live else "fast",
               "dropped_samples": int(self.dropped_samples),
               "dropped_frames": int(-(-self.dropped_samples // self.hop)),
               "denoiser": self.denoiser.name, "recognizer": self.recognizer.name,
               # what the recogniser heard: the audio itself, no sample lost or added on the way
               "recognized_seconds": round(self._denoised / SAMPLE_RATE, 3)}
        if live:
            out["latency_partial_s"] = latency_summary(self.latency.partial)
            out["latency_final_s"] = latency_summary(self.latency.final)
        skipped = getattr(self.recognizer, "skipped_partials", None)
        if skipped is not None:
            out["skipped_partials"] = int(skipped)
        return out

    def state_size(self) -> dict[str, int]:
        """Per-session state that could grow with the session's length (tests check it does not)."""
        sizes = {"pending_chunks": len(self._pending), "clock_entries": len(self.clock), **self.latency.state_size()}
        recognizer_sizes = getattr(self.recognizer, "state_size", None)
        if recognizer_sizes is not None:
            sizes.update({f"recognizer_{k}": v for k, v in recognizer_sizes().items()})
        gate = getattr(self.denoiser, "state_size", None)
        if gate is not None:
            sizes.update({f"denoiser_{k}": v for k, v in gate().items()})
        return sizes

    # -- the scheduler's side -----------------------------------------------------------
    def _wake(self) -> None:  # with the lock held
        if not self._queued and not self._running and not self.closed.is_set():
            self._queued = True
            self.scheduler._ready.put(self)

    def _take(self) -> tuple[list[tuple[np.ndarray, float]], bool]:
        with self._lock:
            self._queued = False
            self._running = True
            chunks = list(self._pending)
            self._pending.clear()
            self._pending_samples = 0
            self._room.notify_all()
            return chunks, self._finishing

    def _turn(self) -> None:
        """Denoise and decode everything pending (one worker, one session)."""
        chunks, finishing = self._take()
        t0 = time.perf_counter()
        try:
            hyps = self._process(chunks)
            if finishing:
                hyps += self._flush()
        except BaseException as exc:  # this session fails; the others carry on
            self.error = exc if isinstance(exc, (UserError, StageError)) else StageError("session", exc)
            hyps, finishing = [], True
        self.busy_s += time.perf_counter() - t0
        now = time.monotonic()
        for h in hyps:
            h = h if h.emitted_at else dataclasses.replace(h, emitted_at=now)
            self.latency.observe(h, self.clock.arrival_of)
            self._deliver(h)
        with self._lock:
            self._running = False
            self._room.notify_all()  # for `wait_turned`
            if finishing:
                self.closed.set()
            elif self._pending or self._finishing:
                self._wake()
        if finishing:
            self._deliver(None)
            self.scheduler._closed(self)

    def _process(self, chunks) -> list[Hypothesis]:
        out = []
        for samples, arrival in chunks:
            x = np.concatenate([self._carry, samples]) if len(self._carry) else samples
            n = len(x) // self.hop * self.hop
            self._carry, self._carry_arrival = x[n:], arrival
            if not n:
                continue
            self.clock.mark(self.processed_samples + n, arrival)
            self.processed_samples += n
            t0 = time.perf_counter()
            clean = [self.denoiser.process(x[i : min(i + self.block, n)]) for i in range(0, n, self.block)]
            self.stage_busy_s["denoiser"] += time.perf_counter() - t0
            clean = [c for c in clean if len(c)]
            if clean:
                clean = np.concatenate(clean)
                self._denoised += len(clean)
                t0 = time.perf_counter()
                self.recognizer.accept_waveform(clean)  # features may be made here: the recogniser's time
                self.stage_busy_s["recognizer"] += time.perf_counter() - t0
        if chunks:
            t0 = time.perf_counter()
            out += self.recognizer.decode()
            self.stage_busy_s["recognizer"] += time.perf_counter() - t0
        return out

    def _flush(self) -> list[Hypothesis]:
        if len(self._carry):  # the last part-hop, padded to a hop; the padding is cut from the output
            n = len(self._carry)
            self.clock.mark(self.processed_samples + n, self._carry_arrival)
            out = self.denoiser.process(np.pad(self._carry, (0, self.hop - n)))
            self.processed_samples += n
            self._carry = np.zeros(0, np.float32)
        else:
            out = np.zeros(0, np.float32)
        # the denoiser's output is aligned with its input: cut what came from the padding
        tail = np.concatenate([out, self.denoiser.flush()])[: max(0, self.processed_samples - self._denoised)]
        if len(tail):
            self._denoised += len(tail)
            self.recognizer.accept_waveform(tail)
        return self.recognizer.decode() + self.recognizer.finish()

    def _deliver(self, hyp: Hypothesis | None) -> None:
        if self.on_hypothesis is not None:
            self.on_hypothesis(self, hyp)
        else:
            self.events.put(hyp)


class MultiStreamScheduler:
    """Sessions over shared engines, served by `workers` threads (see the module docstring)."""

    def __init__(self, engines: Engines, workers: int = 2, max_backlog_s: float = 4.0):
        self.engines = engines
        self.max_backlog_s = max_backlog_s
        self._ready: queue.Queue[Session] = queue.Queue()
        self._stop = threading.Event()
        self._ids = itertools.count()
        self._open: dict[int, Session] = {}
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"stream-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    def open_stream(self, on_hypothesis: Callable | None = None, engines: Engines | None = None,
                    live: bool | None = None) -> Session:
        """A new session (over `engines`, by default the scheduler's). `on_hypothesis(session, hyp)`
        is called from a worker for each hypothesis (and with None at the end); without it they go
        to `session.events`. `live` says whether its audio comes at wall-clock rate (None: as the
        engines were loaded for); a recogniser that sheds partials when behind does so only live."""
        session = Session(self, next(self._ids), engines or self.engines, self.max_backlog_s, on_hypothesis, live)
        with self._lock:
            self._open[session.id] = session
        return session

    @property
    def open_sessions(self) -> int:
        return len(self._open)

    def _closed(self, session: Session) -> None:
        with self._lock:
            self._open.pop(session.id, None)

    def _work(self) -> None:
        name_os_thread()
        while not self._stop.is_set():
            try:
                session = self._ready.get(timeout=POLL)
            except queue.Empty:
                continue
            session._turn()
            del session  # a worker waiting for work holds no closed session (nor its native state)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (sessions still open get no more turns)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))


def warm_up(engines, track: np.ndarray, seconds: float = 3.0) -> None:
    """One short session first, so the first N does not pay for the models' first calls."""
    scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=seconds + 1)
    try:
        s = scheduler.open_stream(on_hypothesis=lambda *_: None)
        s.accept_waveform(track[: int(seconds * SAMPLE_RATE)], block=True)
        s.finish()
        s.closed.wait(60)
    finally:
        scheduler.close()


def session_cost(engines, seconds: float = 8.0, piece_s: float = 0.02) -> float:
    """CPU seconds per second of audio of one session over the bundled speech sample, turned as
    live audio turns it (a turn per `piece_s`, each waited for, every partial decoded) but
    without waiting for the clock: what the daemon's capacity estimate divides the cores by. A
    session fed all at once would miss each turn's fixed cost, which is most of a cheap chain's.
    Process CPU time, so the models' own threads count too."""
    from asr_stream.io.audio_files import load_16k
    from asr_stream.resources import sample_wav

    track = load_16k(sample_wav())[: int(seconds * SAMPLE_RATE)]
    piece = int(piece_s * SAMPLE_RATE)
    scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=len(track) / SAMPLE_RATE + 1)
    t0 = time.process_time()
    try:
        s = scheduler.open_stream(on_hypothesis=lambda *_: None, live=False)
        for i in range(0, len(track), piece):
            s.accept_waveform(track[i : i + piece], block=True)
            s.wait_turned(120)
        s.finish()
        s.closed.wait(120)
    finally:
        scheduler.close()
    return (time.process_time() - t0) / (len(track) / SAMPLE_RATE)


def warm_up_on_sample(engines, seconds: float = 2.0) -> None:
    """The warm-up on the clip bundled with the package (a daemon, or one of its workers, before
    its first client)."""
    from asr_stream.io.audio_files import load_16k
    from asr_stream.resources import sample_wav

    warm_up(engines, load_16k(sample_wav()), seconds=seconds)
