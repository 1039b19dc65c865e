"""How many sessions the daemon takes: a limit measured for the chain it runs, and a live check
that the sessions it holds keep up.

A fixed `--max-sessions` is either too low for a cheap chain or lets a costly one take sessions
it cannot serve, and then every session's captions fall behind. So the limit comes from a
measurement of this chain on this machine:
- `--capacity auto` (the default): after the warm-up, one session of the bundled speech sample
  is turned as live audio turns it (`many_streams.session_cost`) and its CPU time per second of
  audio taken; the limit is what the cores hold at `BUSY_SHARE` (an estimate: batching across
  sessions lets the box hold more; a live session's socket and pipe, which it leaves out, fewer);
- `--capacity FILE`: the sessions held in an `asr-stream loadtest --json FILE` run of the same
  chain on a machine with as many cores (the measurement the estimate stands in for);
- `--capacity off`: `--max-sessions` alone.
`--max-sessions` is always the ceiling. What a session costs depends on what it hears: in noise
the gated denoiser runs and Whisper decodes more (about twice the CPU of clean speech), which a
measurement at start on the clean sample cannot know. So while sessions run, `LiveCost` reads
the CPU the daemon and its workers spend per second of audio received, and a measured limit
(auto or a loadtest) is lowered to what that cost allows at `LIVE_BUSY_SHARE` (above
`BUSY_SHARE`: the live reading already counts the sockets and each session's set-up).
Whatever the limit, a new session is also refused while a live session already open is more
than `BEHIND_S` behind its audio.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from asr_stream.errors import UserError
from asr_stream.runtime.proc import process_usage
from asr_stream.runtime.threads import usable_cores

BUSY_SHARE = 0.8  # the share of the cores sessions may keep busy (the rest: sockets, bursts)
LIVE_BUSY_SHARE = 0.9  # the same, for live readings, which count the sockets and session set-up too
BEHIND_S = 2.0  # a live session this far behind its audio is late with its finals: take no one new


@dataclass(frozen=True)
class Capacity:
    sessions: int
    source: str  # where the number comes from (for /readyz and the log)
    session_cost: float | None = None  # measured CPU s per audio s of one session (auto)
    measured: bool = False  # from a measurement (auto, a loadtest): what live costs may lower


def describe_chain(settings, denoiser: str, recognizer: str) -> dict:
    """The chain as /readyz shows it and a capacity file records it."""
    model = settings.model or {"whisper": "tiny.en", "nemo": "an4_fastconformer_ctc"}.get(settings.asr, "")
    return {"denoiser": denoiser, "recognizer": recognizer, "model": os.path.basename(str(model).rstrip("/")),
            "language": settings.language, "gate": bool(settings.gate and denoiser != "none")}


def parse_mode(value: str) -> str:
    """`--capacity`: auto, off, or a loadtest JSON that exists (checked before any model loads)."""
    if value in ("auto", "off"):
        return value
    if not Path(value).is_file():
        raise UserError(f"--capacity: {value} is not a file (auto, off, or an 'asr-stream loadtest --json' file)")
    read_loadtest(value)
    return value


def read_loadtest(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--capacity: cannot read {path} as a loadtest JSON file: {exc}") from None
    held = data.get("capacity") if isinstance(data, dict) else None
    if not isinstance(held, int) or isinstance(held, bool) or held < 0 or not isinstance(data.get("chain"), dict):
        raise UserError(f"--capacity: {path} is not an 'asr-stream loadtest --json' file "
                        "(it needs its capacity and chain)")
    return data


def from_cost(cost_per_audio_s: float, ceiling: int, cores: int | None = None) -> Capacity:
    """The estimate: the cores this process may use, at `BUSY_SHARE`, over one session's CPU."""
    cores = cores or usable_cores()
    estimate = max(1, math.floor(cores * BUSY_SHARE / max(cost_per_audio_s, 1e-3)))
    source = (f"measured at start: one session takes {cost_per_audio_s:.2f} CPU s per audio s; "
              f"{cores} core{'s' if cores != 1 else ''} at {BUSY_SHARE:.0%} hold {estimate}")
    return _capped(estimate, ceiling, source, cost_per_audio_s, measured=True)


def from_loadtest(path: str, chain: dict, ceiling: int, cores: int | None = None) -> Capacity:
    """The sessions a loadtest of this chain held (on a machine with as many cores)."""
    data = read_loadtest(path)
    cores = cores or usable_cores()
    theirs = {k: data["chain"].get(k) for k in ("denoiser", "recognizer", "model", "gate")}
    ours = {k: chain.get(k) for k in theirs}
    if theirs != ours:
        differ = ", ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} here" for k in theirs if theirs[k] != ours[k])
        raise UserError(f"--capacity: {path} measured another chain ({differ})")
    if data.get("cores") not in (None, cores):
        raise UserError(f"--capacity: {path} was measured on {data['cores']} cores; this daemon has {cores}")
    held = data["capacity"]
    source = f"loadtest {os.path.basename(path)}: {held} session{'s' if held != 1 else ''} held"
    if held == 0:
        source += " (none met the targets; one is taken anyway)"
    return _capped(max(1, held), ceiling, source, measured=True)


def fixed(ceiling: int) -> Capacity:
    return Capacity(ceiling, "--max-sessions")


def _capped(sessions: int, ceiling: int, source: str, cost: float | None = None, measured: bool = False) -> Capacity:
    if sessions > ceiling:
        return Capacity(ceiling, f"{source}; --max-sessions {ceiling} caps it", cost, measured)
    return Capacity(sessions, source, cost, measured)


def behind(backlogs_s: list[float]) -> bool:
    """Is a live session so far behind its audio that the box is full now?"""
    return any(b > BEHIND_S for b in backlogs_s)


class LiveCost:
    """CPU seconds per second of audio received over the last `WINDOW_S`, counting this process
    and its worker processes (a worker started again counts from its start). No reading until
    `MIN_AUDIO_S` of audio came in within the window: too little audio says nothing."""

    WINDOW_S = 30.0
    MIN_AUDIO_S = 10.0

    def __init__(self):
        self.audio_s = 0.0  # received since start
        self.cpu_s = 0.0  # spent since the first sample, summed over the processes seen
        self._last: dict[int, float] = {}  # pid -> its CPU seconds at the last sample
        self._samples: deque[tuple[float, float, float]] = deque()  # (time, cpu_s, audio_s)

    def add_audio(self, seconds: float) -> None:
        self.audio_s += seconds

    def sample(self, worker_pids: list[int], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        readings = {os.getpid(): time.process_time()}
        for pid in worker_pids:
            usage = process_usage(pid)
            if usage is not None:
                readings[pid] = usage.cpu_s
        for pid, cpu in readings.items():
            self.cpu_s += max(0.0, cpu - self._last.get(pid, cpu))  # a process not seen before: from now on
        self._last = readings
        self._samples.append((now, self.cpu_s, self.audio_s))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.WINDOW_S:
            self._samples.popleft()  # keep one sample at or before the window's start

    def cost(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (_, cpu0, audio0), (_, cpu1, audio1) = self._samples[0], self._samples[-1]
        if audio1 - audio0 < self.MIN_AUDIO_S:
            return None
        return (cpu1 - cpu0) / (audio1 - audio0)


def lowered_by_live_cost(capacity: Capacity, live_cost: float | None, cores: int | None = None) -> Capacity:
    """A measured limit lowered to what the sessions' cost now allows; never raised (many sessions
    cost less each, batched, which the measured limit does not count on either)."""
    if live_cost is None or not capacity.measured:
        return capacity
    cores = cores or usable_cores()
    now = max(1, math.floor(cores * LIVE_BUSY_SHARE / max(live_cost, 1e-3)))
    if now >= capacity.sessions:
        return capacity
    return Capacity(now, f"measured live: sessions take {live_cost:.2f} CPU s per audio s now; "
                    f"{cores} core{'s' if cores != 1 else ''} at {LIVE_BUSY_SHARE:.0%} hold {now} "
                    f"(at start: {capacity.sessions})", capacity.session_cost, measured=True)
