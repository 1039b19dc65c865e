"""What a run measured: audio seconds, RTF (whole chain and per stage), caption latency,
drops. Latency is measured from the audio timeline: for each word, the time from when the
end of that word entered the chain until it first showed as a partial and until it was
committed (stable or final)."""

from __future__ import annotations

import json
import re
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.stages import Hypothesis


def _key(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class LatencyTracker:
    """Follows each word position of each utterance across hypotheses."""

    partial: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    _first_seen: dict = field(default_factory=dict)  # (utt, i) -> (key, emitted_at)
    _committed: dict = field(default_factory=dict)  # utt -> words committed so far

    def observe(self, hyp: Hypothesis, arrival_of) -> None:
        for i, w in enumerate(hyp.words):
            k = (hyp.utterance, i)
            if k not in self._first_seen or self._first_seen[k][0] != _key(w.text):
                self._first_seen[k] = (_key(w.text), hyp.emitted_at)
        done = self._committed.get(hyp.utterance, 0)
        stable = len(hyp.words) if hyp.final else hyp.stable
        for i in range(done, stable):
            w = hyp.words[i]
            arrived = arrival_of(w.end)
            if arrived is None:
                continue
            self.partial.append(self._first_seen[(hyp.utterance, i)][1] - arrived)
            self.final.append(hyp.emitted_at - arrived)
        self._committed[hyp.utterance] = max(done, stable)


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
        summary["latency_partial_s"] = {"p50": percentile(latency.partial, 50), "p95": percentile(latency.partial, 95),
                                        "n": len(latency.partial)}
        summary["latency_final_s"] = {"p50": percentile(latency.final, 50), "p95": percentile(latency.final, 95),
                                      "n": len(latency.final)}
    skipped = getattr(chain.recognizer, "skipped_partials", None)
    if skipped is not None:  # live input that fell behind skips partials (never finals) to catch up
        summary["skipped_partials"] = int(skipped)
    counters = {k: getattr(chain.recognizer, k) for k in ("decodes", "horizon_commits", "ungrounded_words",
                                                          "unrecognized_seconds") if hasattr(chain.recognizer, k)}
    if counters:  # what the recogniser's streaming policy did (see its module)
        summary["recognizer_counters"] = {k: round(v, 3) for k, v in counters.items()}
    gate = getattr(chain.denoiser, "gate_counters", None)
    if gate is not None:  # how much of the denoiser the recogniser heard, and the SNR it was chosen from
        summary["denoiser_gate"] = gate()
    overflows = getattr(chain.source, "overflows", None)
    if overflows is not None:
        summary["input_overflows"] = int(overflows)
    return summary


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
