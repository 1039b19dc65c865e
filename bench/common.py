"""What the benchmark scripts share: each rewrites only its own section of BENCHMARKS.md, and
each describes the machine the same way."""

from __future__ import annotations

import os
from pathlib import Path


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace the text from `begin` to `end` with `section` (which carries both markers), or
    append it when the markers are absent."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        i, j = text.find(begin), text.find(end)
        if i != -1 and j != -1 and j > i:
            text = text[:i] + section.rstrip("\n") + text[j + len(end):]
        else:
            text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    else:
        text = "# Benchmarks\n\n" + section
    path.write_text(text, encoding="utf-8")


def cpu_and_cores() -> tuple[str, int | None]:
    """The CPU's model name (from /proc/cpuinfo) and how many cores this process may use."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return cpu, usable


def load_16k(path: Path):
    """A sound file as 16 kHz mono float32: the product's own loader (julius resampling, as the chain does)."""
    from asr_stream.io.audio_files import load_16k as _load

    return _load(Path(path))


def save_plot(fig, path: Path) -> None:
    """Lay out a matplotlib figure, write it (110 dpi, folders made) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
