"""The threaded chain: one worker per stage, bounded queues, one-way data flow.

    source --ring--> [denoise worker: framer + denoiser] --q--> [recognize worker] --q--> caller

End of stream flows through as `None`. Any exception in a worker is recorded with its stage
name, every worker is told to stop, and `events()` raises it, so a failing stage stops the
chain at once instead of leaving the others waiting. Queue waits use short timeouts so no
worker can hang on a peer that died.
"""

from __future__ import annotations

import bisect
import dataclasses
from array import array
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from asr_stream.errors import StageError, UserError
from asr_stream.io.framer import Framer, Hop
from asr_stream.io.ring_buffer import RingBuffer
from asr_stream.io.sources import Source
from asr_stream.runtime.threads import name_os_thread
from asr_stream.stages import Denoiser, Recognizer

POLL = 0.05
BLOCK_SAMPLES = 1600  # the denoiser is handed up to 100 ms of hops at a time


@dataclass
class StageTimes:
    """Wall seconds a stage spent on its own work (not waiting for input)."""

    busy: float = 0.0


class ChainClock:
    """Maps the 16 kHz timeline to when each stretch of audio entered the chain, for the last
    `keep_s` seconds of audio (words are timed when committed, long before that): compact
    arrays, trimmed as they go, so a session of any length holds a bounded clock."""

    def __init__(self, keep_s: float | None = 600.0, sample_rate: int = 16000):
        self.keep = int(keep_s * sample_rate) if keep_s is not None else None  # None: keep everything
        self.ends = array("q")
        self.arrivals = array("d")
        self.forgotten = 0  # audio before this sample is no longer mapped

    def add(self, hop: Hop) -> None:
        self.mark(hop.start + len(hop.samples), hop.arrival)

    def mark(self, end: int, arrival: float) -> None:
        """Audio up to sample `end` (exclusive) had arrived by `arrival`."""
        self.ends.append(end)
        self.arrivals.append(arrival)
        if self.keep is not None and len(self.ends) > 64 and self.ends[len(self.ends) // 2] < end - self.keep:
            half = len(self.ends) // 2
            self.forgotten = self.ends[half - 1]
            del self.ends[:half]
            del self.arrivals[:half]

    def arrival_of(self, seconds: float, sample_rate: int = 16000) -> float | None:
        sample = int(seconds * sample_rate)
        if sample < self.forgotten:
            return None
        i = bisect.bisect_left(self.ends, sample)
        return self.arrivals[i] if i < len(self.arrivals) else None

    def __len__(self) -> int:
        return len(self.ends)


class Chain:
    def __init__(self, source: Source, denoiser: Denoiser, recognizer: Recognizer,
                 ring_seconds: float = 10.0, queue_hops: int = 1000, max_seconds: float | None = None,
                 keep_denoised: bool = False, clock_s: float | None = 600.0):
        self.source, self.denoiser, self.recognizer = source, denoiser, recognizer
        self.denoised: list[np.ndarray] | None = [] if keep_denoised else None  # what the recogniser heard
        self.ring = RingBuffer(int(source.sample_rate * ring_seconds))
        self.framer = Framer(self.ring, source.sample_rate, denoiser.hop_size)
        self.clock = ChainClock(keep_s=clock_s)  # None (evaluations): every word of the input can be timed
        self.times = {"denoiser": StageTimes(), "recognizer": StageTimes()}
        self.audio_samples = 0
        self.max_samples = int(max_seconds * 16000) if max_seconds else None  # stop input after this much audio
        self._clean_q: queue.Queue = queue.Queue(maxsize=queue_hops)
        self._events_q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._failure: StageError | UserError | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    # -- control ----------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._guard, args=(name, fn), name=name, daemon=True)
                         for name, fn in (("denoiser", self._denoise_loop), ("recognizer", self._recognize_loop))]
        for t in self._threads:
            t.start()
        self.source.start(self.ring)

    def stop_input(self) -> None:
        """Graceful stop (Ctrl-C): no more audio; what was captured still flows through."""
        self.source.stop()

    def abort(self) -> None:
        self.source.stop()
        self._stop.set()

    def _fail(self, exc: BaseException, stage: str) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = exc if isinstance(exc, UserError) else StageError(stage, exc)
        self.abort()

    def _guard(self, name: str, fn) -> None:
        name_os_thread()
        try:
            fn()
        except BaseException as exc:
            self._fail(exc, name)
        finally:
            if name == "recognizer":
                self._events_q.put(None)  # the consumer's end of stream

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    # -- workers ----------------------------------------------------------------------
    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.times[stage].busy += time.perf_counter() - t0
        return out

    def _denoise_loop(self) -> None:
        while not self._stop.is_set():
            if self.source.error is not None:
                return self._fail(self.source.error, "source")
            hops = self.framer.hops(timeout=POLL)
            per_block = max(1, BLOCK_SAMPLES // self.denoiser.hop_size)
            for i in range(0, len(hops), per_block):  # several hops per call: far cheaper than one by one
                block = hops[i : i + per_block]
                for hop in block:
                    self.clock.add(hop)
                    self.audio_samples += len(hop.samples)
                if self.max_samples and self.audio_samples >= self.max_samples:
                    self.source.stop()
                samples = block[0].samples if len(block) == 1 else np.concatenate([h.samples for h in block])
                out = self._timed("denoiser", self.denoiser.process, samples)
                if len(out) and not self._put(self._clean_q, out):
                    return
            if self.framer.finished:
                if self.source.error is not None:
                    return self._fail(self.source.error, "source")
                tail = self._timed("denoiser", self.denoiser.flush)
                if len(tail):
                    self._put(self._clean_q, tail)
                self._put(self._clean_q, None)
                return

    def _recognize_loop(self) -> None:
        done = False
        while not done and not self._stop.is_set():
            try:
                first = self._clean_q.get(timeout=POLL)
            except queue.Empty:
                continue
            chunks = [first]
            while chunks[-1] is not None:  # take everything queued: decode once for all of it
                try:
                    chunks.append(self._clean_q.get_nowait())
                except queue.Empty:
                    break
            done = chunks[-1] is None
            audio = [c for c in chunks if c is not None]
            if audio:
                if self.denoised is not None:
                    self.denoised += audio
                self._timed("recognizer", self.recognizer.accept_waveform, np.concatenate(audio))
            hyps = self._timed("recognizer", self.recognizer.decode)
            if done:
                hyps += self._timed("recognizer", self.recognizer.finish)
            now = time.monotonic()
            for h in hyps:  # stamp when the chain produced it, unless the recogniser did
                self._events_q.put(h if h.emitted_at else dataclasses.replace(h, emitted_at=now))
        self.finished_at = time.monotonic()

    # -- results ----------------------------------------------------------------------
    def events(self):
        """Yield hypotheses as they come; raises the first stage failure."""
        while True:
            try:
                item = self._events_q.get(timeout=POLL)
            except queue.Empty:
                if self._failure is not None:
                    break
                continue
            if item is None:
                break
            yield item
        self.join(timeout=1.0)
        if self._failure is not None:
            raise self._failure

    def join(self, timeout: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.source.join(max(0.0, deadline - time.monotonic()))

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped
