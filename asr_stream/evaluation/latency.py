"""Caption latency against reference word times, from the audio timeline.

For each reference word (its end time in the clip), the latency is the wall-clock delay from
the moment the audio of that word's end entered the chain until a matching word first showed
in a hypothesis (partial latency) and until it was committed: stable in a partial, or final
(final latency). A hypothesis word matches a reference word when their normalised texts are
equal and their times overlap within a tolerance; reference words never matched are counted as
missed, not timed.

Reference word times come from an offline recogniser pass over the clean clip with word
timestamps (`reference_words`: Whisper tiny.en through faster-whisper, whose word times come
from its cross-attention alignment), computed once per clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from asr_stream.stages import Hypothesis


def word_key(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower()).strip("'")


@dataclass(frozen=True)
class RefWord:
    text: str
    start: float
    end: float


def reference_words(audio: np.ndarray, model=None) -> list[RefWord]:
    """Words and their times in a 16 kHz clip, from Whisper's offline pass with word timestamps."""
    model = model or whisper_model()
    segments, _ = model.transcribe(audio, language="en", beam_size=1, word_timestamps=True,
                                   condition_on_previous_text=False, vad_filter=False)
    return [RefWord(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])
            if word_key(w.word)]


_whisper = None


def whisper_model():
    global _whisper
    if _whisper is None:
        from faster_whisper import WhisperModel

        from asr_stream.recognizers.whisper import bundled_model_path
        from asr_stream.runtime.threads import configure_threads

        configure_threads(1)  # computed as the chain computes it (one BLAS thread)
        _whisper = WhisperModel(bundled_model_path(), device="cpu", compute_type="int8", cpu_threads=1)
    return _whisper


@dataclass
class WordLatency:
    """Follows one clip's hypotheses; `observe` each as it arrives."""

    refs: list[RefWord]
    tolerance_s: float = 0.5
    partial_at: dict[int, float] = field(default_factory=dict)  # ref index -> wall time first shown
    final_at: dict[int, float] = field(default_factory=dict)  # ref index -> wall time committed

    def __post_init__(self):
        self._keys = [word_key(r.text) for r in self.refs]

    def _match(self, word) -> int | None:
        key = word_key(word.text)
        best, best_gap = None, None
        for i, ref in enumerate(self.refs):
            if self._keys[i] != key:
                continue
            gap = max(ref.start - word.end, word.start - ref.end, 0.0)  # 0 when they overlap
            if gap <= self.tolerance_s and (best_gap is None or gap < best_gap):
                best, best_gap = i, gap
        return best

    def observe(self, hyp: Hypothesis) -> None:
        committed = len(hyp.words) if hyp.final else hyp.stable
        for n, word in enumerate(hyp.words):
            i = self._match(word)
            if i is None:
                continue
            self.partial_at.setdefault(i, hyp.emitted_at)
            if n < committed:
                self.final_at.setdefault(i, hyp.emitted_at)

    def delays(self, arrival_of) -> dict:
        """{'partial': [...], 'final': [...], 'missed': n} in seconds; `arrival_of(t)` is the
        wall time the audio at clip time t entered the chain."""
        out = {"partial": [], "final": [], "missed": 0}
        for i, ref in enumerate(self.refs):
            arrived = arrival_of(ref.end)
            if i not in self.partial_at or arrived is None:
                out["missed"] += 1
                continue
            out["partial"].append(self.partial_at[i] - arrived)
            if i in self.final_at:
                out["final"].append(self.final_at[i] - arrived)
        return out


def distribution(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    v = np.asarray(values)
    return {"n": len(v), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "max": float(v.max())}
