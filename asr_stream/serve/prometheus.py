"""The daemon's Prometheus metrics (`GET /metrics`), in a registry of the server's own so that
several servers in one process (tests) keep separate counts."""

from __future__ import annotations

import gc
import tracemalloc

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics,
                               generate_latest)
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 (the server sends it)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from asr_stream.runtime.proc import process_usage

disable_created_metrics()  # the *_created series add nothing a scrape needs

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.sessions_active = Gauge("asr_stream_sessions_active", "Sessions open now", registry=r)
        self.sessions_total = Counter("asr_stream_sessions", "Sessions opened", registry=r)
        self.sessions_rejected = Counter("asr_stream_sessions_rejected", "Handshakes and sessions refused",
                                         ["reason"], registry=r)
        self.sessions_ended = Counter("asr_stream_sessions_ended", "Sessions ended, by how they ended",
                                      ["reason"], registry=r)
        self.audio_seconds = Counter("asr_stream_audio_seconds", "Seconds of audio received (16 kHz timeline)",
                                     registry=r)
        self.dropped_samples = Counter("asr_stream_dropped_samples",
                                       "16 kHz samples dropped because a live session fell behind", registry=r)
        self.skipped_partials = Counter("asr_stream_skipped_partials",
                                        "Partial decodes skipped by sessions behind real time", registry=r)
        self.latency = {kind: Histogram(f"asr_stream_{kind}_latency_seconds",
                                        f"From a word's audio arriving to its first {kind} showing",
                                        buckets=LATENCY_BUCKETS, registry=r)
                        for kind in ("partial", "final")}
        self.stage_busy = Counter("asr_stream_stage_busy_seconds", "Worker seconds spent in each stage",
                                  ["stage"], registry=r)
        self.ready = Gauge("asr_stream_ready", "1 when engines are loaded and the server is not draining",
                           registry=r)
        self.max_sessions = Gauge("asr_stream_max_sessions", "The session limit: measured for the chain, at most --max-sessions", registry=r)
        # for finding what grows in a long-running daemon: run it with PYTHONTRACEMALLOC=1
        self.traced_bytes = Gauge("asr_stream_python_traced_bytes",
                                  "Python allocations alive after a collection (only with PYTHONTRACEMALLOC=1)",
                                  registry=r)
        for reason in ("capacity", "draining", "loading", "unauthorized", "origin", "bad_request"):
            self.sessions_rejected.labels(reason)  # every reason shows, at 0, from the start
        for stage in ("denoiser", "recognizer"):
            self.stage_busy.labels(stage)

    def watch_workers(self, pool) -> None:
        """Report the worker processes' CPU, memory and restarts beside the daemon's own."""
        self.registry.register(WorkerCollector(pool))

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.latency[kind].observe(max(0.0, seconds))

    def render(self) -> bytes:
        if tracemalloc.is_tracing():  # what is retained, not what awaits collection
            gc.collect()
            self.traced_bytes.set(tracemalloc.get_traced_memory()[0])
        return generate_latest(self.registry)


class WorkerCollector:
    """CPU seconds and resident memory of each live worker process, read from /proc at scrape
    time (a restarted worker starts again from 0), and how many restarts there were."""

    def __init__(self, pool):
        self.pool = pool

    def describe(self):
        return []  # collected only at scrape time: the workers come and go

    def collect(self):
        cpu = CounterMetricFamily("asr_stream_worker_cpu_seconds", "CPU seconds of each live worker process",
                                  labels=["worker"])
        rss = GaugeMetricFamily("asr_stream_worker_resident_memory_bytes", "Resident memory of each worker process",
                                labels=["worker"])
        for w in list(self.pool.workers):
            usage = process_usage(w.pid) if w.pid else None
            if usage is None:
                continue  # gone (or not Linux)
            cpu.add_metric([str(w.index)], usage.cpu_s)
            rss.add_metric([str(w.index)], usage.rss_bytes)
        yield cpu
        yield rss
        restarts = CounterMetricFamily("asr_stream_worker_restarts", "Worker processes started again after dying")
        restarts.add_metric([], self.pool.restarts)
        yield restarts


def refusal_reason(state: str) -> str:
    """The metrics label of a refusal in `state` (restarting counts as loading)."""
    return {"full": "capacity", "behind": "capacity", "draining": "draining"}.get(state, "loading")
