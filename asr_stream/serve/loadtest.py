"""`asr-stream loadtest`: how many real-time streams this box holds.

N sessions of continuous real speech (files joined end to end, each session starting at a
different file, starts staggered) are fed at wall-clock rate into one `MultiStreamScheduler`
over shared engines. For each N it reports partial and final latency (p50/p95), the CPU per
stream, the process's RSS, dropped audio, skipped partials and how well calls batched; the
largest N whose final p95 and drops meet the targets is the box's capacity.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from asr_stream import SAMPLE_RATE, resources
from asr_stream.errors import UserError
from asr_stream.chain.many_streams import MultiStreamScheduler, warm_up  # noqa: F401  (the CLI's loadtest uses it)
from asr_stream.output.stats import RollingLatency

TICK_S = 0.02  # a real-time source delivers 20 ms at a time


@dataclass
class Targets:
    final_p95_s: float = 1.5
    max_dropped_s: float = 0.0


@dataclass
class LoadResult:
    streams: int
    audio_seconds: float  # per stream
    partial_p50_s: float | None
    partial_p95_s: float | None
    final_p50_s: float | None
    final_p95_s: float | None
    words: int  # committed words timed
    cpu_per_stream: float  # process CPU seconds per second of one stream's audio
    cores_used: float  # process CPU seconds per wall second
    rss_mb: float  # the process's largest resident memory during the run
    dropped_seconds: float
    skipped_partials: int
    errors: list[str]
    mean_batch: float | None  # requests per model call, over the run
    drain_seconds: float  # after the last audio, until every session's last final
    holds: bool = False
    batch: dict = field(default_factory=dict)
    client_cpu_per_stream: float | None = None  # --server: this client's own CPU, on the same machine
    stage_s_per_stream: dict = field(default_factory=dict)  # seconds in each stage per second of one stream's audio

    def as_dict(self) -> dict:
        return asdict(self)


def speech_tracks(files: list[str | Path], n: int, seconds: float) -> list[np.ndarray]:
    """N tracks of `seconds` of continuous speech: the files end to end, track i starting at
    file i (so no two neighbours say the same thing at the same time)."""
    from asr_stream.io.audio_files import load_16k

    clips = [load_16k(Path(f)) for f in files]
    clips = [c for c in clips if len(c)]
    if not clips:
        raise UserError("loadtest: no audio in the given files")
    need = int(seconds * SAMPLE_RATE)
    tracks = []
    for i in range(n):
        parts, total, k = [], 0, i
        while total < need:
            parts.append(clips[k % len(clips)])
            total += len(parts[-1])
            k += 1
        tracks.append(np.concatenate(parts)[:need].astype(np.float32))
    return tracks


def default_files() -> list[Path]:
    files = [resources.sample_wav()]
    try:
        import pytest_audioeval

        folder = Path(list(pytest_audioeval.__path__)[0]) / "samples" / "audio" / "en"
        files += sorted(folder.glob("*.wav"))
    except ImportError:
        pass
    if not files:
        raise UserError("loadtest: give speech files with --audio FILE ...")
    return files


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batchers(engines) -> list:
    out = []
    for engine in (engines.denoiser, engines.recognizer):
        for obj in (engine, getattr(engine, "decoder", None)):
            for name in ("batcher", "onnx_batcher"):
                b = getattr(obj, name, None)
                if b is not None:
                    out.append(b)
    return out


def run_load(engines, tracks: list[np.ndarray], stagger_s: float = 1.0, workers: int = 4,
             max_backlog_s: float = 4.0, targets: Targets = Targets(), drain_timeout_s: float = 60.0) -> LoadResult:
    """Feed every track as one real-time session, all at once (starts spread over `stagger_s`)."""
    n = len(tracks)
    scheduler = MultiStreamScheduler(engines, workers=workers, max_backlog_s=max_backlog_s)
    batchers = _batchers(engines)
    before = [(b.stats.calls, b.stats.requests) for b in batchers]
    sessions = [scheduler.open_stream(on_hypothesis=lambda s, h: None) for _ in range(n)]
    starts = [i * stagger_s / max(1, n) for i in range(n)]
    fed = [0] * n
    rss = _rss_mb()
    cpu0, t0 = time.process_time(), time.monotonic()
    last_rss_check = t0
    try:
        while True:
            now = time.monotonic() - t0
            active = False
            for i, (session, track) in enumerate(zip(sessions, tracks)):
                if fed[i] >= len(track):
                    continue
                active = True
                due = min(len(track), int(max(0.0, now - starts[i]) * SAMPLE_RATE))
                due = due // int(TICK_S * SAMPLE_RATE) * int(TICK_S * SAMPLE_RATE) if due < len(track) else due
                if due > fed[i]:
                    session.accept_waveform(track[fed[i]:due])
                    fed[i] = due
                    if fed[i] >= len(track):
                        session.finish()
            if not active:
                break
            if time.monotonic() - last_rss_check > 1.0:
                rss, last_rss_check = max(rss, _rss_mb()), time.monotonic()
            time.sleep(max(0.0, TICK_S - (time.monotonic() - t0 - now)))
        fed_at = time.monotonic()
        deadline = fed_at + drain_timeout_s
        for s in sessions:
            s.closed.wait(max(0.0, deadline - time.monotonic()))
        drained = time.monotonic()
        rss = max(rss, _rss_mb())
        wall, cpu = drained - t0, time.process_time() - cpu0
    finally:
        scheduler.close()
    partial, final = RollingLatency(), RollingLatency()
    errors = []
    for s in sessions:
        partial.merge(s.latency.partial)
        final.merge(s.latency.final)
        if s.error is not None:
            errors.append(f"session {s.id}: {s.error}")
        elif not s.closed.is_set():
            errors.append(f"session {s.id}: not finished {drain_timeout_s:g} s after its audio ended")
    audio_s = len(tracks[0]) / SAMPLE_RATE
    calls = sum(b.stats.calls - c for b, (c, _) in zip(batchers, before))
    requests = sum(b.stats.requests - r for b, (_, r) in zip(batchers, before))
    result = LoadResult(
        streams=n, audio_seconds=round(audio_s, 2),
        partial_p50_s=partial.percentile(50), partial_p95_s=partial.percentile(95),
        final_p50_s=final.percentile(50), final_p95_s=final.percentile(95), words=final.n,
        cpu_per_stream=round(cpu / (n * audio_s), 4), cores_used=round(cpu / wall, 3), rss_mb=round(rss, 1),
        dropped_seconds=round(sum(s.dropped_samples for s in sessions) / SAMPLE_RATE, 3),
        skipped_partials=sum(int(getattr(s.recognizer, "skipped_partials", 0)) for s in sessions),
        errors=errors, mean_batch=round(requests / calls, 3) if calls else None,
        drain_seconds=round(drained - fed_at, 3), batch={"calls": calls, "requests": requests},
        stage_s_per_stream={stage: round(sum(s.stage_busy_s[stage] for s in sessions) / (n * audio_s), 4)
                            for stage in ("denoiser", "recognizer")})
    result.holds = (not errors and result.dropped_seconds <= targets.max_dropped_s and result.final_p95_s is not None
                    and result.final_p95_s <= targets.final_p95_s)
    return result


def find_capacity(run, max_streams: int = 64, ladder: list[int] | None = None, log=print) -> tuple[int, list[LoadResult]]:
    """The largest N for which `run(N)` holds: the given ladder, or doubling from 1 until a run
    fails and then halving the gap. Returns (capacity, every result in the order run)."""
    results: dict[int, LoadResult] = {}

    def probe(n: int) -> bool:
        if n not in results:
            results[n] = run(n)
            log(format_result(results[n]))
        return results[n].holds

    if ladder:
        for n in ladder:
            probe(n)
        held = [n for n in ladder if results[n].holds]
        return (max(held) if held else 0), list(results.values())
    good, bad, n = 0, None, 1
    while n <= max_streams:
        if probe(n):
            good, n = n, n * 2
        else:
            bad = n
            break
    if bad is None:
        return good, list(results.values())
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if probe(mid) else (good, mid)
    return good, list(results.values())


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f}"


HEADER = ("streams  partial p50/p95 ms  final p50/p95 ms  CPU/stream  cores  RSS MB  dropped s  "
          "skipped partials  batch  holds")


def format_result(r: LoadResult) -> str:
    batch = "-" if r.mean_batch is None else f"{r.mean_batch:.2f}"
    line = (f"{r.streams:7d}  {_ms(r.partial_p50_s):>7}/{_ms(r.partial_p95_s):<9}  {_ms(r.final_p50_s):>7}/"
            f"{_ms(r.final_p95_s):<7}  {r.cpu_per_stream:10.3f}  {r.cores_used:5.2f}  {r.rss_mb:6.0f}  "
            f"{r.dropped_seconds:9.2f}  {r.skipped_partials:16d}  {batch:>5}  {'yes' if r.holds else 'no'}")
    if r.errors:
        line += f"  ({len(r.errors)} failed: {r.errors[0]})"
    return line


# -- against a running daemon (`asr-stream loadtest --server URL`) ------------------------
def _metric_samples(server: str):
    """Every sample on the daemon's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from asr_stream.serve.remote import http_url

    try:
        with urllib.request.urlopen(http_url(server, "/metrics"), timeout=10) as r:
            text = r.read().decode()
    except OSError as exc:
        raise UserError(f"cannot read {http_url(server, '/metrics')}: {exc}") from None
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(server: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of the named samples on the daemon's /metrics."""
    out = dict.fromkeys(names, 0.0)
    for sample in _metric_samples(server):
        if sample.name in out:
            out[sample.name] += sample.value
    return out


def readyz(server: str) -> dict:
    """The daemon's /readyz body (answered with 503 too, while it is loading, full or behind)."""
    import json
    import urllib.error
    import urllib.request

    from asr_stream.serve.remote import http_url

    try:
        with urllib.request.urlopen(http_url(server, "/readyz"), timeout=10) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError as exc:
        raise UserError(f"cannot read {http_url(server, '/readyz')}: {exc}") from None
    try:
        out = json.loads(body)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def server_chain(server: str) -> dict:
    """The chain the daemon runs, from its /readyz."""
    return readyz(server).get("chain") or {}


SERVER_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes",
                  "asr_stream_worker_cpu_seconds_total", "asr_stream_worker_resident_memory_bytes")


def stage_busy(server: str) -> dict[str, float]:
    """Seconds the daemon's sessions have spent in each stage (its asr_stream_stage_busy_seconds)."""
    return {sample.labels["stage"]: sample.value for sample in _metric_samples(server)
            if sample.name == "asr_stream_stage_busy_seconds_total"}


def daemon_usage(server: str) -> tuple[float, float]:
    """(CPU seconds, resident bytes) of the daemon and its worker processes together."""
    m = scrape(server, SERVER_METRICS)
    return (m["process_cpu_seconds_total"] + m["asr_stream_worker_cpu_seconds_total"],
            m["process_resident_memory_bytes"] + m["asr_stream_worker_resident_memory_bytes"])


async def remote_session(http, server: str, track: np.ndarray, delay: float, token: str | None) -> dict:
    import asyncio
    import json

    import aiohttp

    from asr_stream.serve import protocol as p
    from asr_stream.serve.remote import connect
    from asr_stream.chain.one_stream import ChainClock
    from asr_stream.output.stats import LatencyTracker

    await asyncio.sleep(delay)
    latency, clock = LatencyTracker(), ChainClock(keep_s=None)
    out = {"latency": latency, "summary": None, "error": None, "fed_at": None, "last_at": None}
    try:
        ws, _ = await connect(http, server, p.StreamParams(pace="live"), token)
    except Exception as exc:  # a refused or broken session is a result, not a crash of the test
        out["error"] = str(exc)
        return out
    tick = int(TICK_S * SAMPLE_RATE)

    async def send():
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(track), tick)):
            await asyncio.sleep(max(0.0, t0 + k * TICK_S - time.monotonic()))
            piece = track[i : i + tick]
            clock.mark(i + len(piece), time.monotonic())
            await ws.send_bytes(p.encode_pcm(piece, "s16le"))
        out["fed_at"] = time.monotonic()
        await ws.send_str(json.dumps({"type": "end"}))

    sender = asyncio.create_task(send())
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data["type"] in ("partial", "final"):
                hyp = p.hypothesis_from_message(data, emitted_at=time.monotonic())
                latency.observe(hyp, clock.arrival_of)
                out["last_at"] = hyp.emitted_at
            elif data["type"] == "end":
                out["summary"] = data["summary"]
            elif data["type"] == "error":
                out["error"] = data["message"]
    except (aiohttp.ClientError, ConnectionError) as exc:
        out["error"] = str(exc)
    finally:
        if not sender.done():
            sender.cancel()
        await ws.close()
    if out["summary"] is None and out["error"] is None:
        out["error"] = f"closed without an end (close {ws.close_code})"
    return out


def run_remote_load(server: str, tracks: list[np.ndarray], stagger_s: float = 1.0, token: str | None = None,
                    targets: Targets = Targets()) -> LoadResult:
    """`run_load`, through a daemon: N WebSocket sessions fed at wall-clock rate; latency as the
    clients see it (network and all), CPU and RSS (the daemon's and its workers') from /metrics."""
    import asyncio

    import aiohttp

    n = len(tracks)
    cpu_before, rss = daemon_usage(server)
    busy_before = stage_busy(server)

    async def main():
        nonlocal rss
        async with aiohttp.ClientSession() as http:
            jobs = [asyncio.create_task(remote_session(http, server, t, i * stagger_s / max(1, n), token))
                    for i, t in enumerate(tracks)]
            while not all(j.done() for j in jobs):
                await asyncio.wait(jobs, timeout=1.0)
                rss = max(rss, (await asyncio.to_thread(daemon_usage, server))[1])
            return [j.result() for j in jobs]

    t0, client0 = time.monotonic(), time.process_time()
    results = asyncio.run(main())
    wall, client_cpu = time.monotonic() - t0, time.process_time() - client0
    cpu_after, rss_after = daemon_usage(server)
    cpu = cpu_after - cpu_before
    busy = {k: v - busy_before.get(k, 0.0) for k, v in stage_busy(server).items()}
    partial, final = RollingLatency(), RollingLatency()
    errors, dropped, skipped, drains = [], 0, 0, []
    for i, r in enumerate(results):
        partial.merge(r["latency"].partial)
        final.merge(r["latency"].final)
        if r["error"]:
            errors.append(f"session {i}: {r['error']}")
        if r["summary"]:
            dropped += r["summary"].get("dropped_samples", 0)
            skipped += r["summary"].get("skipped_partials", 0)
        if r["fed_at"] and r["last_at"]:
            drains.append(max(0.0, r["last_at"] - r["fed_at"]))
    audio_s = len(tracks[0]) / SAMPLE_RATE
    result = LoadResult(
        streams=n, audio_seconds=round(audio_s, 2),
        partial_p50_s=partial.percentile(50), partial_p95_s=partial.percentile(95),
        final_p50_s=final.percentile(50), final_p95_s=final.percentile(95), words=final.n,
        cpu_per_stream=round(cpu / (n * audio_s), 4), cores_used=round(cpu / wall, 3),
        rss_mb=round(max(rss, rss_after) / 2**20, 1),
        dropped_seconds=round(dropped / SAMPLE_RATE, 3), skipped_partials=int(skipped), errors=errors,
        mean_batch=None, drain_seconds=round(max(drains, default=0.0), 3),
        client_cpu_per_stream=round(client_cpu / (n * audio_s), 4),
        stage_s_per_stream={k: round(v / (n * audio_s), 4) for k, v in busy.items()})
    result.holds = (not errors and result.dropped_seconds <= targets.max_dropped_s and result.final_p95_s is not None
                    and result.final_p95_s <= targets.final_p95_s)
    return result
