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
`--max-sessions` is always the ceiling. Whatever the limit, a new session is also refused while
a live session already open is more than `BEHIND_S` behind its audio: the box is full now.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from asr_stream.errors import UserError
from asr_stream.runtime.threads import usable_cores

BUSY_SHARE = 0.8  # the share of the cores sessions may keep busy (the rest: sockets, bursts)
BEHIND_S = 2.0  # a live session this far behind its audio is late with its finals: take no one new


@dataclass(frozen=True)
class Capacity:
    sessions: int
    source: str  # where the number comes from (for /readyz and the log)
    session_cost: float | None = None  # measured CPU s per audio s of one session (auto)


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
    return _capped(estimate, ceiling, source, cost_per_audio_s)


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
    return _capped(max(1, held), ceiling, source)


def fixed(ceiling: int) -> Capacity:
    return Capacity(ceiling, "--max-sessions")


def _capped(sessions: int, ceiling: int, source: str, cost: float | None = None) -> Capacity:
    if sessions > ceiling:
        return Capacity(ceiling, f"{source}; --max-sessions {ceiling} caps it", cost)
    return Capacity(sessions, source, cost)


def behind(backlogs_s: list[float]) -> bool:
    """Is a live session so far behind its audio that the box is full now?"""
    return any(b > BEHIND_S for b in backlogs_s)
