"""Cross-stream batching: concurrent calls into one engine coalesce into one model call.

Each stream calls its engine as if it were alone (`batcher.call(key, request)` blocks until
the result is ready). Up to `concurrency` batches run at once (one per core for one-thread
model calls); requests that arrive while they all run wait, and when one finishes, a waiting
caller runs every waiting request that shares the oldest request's `key` (the shapes that can
be stacked) as one batch. So an idle engine adds no delay, and a loaded one batches exactly as
much as the load makes wait: dynamic batching, as inference servers do it, without a timer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class _Pending:
    request: Any
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    calls: int = 0  # model calls
    requests: int = 0  # requests served
    largest: int = 0  # the largest batch
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many calls had it

    def as_dict(self) -> dict:
        return {"calls": self.calls, "requests": self.requests, "largest": self.largest,
                "mean_batch": round(self.requests / self.calls, 3) if self.calls else None}


class Batcher:
    """Runs `run_batch(requests) -> results` (same order) for groups of concurrent requests.

    `max_batch` caps a batch; `enabled=False` runs every request alone (still one at a time,
    so batched and unbatched runs use the engine the same way apart from the batching)."""

    def __init__(self, run_batch: Callable[[list], list], max_batch: int = 16, enabled: bool = True,
                 linger_s: float = 0.0, concurrency: int = 1):
        self.run_batch = run_batch
        self.concurrency = max(1, int(concurrency))
        self.max_batch = max_batch if enabled else 1
        # wait up to linger_s for a batch to fill before running it: only while several threads are
        # calling (a lone stream never waits), and only until every recent caller has arrived
        self.linger_s = linger_s
        self._callers: dict[int, float] = {}  # thread -> when it last called
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._queues: OrderedDict[Hashable, list[_Pending]] = OrderedDict()  # by key, oldest first
        self._order: list[Hashable] = []  # keys in the order their first request arrived
        self._running = 0  # batches running now

    def call(self, key: Hashable, request: Any) -> Any:
        me = _Pending(request)
        with self._cond:
            if self.linger_s > 0:
                now = time.monotonic()
                self._callers[threading.get_ident()] = now
                if len(self._callers) > 64:
                    self._callers = {k: t for k, t in self._callers.items() if now - t < 1.0}
            self._queues.setdefault(key, []).append(me)
            self._order.append(key)
            if self.linger_s > 0:
                self._cond.notify_all()  # a lingering runner may be waiting for this one
            while not me.done:
                if self._running >= self.concurrency or not self._order:
                    self._cond.wait()
                    continue
                self._running += 1
                self._linger()
                batch = self._take()
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running -= 1
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error
        return me.result

    def _linger(self) -> None:  # with the lock held
        if self.linger_s <= 0 or self.max_batch <= 1 or not self._order:
            return
        now = time.monotonic()
        recent = sum(1 for t in self._callers.values() if now - t < 1.0)
        want = min(self.max_batch, recent)
        deadline = now + self.linger_s
        while (self._order and len(self._queues[self._order[0]]) < want
               and time.monotonic() < deadline):
            self._cond.wait(max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[_Pending]:
        if not self._order:  # another runner took them while this one lingered
            return []
        key = self._order[0]
        queue = self._queues[key]
        batch, rest = queue[: self.max_batch], queue[self.max_batch :]
        for _ in batch:
            self._order.remove(key)
        if rest:
            self._queues[key] = rest
        else:
            del self._queues[key]
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            results = self.run_batch([p.request for p in batch])
            for p, r in zip(batch, results):
                p.result = r
        except BaseException as exc:  # every caller in the batch sees the failure
            for p in batch:
                p.error = exc
        for p in batch:
            p.done = True
        s = self.stats
        s.calls += 1
        s.requests += len(batch)
        s.largest = max(s.largest, len(batch))
        s.sizes[len(batch)] = s.sizes.get(len(batch), 0) + 1


class SharedExclusive:
    """A readers-writer lock: any number of `shared()` holders at once, or one `exclusive()`
    holder alone (waiting exclusive holders go first, so they are not starved)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
