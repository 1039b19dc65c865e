"""Rewrite one benchmark's section of BENCHMARKS.md in place, between its two markers, so each
benchmark script owns its section and leaves the others alone."""

from __future__ import annotations

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
