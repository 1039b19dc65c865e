"""What a process has used, read from /proc: the daemon's metrics and its admission both count
the CPU of its worker processes, which the interpreter's own clocks cannot see."""

from __future__ import annotations

import os
from typing import NamedTuple

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Usage(NamedTuple):
    cpu_s: float  # user + system CPU seconds since the process started
    rss_bytes: int  # resident memory now


def process_usage(pid: int) -> Usage | None:
    """None when the process is gone (or where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    except OSError:
        return None
    return Usage((int(fields[11]) + int(fields[12])) / _TICK, int(fields[21]) * _PAGE)
