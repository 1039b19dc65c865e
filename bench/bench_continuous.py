#!/usr/bin/env python
"""Continuous speech: streaming Whisper on read speech with no pause long enough to end an
utterance, against the same model offline and a naive re-decode-every-second loop, on this machine.

    python bench/bench_continuous.py [--quick] [--out BENCHMARKS.md] [--workdir DIR]

Inputs (16 kHz, written to a temporary folder): LJSpeech + Valentini clean clips back to back with
gaps of 0.1-0.3 s (`continuous.wav`), its first LJSpeech clips for the real-time runs
(`continuous_rt.wav`), and the first LJSpeech clips each said twice with a 0.25 s pause
(`repeated.wav`). Each streamed row is one `asr-stream` run in a fresh process, printed beside its
figures. The offline reference and the naive loop run in this process on the same clips.
It replaces the part of the Markdown file between `<!-- continuous:begin -->` and
`<!-- continuous:end -->`. Without ../shared it falls back to the clips pytest-audioeval ships.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

import common  # noqa: E402  (bench/ is on sys.path when a script there runs)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "speech"
SR = 16000
SEED = 20261201
BEGIN, END = "<!-- continuous:begin -->", "<!-- continuous:end -->"
MODELS = ("tiny.en", "base")
DENOISERS = ("deepfilternet", "none")
TARGETS = {"wer_ratio": 1.1, "lost": 0, "partial_p95": 0.8, "final_p95": 1.5, "rtf": 0.4}
NORM = EnglishTextNormalizer()


def norm(text: str) -> str:
    return " ".join(NORM(text).split())


def score(ref: str, hyp: str) -> dict:
    o = jiwer.process_words(norm(ref), norm(hyp) or "<empty>")
    return {"wer": o.wer, "sub": o.substitutions, "del": o.deletions, "ins": o.insertions,
            "words": len(norm(ref).split())}


def corpus(quick: bool):
    """(clips, realtime clips, repeated clips, description); each clip (audio, text)."""
    from asr_stream.evaluation.manifest import dataset

    load = common.load_16k
    if (SHARED / "ljspeech").is_dir() and (SHARED / "valentini").is_dir():
        lj = [(load(u.audio), u.text) for u in dataset("ljspeech")[: 6 if quick else None]]
        val = [(load(u.clean), u.text) for u in dataset("valentini")[: 2 if quick else None]]
        n_rt, n_rep = (4, 3) if quick else (12, 8)
        return lj + val, lj[:n_rt], lj[:n_rep], (f"LJSpeech {len(lj)} clips + Valentini clean {len(val)} clips "
                                                 f"from ../shared")
    clips = [(load(u.audio), u.text) for u in dataset("audioeval")] + [(load(u.audio), u.text)
                                                                       for u in dataset("sample")]
    return clips, clips, clips, "FALLBACK (no ../shared): the pytest-audioeval clips and the demo sample"


def join(clips, rng, gap=(0.1, 0.3)) -> np.ndarray:
    parts = [np.zeros(SR // 4, np.float32)]
    for audio, _ in clips:
        parts += [audio, np.zeros(int(rng.uniform(*gap) * SR), np.float32)]
    return np.concatenate(parts)


def run_cli(wav: Path, pace: str, denoiser: str, model: str, work: Path) -> dict:
    tag = f"{wav.stem}.{model}.{denoiser}.{pace}"
    stats, out = work / f"{tag}.json", work / f"{tag}.txt"
    args = ["--audio_path", str(wav), "--pace", pace, "--denoiser", denoiser, "--model", model,
            "--stats-json", str(stats), "--output", str(out), "--quiet"]
    cmd = "asr-stream " + " ".join(shlex.quote(a) for a in args).replace(str(work), "$BENCH_TMP")
    proc = subprocess.run([sys.executable, "-m", "asr_stream", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"cmd": cmd, "error": proc.stderr.strip().splitlines()[-1:]}
    summary = json.loads(stats.read_text())
    return {"cmd": cmd, "summary": summary, "text": out.read_text()}


def offline(model, clips) -> tuple[str, float]:
    """The same model on each clip whole, as faster-whisper runs it (30 s window, greedy)."""
    t0, texts = time.perf_counter(), []
    for audio, _ in clips:
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False)
        texts.append(" ".join(s.text for s in segments))
    return " ".join(texts), time.perf_counter() - t0


def naive_loop(model, audio: np.ndarray, every_s: float = 1.0, window_s: float = 10.0) -> dict:
    """The baseline: every second, re-decode the audio since the last cut with faster-whisper;
    once that reaches `window_s`, commit every segment but the last and cut after them. Latency
    is simulated on a live clock (a decode starts when its audio has arrived and the previous
    decode is done) and measured to each committed segment's end."""
    start, clock, compute, texts, delays = 0, 0.0, 0.0, [], []
    ends = list(range(int(every_s * SR), len(audio), int(every_s * SR))) + [len(audio)]
    for k, t in enumerate(ends):
        last = k == len(ends) - 1
        t0 = time.perf_counter()
        segs = list(model.transcribe(audio[start:t], language="en", beam_size=1, vad_filter=False,
                                     condition_on_previous_text=False)[0])
        took = time.perf_counter() - t0
        compute += took
        clock = max(clock, t / SR) + took
        if not last and ((t - start) / SR < window_s or len(segs) < 2):
            continue
        done = segs if last else segs[:-1]
        for s in done:
            texts.append(s.text)
            delays += [clock - (start / SR + s.end)] * len(s.text.split())
        if done and not last:
            start += int(done[-1].end * SR)
    return {"text": " ".join(texts), "rtf": compute / (len(audio) / SR),
            "p50": float(np.percentile(delays, 50)) if delays else None,
            "p95": float(np.percentile(delays, 95)) if delays else None}


def fmt_pct(x):
    return f"{x * 100:.1f}%"


def fmt_s(x):
    return "n/a" if x is None else f"{x:.2f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few clips only (a smoke run, not a measurement)")
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--workdir", help="keep the inputs and outputs here")
    args = p.parse_args(argv)
    began = time.time()
    load0 = os.getloadavg()[0]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-continuous-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    clips, rt_clips, rep_clips, source = corpus(args.quick)
    inputs = {"continuous": (join(clips, rng), " ".join(t for _, t in clips)),
              "continuous_rt": (join(rt_clips, rng), " ".join(t for _, t in rt_clips)),
              "repeated": (join([c for c in rep_clips for c in (c, c)], rng, gap=(0.25, 0.25)),
                           " ".join(t for _, t in rep_clips for _ in range(2)))}
    for name, (audio, _) in inputs.items():
        sf.write(work / f"{name}.wav", audio, SR)
    secs = {n: len(a) / SR for n, (a, _) in inputs.items()}

    from faster_whisper import WhisperModel

    from asr_stream.recognizers import whisper_models

    rows = {}
    for model in MODELS:
        ref_model = WhisperModel(whisper_models.resolve(model), device="cpu", compute_type="int8", cpu_threads=1)
        text, took = offline(ref_model, clips)
        rows[("offline", model)] = {**score(inputs["continuous"][1], text), "rtf": took / secs["continuous"]}
        if model == MODELS[0]:  # the baseline, for the default model (base's loop runs slower than real time)
            naive = naive_loop(ref_model, inputs["continuous"][0])
            rows[("naive", model)] = {**score(inputs["continuous"][1], naive["text"]), **naive}
        del ref_model
        for den in DENOISERS:
            for inp, pace in (("continuous", "fast"), ("continuous_rt", "realtime")):
                r = run_cli(work / f"{inp}.wav", pace, den, model, work)
                if "text" in r:
                    r.update(score(inputs[inp][1], r["text"]))
                rows[(inp, pace, model, den)] = r
        r = run_cli(work / "repeated.wav", "fast", "deepfilternet", model, work)
        if "text" in r:
            r.update(score(inputs["repeated"][1], r["text"]))
        rows[("repeated", model)] = r

    cpu, cores = common.cpu_and_cores()
    import ctranslate2

    lines = [BEGIN, "## Continuous speech: streaming Whisper without pauses", "",
             f"Produced by `{os.environ.get('BENCH_CONTINUOUS_CMD', 'python bench/bench_continuous.py')}` — "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; CPU {cpu}, {cores} cores; Python "
             f"{platform.python_version()}, ctranslate2 {ctranslate2.__version__}. Took {time.time() - began:.0f} s; "
             f"1-minute load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.", "",
             f"Data: {source}, back to back with gaps of 0.1-0.3 s (shorter than the 0.5 s endpoint "
             f"silence, so utterances end only where the recogniser closes them). `$BENCH_TMP/continuous.wav` "
             f"{secs['continuous']:.0f} s; `$BENCH_TMP/continuous_rt.wav` (the first clips, for real-time runs) "
             f"{secs['continuous_rt']:.0f} s; `$BENCH_TMP/repeated.wav` (each clip said twice, 0.25 s apart) "
             f"{secs['repeated']:.0f} s. WER: final captions, Whisper's English normaliser, jiwer, over the whole "
             f"input. The offline reference and the naive loop run inside the benchmark on the same clips "
             f"(offline: each clip whole; naive: every second re-decode the audio since the last cut, 30 s window, "
             f"commit all segments but the last once 10 s have gathered; its latency is simulated on a live "
             f"clock and measured to each segment's end, which flatters it).", ""]
    default = ("tiny.en", "deepfilternet")
    fast, rt, rep = rows[("continuous", "fast", *default)], rows[("continuous_rt", "realtime", *default)], \
        rows[("repeated", default[0])]
    off = rows[("offline", default[0])]

    def status(ok):
        return "met" if ok else "**missed**"

    lines += ["### Targets (default chain: DeepFilterNet3 + streaming Whisper tiny.en)", "",
              "| target | limit | measured | status | command |", "|---|---|---|---|---|"]
    if "wer" in fast:
        ratio = fast["wer"] / max(off["wer"], 1e-9)
        lines.append(f"| streamed WER / offline WER | <= {TARGETS['wer_ratio']} | {ratio:.2f} "
                     f"({fmt_pct(fast['wer'])} vs {fmt_pct(off['wer'])}) | {status(ratio <= TARGETS['wer_ratio'])} "
                     f"| `{fast['cmd']}` |")
    if "del" in rep:
        lines.append(f"| words lost on repeated speech (deletions) | {TARGETS['lost']} | {rep['del']} of "
                     f"{rep['words']} | {status(rep['del'] <= TARGETS['lost'])} | `{rep['cmd']}` |")
    if "summary" in rt:
        s = rt["summary"]
        for key, label, limit in (("latency_partial_s", "partial latency p95", TARGETS["partial_p95"]),
                                  ("latency_final_s", "final latency p95", TARGETS["final_p95"])):
            v = s[key]["p95"]
            lines.append(f"| {label} (`--pace realtime`) | <= {limit} s | {fmt_s(v)} | "
                         f"{status(v is not None and v <= limit)} | `{rt['cmd']}` |")
    if "summary" in fast:
        v = fast["summary"]["rtf"]
        lines.append(f"| RTF (`--pace fast`) | <= {TARGETS['rtf']} | {v:.2f} | {status(v <= TARGETS['rtf'])} "
                     f"| `{fast['cmd']}` |")
    lines += ["", "### Accuracy and speed (`--pace fast`, continuous.wav)", "",
              "| model | chain | WER | subs / dels / ins | RTF | CPU s / audio s | decodes / audio s | command |",
              "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        o, nv = rows[("offline", model)], rows.get(("naive", model))
        lines.append(f"| {model} | offline reference, each clip whole | {fmt_pct(o['wer'])} | {o['sub']} / {o['del']} / "
                     f"{o['ins']} | {o['rtf']:.2f} | | | in `bench/bench_continuous.py` |")
        if nv:
            lines.append(f"| {model} | naive re-decode every 1 s, no denoiser | {fmt_pct(nv['wer'])} | {nv['sub']} / "
                         f"{nv['del']} / {nv['ins']} | {nv['rtf']:.2f} | | 1.00 | in `bench/bench_continuous.py` |")
        for den in DENOISERS:
            r = rows[("continuous", "fast", model, den)]
            if "summary" not in r:
                lines.append(f"| {model} | {den} | failed: {r.get('error')} | | | | | `{r['cmd']}` |")
                continue
            s = r["summary"]
            rate = s.get("recognizer_counters", {}).get("decodes", 0) / s["audio_seconds"]
            lines.append(f"| {model} | streaming, denoiser {den} | {fmt_pct(r['wer'])} | {r['sub']} / {r['del']} / "
                         f"{r['ins']} | {s['rtf']:.2f} | {s['cpu_seconds'] / s['audio_seconds']:.2f} | {rate:.2f} "
                         f"| `{r['cmd']}` |")
    lines += ["", "### Latency (`--pace realtime`, continuous_rt.wav)", "",
              "| model | chain | partial p50 | partial p95 | final p50 | final p95 | stage load | dropped frames "
              "| skipped partials | WER | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        nv = rows.get(("naive", model))
        if nv:
            lines.append(f"| {model} | naive loop (simulated clock, continuous.wav) | | | {fmt_s(nv['p50'])} | "
                         f"{fmt_s(nv['p95'])} | {nv['rtf']:.2f} | | | {fmt_pct(nv['wer'])} | in `bench/bench_continuous.py` |")
        for den in DENOISERS:
            r = rows[("continuous_rt", "realtime", model, den)]
            if "summary" not in r:
                lines.append(f"| {model} | {den} | failed: {r.get('error')} | | | | | | | | `{r['cmd']}` |")
                continue
            s = r["summary"]
            lp, lf = s["latency_partial_s"], s["latency_final_s"]
            lines.append(f"| {model} | {den} | {fmt_s(lp['p50'])} | {fmt_s(lp['p95'])} | {fmt_s(lf['p50'])} | "
                         f"{fmt_s(lf['p95'])} | {s['rtf']:.2f} | {s['dropped_frames']} | {s.get('skipped_partials', 0)} "
                         f"| {fmt_pct(r['wer'])} | `{r['cmd']}` |")
    lines += ["", "### Repeated speech (repeated.wav: each clip said twice, 0.25 s apart, `--pace fast`)", "",
              "| model | ref words | words lost (deletions) | WER | command |", "|---|---|---|---|---|"]
    for model in MODELS:
        r = rows[("repeated", model)]
        if "del" in r:
            lines.append(f"| {model} | {r['words']} | {r['del']} | {fmt_pct(r['wer'])} | `{r['cmd']}` |")
    lines += ["", END, ""]
    common.write_section(ROOT / args.out, "\n".join(lines), BEGIN, END)
    (work / "rows.json").write_text(json.dumps({" / ".join(k): {kk: vv for kk, vv in v.items() if kk != "text"}
                                                for k, v in rows.items()}, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
