"""Writes final captions to a file as they come, chosen by extension: .jsonl, .srt, .vtt, .txt.

Each final is written and flushed at once, so an interrupted run keeps everything said so far.
"""

from __future__ import annotations

import json
from pathlib import Path

from asr_stream.errors import UserError
from asr_stream.stages import Hypothesis

FORMATS = (".jsonl", ".srt", ".vtt", ".txt")


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_cue(n: int, hyp: Hypothesis) -> str:
    """The `n`-th (from 1) SubRip cue: one final."""
    return f"{n}\n{_stamp(hyp.start, ',')} --> {_stamp(hyp.end, ',')}\n{hyp.text}\n\n"


def vtt_cue(hyp: Hypothesis) -> str:
    """One WebVTT cue (after the file's "WEBVTT" header): one final."""
    return f"{_stamp(hyp.start, '.')} --> {_stamp(hyp.end, '.')}\n{hyp.text}\n\n"


class CaptionWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in FORMATS:
            raise UserError(f"--output: unsupported extension '{self.path.suffix}' (use {', '.join(FORMATS)})")
        try:
            self._f = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--output: cannot write {self.path}: {exc.strerror}") from None
        self._n = 0
        if self.kind == ".vtt":
            self._f.write("WEBVTT\n\n")

    def write(self, hyp: Hypothesis, extra: dict | None = None) -> None:
        """One final; `extra` adds fields to its JSONL record (the other formats have no room)."""
        if not hyp.final or not hyp.words:
            return
        self._n += 1
        if self.kind == ".jsonl":
            record = {"start": hyp.start, "end": hyp.end, "text": hyp.text,
                      "words": [{"text": w.text, "start": w.start, "end": w.end} for w in hyp.words],
                      **(extra or {})}
            self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.kind == ".srt":
            self._f.write(srt_cue(self._n, hyp))
        elif self.kind == ".vtt":
            self._f.write(vtt_cue(hyp))
        else:
            self._f.write(hyp.text + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
