"""The evaluation matrix: chains x conditions x utterances, each clip through a real chain.

Each chain's stages are loaded once and reset between clips; each clip runs through the same
`Chain` the CLI uses (threads, queues, pacing), from a file written for its condition. Every
clip's result is appended to `clips.jsonl` as soon as it is done, so an interrupted run (Ctrl-C)
keeps everything measured so far, and `summarize` builds the tables from whatever is there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_stream.errors import UserError
from asr_stream.evaluation import metrics
from asr_stream.io.audio_files import load_16k, write_16k
from asr_stream.evaluation.latency import RefWord, WordLatency, distribution, reference_words
from asr_stream.evaluation.manifest import Utterance
from asr_stream.evaluation.mixing import Condition, Mixer


@dataclass(frozen=True)
class ChainSpec:
    """A chain to evaluate: a label and its settings (a preset, plus overrides)."""

    label: str
    settings: dict

    @staticmethod
    def parse(spec: str) -> ChainSpec:
        """`PRESET` (a preset name or a YAML path), or `LABEL:key=value;key=value` over the
        defaults (e.g. `demucs-light:denoiser=path/to/model.th;dry=0.1`)."""
        from asr_stream.chain.presets import load_preset

        if ":" in spec and "=" in spec.split(":", 1)[1]:
            label, body = spec.split(":", 1)
            values = {}
            for item in body.split(";"):
                key, _, value = item.partition("=")
                values[key.strip()] = _scalar(value.strip())
            from dataclasses import fields

            from asr_stream.chain.pipeline import Settings

            unknown = sorted(set(values) - {f.name for f in fields(Settings)})
            if unknown:
                raise UserError(f"chain '{label}': unknown setting(s) {', '.join(unknown)}")
            return ChainSpec(label, values)
        return ChainSpec(Path(spec).stem, load_preset(spec))


def _scalar(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "null": None}.get(v.lower(), v)


@dataclass
class EvalPlan:
    chains: list[ChainSpec]
    utterances: list[Utterance]
    conditions: list[Condition]
    out_dir: Path
    pace: str = "realtime"
    language: str = "en"
    quality: bool = True  # PESQ/STOI/DNSMOS of what the recogniser heard
    noise_dir: Path | None = None
    seconds: dict = field(default_factory=dict)  # utterance key -> duration

    @property
    def total_seconds(self) -> float:
        return len(self.chains) * len(self.conditions) * sum(self.seconds.values())


def prepare(plan: EvalPlan) -> tuple[dict[str, np.ndarray], dict[str, list[RefWord]]]:
    """Clean speech and reference word times of every utterance (cached in the run folder)."""
    speech = {u.key: load_16k(u.audio) for u in plan.utterances}
    plan.seconds = {k: len(v) / 16000 for k, v in speech.items()}
    cache = plan.out_dir / "reference_words.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    refs = {}
    for u in plan.utterances:
        if u.key not in known:
            audio = load_16k(u.clean) if u.clean else speech[u.key]
            known[u.key] = [[w.text, w.start, w.end] for w in reference_words(audio)]
        refs[u.key] = [RefWord(*w) for w in known[u.key]]
    cache.write_text(json.dumps(known))
    return speech, refs


def run_plan(plan: EvalPlan, progress=None) -> bool:
    """Run every cell not yet in clips.jsonl; True when it ran to the end, False on Ctrl-C."""
    from asr_stream.chain.pipeline import Settings, build_chain, build_stages, run
    from asr_stream.io.sources import FileSource

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    speech, refs = prepare(plan)
    mixer = Mixer(plan.noise_dir or Path("."), babble_sources=list(speech.values()))
    clips_path = plan.out_dir / "clips.jsonl"
    done = set()
    if clips_path.exists():
        for line in clips_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done.add((row["chain"], row["condition"], row["utterance"]))
    index = {u.key: i for i, u in enumerate(plan.utterances)}
    try:
        for spec in plan.chains:
            settings = Settings(**{**spec.settings, "pace": plan.pace, "mode": "file", "audio_path": None})
            todo = [(c, u) for c in plan.conditions for u in plan.utterances
                    if (spec.label, c.name, u.key) not in done]
            if not todo:
                continue
            stages = build_stages(settings)
            for condition, u in todo:
                path = plan.out_dir / "audio" / condition.name / f"{u.key}.wav"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    audio, _ = mixer.make(speech[u.key], condition, u.key, index[u.key])
                    write_16k(path, audio)
                for stage in stages:
                    stage.reset()
                chain = build_chain(settings, source=FileSource(path, pace=plan.pace), stages=stages,
                                    keep_denoised=plan.quality, clock_s=None)  # word delays over the whole clip
                words = WordLatency(refs[u.key])
                cpu0 = time.process_time()
                summary, finals = run(settings, chain=chain, handle_signals=False, on_hypothesis=words.observe)
                row = {"chain": spec.label, "condition": condition.name, "snr": condition.snr,
                       "utterance": u.key, "seconds": plan.seconds[u.key], "reference": u.text,
                       "hypothesis": " ".join(h.text for h in finals), "latency": words.delays(chain.clock.arrival_of),
                       "cpu_seconds": time.process_time() - cpu0, "summary": summary}
                if plan.quality:
                    reference = load_16k(u.clean) if u.clean is not None else speech[u.key]
                    heard = np.concatenate(chain.denoised) if chain.denoised else np.zeros(0, np.float32)
                    row["quality"] = quality(reference, heard)
                with clips_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                if progress is not None:
                    progress(plan.seconds[u.key], f"{spec.label} {condition.name} {u.key}")
    except KeyboardInterrupt:
        return False
    return True


def quality(reference: np.ndarray, heard: np.ndarray) -> dict:
    """PESQ-WB and STOI against the clean reference, and DNSMOS, of the audio the recogniser heard."""
    out = {}
    if len(heard) >= 16000 * 0.5 and len(reference):
        out["pesq"] = metrics.pesq_wb(reference, heard)
        out["stoi"] = metrics.stoi(reference, heard)
    if len(heard) >= 16000:
        out["dnsmos"] = metrics.dnsmos(heard)
    return out


def load_clips(out_dir: Path) -> list[dict]:
    path = out_dir / "clips.jsonl"
    if not path.exists():
        raise UserError(f"no results in {out_dir} (clips.jsonl is missing)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(clips: list[dict], language: str = "en") -> list[dict]:
    """One row per (chain, condition): WER/CER over its clips, pooled word latencies, stage RTFs
    (busy time over audio time), CPU seconds, peak RSS, drops, and mean enhancement scores."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for c in clips:
        cells.setdefault((c["chain"], c["condition"]), []).append(c)
    rows = []
    for (chain, condition), group in cells.items():
        audio_s = sum(c["summary"]["audio_seconds"] for c in group)
        scored = [c for c in group if c["reference"]]
        row = {"chain": chain, "condition": condition, "snr": group[0]["snr"], "clips": len(group),
               "audio_seconds": audio_s,
               **metrics.error_rates([c["reference"] for c in scored], [c["hypothesis"] for c in scored], language),
               "latency_partial": distribution([x for c in group for x in c["latency"]["partial"]]),
               "latency_final": distribution([x for c in group for x in c["latency"]["final"]]),
               "missed_words": sum(c["latency"]["missed"] for c in group),
               "rtf": sum(c["summary"]["rtf"] * c["summary"]["audio_seconds"] for c in group) / audio_s,
               "rtf_stages": {stage: sum(c["summary"]["rtf_stages"][stage] * c["summary"]["audio_seconds"]
                                         for c in group) / audio_s for stage in ("denoiser", "recognizer")},
               "cpu_seconds": sum(c["cpu_seconds"] for c in group),
               "peak_rss_mb": max(c["summary"]["peak_rss_mb"] for c in group),
               "dropped_frames": sum(c["summary"]["dropped_frames"] for c in group)}
        gated = [c for c in group if c["summary"].get("denoiser_gate", {}).get("mean_mix") is not None]
        if gated:  # what the denoiser gate chose: mean mix, share of audio bypassed, mean SNR estimate
            secs = sum(c["summary"]["audio_seconds"] for c in gated)
            gates = [(c["summary"]["denoiser_gate"], c["summary"]["audio_seconds"]) for c in gated]
            snrs = [g["mean_snr_db"] for g, _ in gates if g.get("mean_snr_db") is not None]
            row["gate"] = {"mix": sum(g["mean_mix"] * a for g, a in gates) / secs,
                           "bypassed": sum(g["bypassed_share"] * a for g, a in gates) / secs,
                           "off": sum((g.get("denoiser_off_share") or 0.0) * a for g, a in gates) / secs,
                           "snr_db": float(np.mean(snrs)) if snrs else None}
        for key in ("pesq", "stoi"):
            values = [c["quality"][key] for c in group if c.get("quality", {}).get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        moss = [c["quality"]["dnsmos"] for c in group if c.get("quality", {}).get("dnsmos")]
        row["dnsmos"] = {k: float(np.mean([m[k] for m in moss])) for k in ("sig", "bak", "ovrl")} if moss else None
        rows.append(row)
    return rows


def progress_printer(total_seconds: float):
    """A rich progress bar over audio seconds, with time left (at realtime pace, audio time is
    most of the wall time); returns (advance, close)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), transient=False)
    task = bar.add_task("eval", total=total_seconds)
    bar.start()
    started = time.monotonic()

    def advance(seconds: float, what: str) -> None:
        bar.update(task, advance=seconds, description=what[:40])

    def close() -> float:
        bar.stop()
        return time.monotonic() - started

    return advance, close
