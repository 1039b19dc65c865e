"""The two stage interfaces every denoiser and recognizer implements.

Everything downstream (scheduler, captions, outputs, stats) talks to these and nothing else,
so a new denoiser or recognizer plugs in without touching the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Word:
    """A recognised word; times are seconds on the input's timeline (0 = first input sample)."""

    text: str
    start: float
    end: float
    glued: bool = False  # continues the word before it with no space between ("sun" + "light")


ATTACH_LEFT = set(".,;:!?%)]}\"'”’…。，、！？：；")


def join_words(words) -> str:
    """Words (`Word`s or strings) as caption text: single spaces; a word that is only closing
    punctuation ("," or ".") or that continues the word before it (`glued`) is attached to it."""
    out = ""
    for w in words:
        t = (w if isinstance(w, str) else w.text).strip()
        if not t:
            continue
        if out and all(c in ATTACH_LEFT for c in t):
            if out[-1] not in ATTACH_LEFT:  # "dinner" + "," -> "dinner,"; "types." + "." stays "types."
                out += t
        elif out and getattr(w, "glued", False):
            out += t
        else:
            out += " " + t if out else t
    return out


@dataclass(frozen=True)
class Hypothesis:
    """The recogniser's current view of one utterance.

    `words[:stable]` are committed: no later hypothesis of this utterance changes them.
    A final hypothesis (`final=True`) closes the utterance and has every word stable.
    """

    utterance: int
    words: tuple[Word, ...]
    stable: int
    final: bool
    emitted_at: float = field(default=0.0, compare=False)  # time.monotonic() when produced

    @property
    def text(self) -> str:
        return join_words(self.words)

    @property
    def start(self) -> float:
        return self.words[0].start if self.words else 0.0

    @property
    def end(self) -> float:
        return self.words[-1].end if self.words else 0.0


@runtime_checkable
class Denoiser(Protocol):
    """Hops in, hops out, at 16 kHz.

    `process` takes a whole number of hops (`hop_size` samples each; the chain hands up to
    100 ms at once, which costs far less per sample than hop by hop) and returns whatever
    denoised audio is ready; the output is aligned with the input (its first sample is the first input
    sample), so its total length equals the input's once `flush` has returned the tail.
    """

    name: str
    hop_size: int
    latency_s: float  # algorithmic latency: how much later than the input the output is ready

    def process(self, hop: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...

    def reset(self) -> None: ...


@runtime_checkable
class Recognizer(Protocol):
    """Audio in, hypotheses out (the sherpa-onnx / whisper_streaming contract).

    `accept_waveform` only buffers; `decode` does whatever work is due and returns new
    hypotheses; `finish` flushes the end of the stream as final hypotheses; `reset` starts a
    new stream.
    """

    name: str

    def accept_waveform(self, samples: np.ndarray) -> None: ...

    def decode(self) -> list[Hypothesis]: ...

    def finish(self) -> list[Hypothesis]: ...

    def reset(self) -> None: ...


@runtime_checkable
class DenoiserEngine(Protocol):
    """A loaded denoiser: read-only, shared by every stream; `create_stream()` gives one
    session's `Denoiser` (all per-session state), cheap to make."""

    name: str

    def create_stream(self) -> Denoiser: ...


@runtime_checkable
class RecognizerEngine(Protocol):
    """A loaded recogniser model, shared by every stream; `create_stream()` gives one session's
    `Recognizer`."""

    name: str

    def create_stream(self) -> Recognizer: ...


class FactoryEngine:
    """An engine for a stage that has no model to share: every stream is built by `make()`
    (plugins' `module:factory`, and stages whose runtime keeps its model inside each state)."""

    def __init__(self, make, first=None):
        first = make() if first is None else first  # built now, so a stage that cannot load fails at load time
        self.name = first.name
        self._make = make
        self._first = [first]

    def create_stream(self):
        return self._first.pop() if self._first else self._make()

    @classmethod
    def of(cls, factory, options: dict):
        """A plugin factory's engine: the factory may return an engine (`create_stream`) or a stage;
        a stage means the factory is called once per stream."""
        made = factory(**options)
        if hasattr(made, "create_stream"):
            return made
        return cls(lambda: factory(**options), first=made)
