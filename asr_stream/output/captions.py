"""Live captions on the terminal.

On a TTY the current partial is redrawn in place (committed words plain, tentative words
dim) and each final is committed on its own line; elsewhere (a pipe, a file) only finals
are printed, one per line, so the output is easy to post-process.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from asr_stream.stages import ATTACH_LEFT, Hypothesis, join_words


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}" if h else f"{m:02d}:{s:06.3f}"


def final_line(hyp: Hypothesis, timestamps: bool) -> str:
    return f"[{_clock(hyp.start)} --> {_clock(hyp.end)}] {hyp.text}" if timestamps else hyp.text


class Captions:
    def __init__(self, stream: TextIO | None = None, timestamps: bool = False, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.timestamps = timestamps
        self.live = self.stream.isatty() if live is None else live
        self._live: Live | None = None
        if self.live:
            self._console = Console(file=self.stream, highlight=False, soft_wrap=False)
            self._live = Live(Text(""), console=self._console, auto_refresh=False, transient=True)
            self._live.start()

    def update(self, hyp: Hypothesis) -> None:
        if hyp.final:
            self.commit(hyp)
        elif self._live is not None:
            stable = join_words(hyp.words[: hyp.stable])
            text = Text(stable)
            tentative = join_words(hyp.words[hyp.stable :])
            if tentative:
                first = hyp.words[hyp.stable]
                glue = "" if not stable or first.glued or tentative[0] in ATTACH_LEFT else " "
                text.append(glue + tentative, style="dim")
            self._live.update(text, refresh=True)

    def commit(self, hyp: Hypothesis) -> None:
        if self._live is not None:
            self._live.update(Text(""), refresh=True)
            if hyp.words:
                self._console.print(final_line(hyp, self.timestamps), markup=False)
        elif hyp.words:
            print(final_line(hyp, self.timestamps), file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
