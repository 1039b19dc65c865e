"""What a run measured: audio seconds, RTF (whole chain and per stage), caption latency,
drops. Latency is measured from the audio timeline: for each word, the time from when the
end of that word entered the chain until it first showed as a partial and until it was
committed (stable or final)."""

from __future__ import annotations

import json
import re
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.stages import Hypothesis


OPEN_UTTERANCES = 8  # utterances followed at once (a recogniser has one or two open)


def _key(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


def percentile(values, q: float) -> float | None:
    if isinstance(values, RollingLatency):
        return values.percentile(q)
    return float(np.percentile(values, q)) if len(values) else None


class RollingLatency:
    """Latencies of a session of any length in constant memory: a histogram of 5 ms bins up to
    60 s (longer ones in the last bin) for the percentiles, and the most recent values."""

    BIN_S = 0.005
    BINS = 12000

    def __init__(self, recent: int = 256):
        self.counts = np.zeros(self.BINS, np.int32)
        self.n = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=recent)

    def add(self, seconds: float) -> None:
        self.counts[min(self.BINS - 1, max(0, int(seconds / self.BIN_S)))] += 1
        self.n += 1
        self.total += seconds
        self.recent.append(seconds)

    def merge(self, other: "RollingLatency") -> None:
        self.counts += other.counts
        self.n += other.n
        self.total += other.total
        self.recent.extend(other.recent)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile, to the bin: the upper edge of the bin the rank falls in."""
        if not self.n:
            return None
        rank = max(1, int(np.ceil(q / 100 * self.n)))
        return float((np.searchsorted(np.cumsum(self.counts), rank) + 1) * self.BIN_S)

    def __len__(self) -> int:
        return self.n


@dataclass
class LatencyTracker:
    """Follows each word position of each utterance across hypotheses. Memory stays bounded:
    an utterance's bookkeeping is dropped once it is final, and latencies go to histograms."""

    partial: RollingLatency = field(default_factory=RollingLatency)
    final: RollingLatency = field(default_factory=RollingLatency)
    _first_seen: dict = field(default_factory=dict)  # utt -> {i: (key, emitted_at)}
    _committed: dict = field(default_factory=dict)  # utt -> words committed so far
    listener: Callable[[str, float], None] | None = field(default=None, compare=False)  # ("partial"|"final", s)

    def observe(self, hyp: Hypothesis, arrival_of) -> None:
        seen = self._first_seen.setdefault(hyp.utterance, {})
        for i, w in enumerate(hyp.words):
            if i not in seen or seen[i][0] != _key(w.text):
                seen[i] = (_key(w.text), hyp.emitted_at)
        done = self._committed.get(hyp.utterance, 0)
        stable = len(hyp.words) if hyp.final else hyp.stable
        for i in range(done, stable):
            w = hyp.words[i]
            arrived = arrival_of(w.end)
            if arrived is None:
                continue
            self.partial.add(seen[i][1] - arrived)
            self.final.add(hyp.emitted_at - arrived)
            if self.listener is not None:
                self.listener("partial", seen[i][1] - arrived)
                self.listener("final", hyp.emitted_at - arrived)
        self._committed[hyp.utterance] = max(done, stable)
        if hyp.final:
            self._first_seen.pop(hyp.utterance, None)
            self._committed.pop(hyp.utterance, None)
        while len(self._first_seen) > OPEN_UTTERANCES:  # never finalised (a failed stream): forget the oldest
            oldest = min(self._first_seen)
            self._first_seen.pop(oldest)
            self._committed.pop(oldest, None)

    def state_size(self) -> dict[str, int]:
        return {"open_utterances": len(self._first_seen),
                "tracked_words": sum(len(v) for v in self._first_seen.values()),
                "recent_latencies": len(self.partial.recent) + len(self.final.recent)}


def _cpu_seconds() -> float:
    return time.process_time()  # the whole process: native libraries run their own threads


def summarize(chain, latency: LatencyTracker, wall_seconds: float, pace: str) -> dict:
    audio_s = chain.audio_samples / SAMPLE_RATE
    rtf = lambda s: round(s / audio_s, 4) if audio_s else None  # noqa: E731
    realtime = pace != "fast"
    summary = {
        "audio_seconds": round(audio_s, 3),
        "wall_seconds": round(wall_seconds, 3),
        "rtf": rtf(wall_seconds) if not realtime else None,
        "rtf_stages": {name: rtf(t.busy) for name, t in chain.times.items()},
        "cpu_seconds": round(_cpu_seconds(), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pace": pace,
        "dropped_samples": int(chain.dropped_samples),
        "dropped_frames": int(-(-chain.dropped_samples // chain.denoiser.hop_size)),
        "sanitized_samples": int(chain.framer.sanitized),
        "denoiser": chain.denoiser.name,
        "denoiser_latency_ms": round(chain.denoiser.latency_s * 1000, 1),
        "recognizer": chain.recognizer.name,
    }
    if realtime:
        summary["rtf"] = round(max(t.busy for t in chain.times.values()) / audio_s, 4) if audio_s else None
        summary["latency_partial_s"] = latency_summary(latency.partial)
        summary["latency_final_s"] = latency_summary(latency.final)
    skipped = getattr(chain.recognizer, "skipped_partials", None)
    if skipped is not None:  # live input that fell behind skips partials (never finals) to catch up
        summary["skipped_partials"] = int(skipped)
    counters = {k: getattr(chain.recognizer, k) for k in ("decodes", "horizon_commits", "ungrounded_words",
                                                          "overlap_rejected", "prompt_retries", "stall_retries",
                                                          "unrecognized_seconds")
                if hasattr(chain.recognizer, k)}
    if counters:  # what the recogniser's streaming policy did (see its module)
        summary["recognizer_counters"] = {k: round(v, 3) for k, v in counters.items()}
    gate = getattr(chain.denoiser, "gate_counters", None)
    if gate is not None:  # how much of the denoiser the recogniser heard, and the SNR it was chosen from
        summary["denoiser_gate"] = gate()
    overflows = getattr(chain.source, "overflows", None)
    if overflows is not None:
        summary["input_overflows"] = int(overflows)
    return summary


def latency_summary(values) -> dict:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


def format_summary(s: dict) -> str:
    def ms(v):
        return "n/a" if v is None else f"{v * 1000:.0f} ms"

    parts = [f"audio {s['audio_seconds']:.1f} s"]
    parts.append(f"RTF {s['rtf']:.2f}" if s.get("rtf") is not None else "RTF n/a")
    parts.append("stages " + ", ".join(f"{k} {v:.2f}" for k, v in s["rtf_stages"].items() if v is not None))
    if "latency_partial_s" in s:
        lp, lf = s["latency_partial_s"], s["latency_final_s"]
        parts.append(f"latency partial p50 {ms(lp['p50'])} p95 {ms(lp['p95'])}, final p50 {ms(lf['p50'])} p95 {ms(lf['p95'])}")
    parts.append(f"dropped frames {s['dropped_frames']}")
    if s.get("sanitized_samples"):
        parts.append(f"NaN/Inf samples replaced {s['sanitized_samples']}")
    return "summary: " + "; ".join(parts)


def write_json(path: str, summary: dict) -> None:
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
