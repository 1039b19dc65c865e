#!/usr/bin/env python
"""Streamed against offline: each file its own stream through the real chain, against the same
Whisper run offline on what the recogniser heard (the file whole, greedy, 30 s window), per
dataset; and WhisperLive, the peer, on the same files at real-time pace.

    python bench/bench_streamed.py [--out BENCHMARKS.md] [--limit N] [--quick] [--only NAMES] [--peer auto|none] [--workdir DIR]

Datasets from ../shared: LJSpeech; the same clips cut into one-to-five-word phrases with
0.4-1.2 s pauses (a speaker saying one short phrase at a time); Valentini clean and noisy; LJSpeech
with real noise at 5 dB (a noise file from ../shared per clip); AN4 test; LibriSpeech utterances without transcripts, scored label-free (streamed against offline).
`--limit` caps AN4 and LibriSpeech. Without ../shared it uses the clips pytest-audioeval ships.
Chains: the default preset and `--denoiser none`, each at `--pace fast` (the text cannot depend
on timing). It replaces the part of the Markdown file between `<!-- streamed:begin -->` and
`<!-- streamed:end -->`.
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

import common  # noqa: E402  (bench/ is on sys.path when a script there runs)
from asr_stream.evaluation.offline import OfflineWhisper

ROOT = Path(__file__).resolve().parents[1]
PEER_PY = ROOT / ".venv-peers" / "bin" / "python"
BEGIN, END = "<!-- streamed:begin -->", "<!-- streamed:end -->"
CHAINS = {"default": "default", "--denoiser none": "no-denoiser"}
TARGETS = {"ratio": 1.1, "ins_over_offline": 0.005, "label_free": 0.03, "rtf": 0.4}


def datasets(limit: int, offline: OfflineWhisper) -> list[tuple[str, list[tuple[str, np.ndarray, str | None]]]]:
    """(name, [(key, 16 kHz audio, transcript or None)]) for every dataset available here."""
    from asr_stream.errors import UserError
    from asr_stream.io.audio_files import load_16k
    from asr_stream.evaluation.manifest import SHARED_NOISE, dataset
    from asr_stream.evaluation.mixing import Condition, Mixer, phrases_with_pauses

    def rows(spec, n=None, clean=False):
        return [(u.key, load_16k(u.clean if clean else u.audio), u.text) for u in dataset(spec, n)]

    def phrases(clips):
        return [(k, phrases_with_pauses(a, offline.words(a), seed=i), t)
                for i, (k, a, t) in enumerate(clips)]

    try:
        lj = rows("ljspeech")
    except UserError:  # no ../shared: the clips a pip package ships
        clips = rows("audioeval")
        return [("audioeval clips", clips), ("audioeval clips as phrases between pauses", phrases(clips))]
    out = [("LJSpeech", lj), ("LJSpeech as phrases between pauses", phrases(lj)),
           ("Valentini clean", rows("valentini", clean=True)), ("Valentini noisy", rows("valentini"))]
    if SHARED_NOISE.is_dir():  # more noisy words than Valentini's six clips: real noise, one file per clip
        mixer = Mixer(SHARED_NOISE)
        noisy = Condition.parse("any@5")
        out.append(("LJSpeech + real noise at 5 dB", [(k, mixer.make(a, noisy, k, i)[0], t)
                                                       for i, (k, a, t) in enumerate(lj)]))
    out.append(("AN4 test", rows("an4", limit)))
    try:
        out.append(("LibriSpeech, label-free", rows("librispeech-unlabeled", limit)))
    except UserError:
        pass
    return out


def counts(refs: list[str], hyps: list[str]) -> dict:
    from asr_stream.evaluation.metrics import normalize

    r = [normalize(x) or "<empty>" for x in refs]
    h = [normalize(x) or "<empty>" for x in hyps]
    o = jiwer.process_words(r, h)
    n = sum(len(normalize(x).split()) for x in refs) or 1
    return {"wer": o.wer, "ins": o.insertions / n, "del": o.deletions / n, "sub": o.substitutions / n, "words": n}


def run_chain(label: str, preset: str, sets, workdir: Path, offline: OfflineWhisper) -> dict:
    """Each file its own stream through the chain; offline Whisper on what the recogniser heard."""
    from asr_stream.chain.presets import load_preset
    from asr_stream.chain.pipeline import Settings, build_chain, build_stages, run
    from asr_stream.io.sources import FileSource

    settings = Settings(**{**load_preset(preset), "pace": "fast", "mode": "file", "audio_path": None})
    stages = build_stages(settings)
    out = {}
    for name, clips in sets:
        streamed, offline_texts, audio_s, wall_s = [], [], 0.0, 0.0
        for key, _, _ in clips:
            for stage in stages:
                stage.reset()
            chain = build_chain(settings, source=FileSource(workdir / "audio" / name / f"{key}.wav", pace="fast"),
                                stages=stages, keep_denoised=True, clock_s=None)
            summary, finals = run(settings, chain=chain, handle_signals=False)
            streamed.append(" ".join(h.text for h in finals))
            heard = np.concatenate(chain.denoised) if chain.denoised else np.zeros(0, np.float32)
            offline_texts.append(offline.text(heard))
            audio_s += summary["audio_seconds"]
            wall_s += summary["wall_seconds"]
        out[name] = {"streamed": streamed, "offline": offline_texts, "rtf": wall_s / max(audio_s, 1e-9)}
        print(f"  {label:16s} {name}: {len(clips)} files, RTF {wall_s / max(audio_s, 1e-9):.2f}", flush=True)
    return out


def run_peer(sets, workdir: Path, model: str) -> tuple[dict | None, str]:
    """WhisperLive in its own venv on every file; (texts per dataset and delays, or None, why/command)."""
    if not PEER_PY.exists():
        return None, "not installed here (`make peers` builds `.venv-peers`)"
    files = [{"key": f"{name}/{key}", "path": str(workdir / "audio" / name / f"{key}.wav")}
             for name, clips in sets for key, _, _ in clips]
    (workdir / "peer_files.json").write_text(json.dumps(files))
    cmd = [str(PEER_PY), str(ROOT / "bench" / "peer_whisperlive.py"), "--model", model,
           "--files", str(workdir / "peer_files.json"), "--out", str(workdir / "peer_out.json")]
    shown = "`.venv-peers/bin/python bench/peer_whisperlive.py --model <bundled tiny.en> --files $BENCH_TMP/peer_files.json --out $BENCH_TMP/peer_out.json`"
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (workdir / "peer_out.json").exists():
        return None, f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    got = json.loads((workdir / "peer_out.json").read_text())
    texts = {name: [got[f"{name}/{key}"]["text"] for key, _, _ in clips] for name, clips in sets}
    delays = [d for v in got.values() for d in v["segment_delays"]]
    return {"texts": texts, "delays": delays}, shown


def offline_floor(sets, offline: OfflineWhisper) -> dict:
    """The same model offline, decoded a second way: without timestamp tokens (Whisper's other
    decoding mode; same 30 s window, greedy). How far two offline decodes of the same file
    disagree is how sensitive the model is to its decoding context: a streamed decode, whose
    context differs more, cannot be expected to agree with offline much more closely."""
    out = {}
    for name, clips in sets:
        texts = []
        for _, audio, _ in clips:
            segments, _ = offline.model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                                   condition_on_previous_text=False, without_timestamps=True)
            texts.append(" ".join(seg.text.strip() for seg in segments))
        out[name] = texts
        print(f"  offline without timestamps: {name}", flush=True)
    return out


KINDS = ("split or joined", "repeated", "dropped", "added", "worded differently")


def differences(keys: list[str], offline: list[str], streamed: list[str]) -> tuple[dict, dict]:
    """Where the streamed text departs from the offline text, span by span (adjacent edits merged),
    sorted into kinds: (words per kind, [(key, offline span, streamed span)] per kind). This is the
    measured "why" beside a missed ratio: a split compound is not a lost word."""
    from asr_stream.evaluation.metrics import normalize

    words = dict.fromkeys(KINDS, 0)
    examples: dict[str, list] = {k: [] for k in KINDS}
    for key, o_text, s_text in zip(keys, offline, streamed):
        o, s = normalize(o_text).split(), normalize(s_text).split()
        if not o or not s:
            if o or s:
                kind = "dropped" if o else "added"
                words[kind] += len(o or s)
                examples[kind].append((key, " ".join(o), " ".join(s)))
            continue
        spans, cur = [], None
        for c in jiwer.process_words(" ".join(o), " ".join(s)).alignments[0]:
            if c.type == "equal":
                cur = None
                continue
            if cur is None:
                cur = [c.ref_start_idx, c.ref_end_idx, c.hyp_start_idx, c.hyp_end_idx]
                spans.append(cur)
            else:
                cur[1], cur[3] = c.ref_end_idx, c.hyp_end_idx
        for r0, r1, h0, h1 in spans:
            ref, hyp = o[r0:r1], s[h0:h1]
            if ref and hyp and "".join(ref) == "".join(hyp):
                kind = "split or joined"
            elif not ref and all(w in o[max(0, r0 - 4):r0 + 4] for w in hyp):
                kind = "repeated"
            elif not hyp:
                kind = "dropped"
            elif not ref:
                kind = "added"
            else:
                kind = "worded differently"
            words[kind] += max(len(ref), len(hyp))
            examples[kind].append((key, " ".join(ref), " ".join(hyp)))
    return words, examples


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def per100(c: dict) -> str:
    return f"{100 * c['ins']:.1f} / {100 * c['del']:.1f} / {100 * c['sub']:.1f}"


def report(sets, results: dict, peer: dict | None, peer_note: str, cmd: str, elapsed: float,
           floor: dict | None = None) -> str:
    cpu, cores = common.cpu_and_cores()
    lines = [BEGIN, "## Streamed against offline, file by file", "",
             f"Measured {dt.date.today()} on {cpu}, {cores} usable cores, Python {platform.python_version()}, "
             f"in {elapsed / 60:.0f} min by `{cmd}` (which printed every figure below in that run).", "",
             "Each file is its own stream through the real chain (`asr-stream --audio_path F`, `--pace fast`, "
             "Whisper tiny.en), against the same model offline on the same audio as the recogniser heard it "
             "(after the denoiser; the file whole, greedy, no VAD). Streamed vs offline = the streamed text "
             "scored against the offline text (label-free). Errors are per 100 reference words: "
             "insertions / deletions / substitutions.", "",
             "| dataset | files | words | chain | offline WER | streamed WER | ratio | offline ins / del / sub "
             "| streamed ins / del / sub | streamed vs offline | RTF | targets (ratio <= 1.1, ins <= offline + 0.5, "
             "label-free <= 3 %, RTF <= 0.4) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, clips in sets:
        labelled = all(t for _, _, t in clips)
        for label, res in results.items():
            r = res[name]
            vs = counts(r["offline"], r["streamed"])
            verdict = []
            if labelled:
                refs = [t for _, _, t in clips]
                o, s = counts(refs, r["offline"]), counts(refs, r["streamed"])
                ratio = s["wer"] / o["wer"] if o["wer"] else float("inf")
                verdict.append("ratio " + ("met" if ratio <= TARGETS["ratio"] else "**missed**"))
                verdict.append("ins " + ("met" if s["ins"] <= o["ins"] + TARGETS["ins_over_offline"] else "**missed**"))
                cells = [pct(o["wer"]), pct(s["wer"]), f"{ratio:.2f}", per100(o), per100(s)]
            else:
                verdict.append("label-free " + ("met" if vs["wer"] <= TARGETS["label_free"] else "**missed**"))
                cells = ["—", "—", "—", "—", "—"]
            verdict.append("RTF " + ("met" if r["rtf"] <= TARGETS["rtf"] else "**missed**"))
            words = counts([t for _, _, t in clips], r["offline"])["words"] if labelled else vs["words"]
            lines.append(f"| {name} | {len(clips)} | {words} | {label} | " + " | ".join(cells)
                         + f" | {pct(vs['wer'])} ({per100(vs)}) | {r['rtf']:.2f} | {', '.join(verdict)} |")
    lines += ["", "### Where streamed departs from offline", "",
              "Spans where the streamed text differs from the offline text (adjacent edits merged), by kind, "
              "in words: *split or joined* (same letters, other spacing: \"woodcutters\" / \"wood cutters\"), "
              "*repeated* (an inserted word that stands within four words of the same word offline: a doubled "
              "word), *dropped*, *added* (other insertions), *worded differently* (substitutions). "
              "The first example of each kind follows (offline → streamed).", "",
              "| dataset | chain | split or joined | repeated | dropped | added | worded differently | examples |",
              "|---|---|---|---|---|---|---|---|"]
    for name, clips in sets:
        keys = [k for k, _, _ in clips]
        for label, res in results.items():
            words, examples = differences(keys, res[name]["offline"], res[name]["streamed"])
            shown = "; ".join(f"{k}: `{e[0][1] or '∅'}` → `{e[0][2] or '∅'}` ({e[0][0]})"
                              for k, e in examples.items() if e)
            lines.append(f"| {name} | {label} | " + " | ".join(str(words[k]) for k in KINDS) + f" | {shown or '—'} |")
    if floor:
        lines += ["", "### Two offline decodes of the same file", "",
                  "The offline reference against the same model offline decoded without timestamp tokens "
                  "(Whisper's other decoding mode; same 30 s window, greedy), on the files as they are: no "
                  "streaming at all, only another decoding context. Beside it, `--denoiser none` streamed "
                  "against the same reference.", "",
                  "| dataset | offline vs offline without timestamps | streamed (`--denoiser none`) vs offline |",
                  "|---|---|---|"]
        for name, _ in sets:
            ref = results["--denoiser none"][name]["offline"]
            f, st = counts(ref, floor[name]), counts(ref, results["--denoiser none"][name]["streamed"])
            lines.append(f"| {name} | {pct(f['wer'])} ({per100(f)}) | {pct(st['wer'])} ({per100(st)}) |")
    lines += ["", "### The peer: WhisperLive on the same files", ""]
    if peer is None:
        lines.append(f"WhisperLive (PyPI `whisper-live`): {peer_note}.")
    else:
        lines += [f"WhisperLive 0.10 (PyPI `whisper-live`) with the same tiny.en model directory, its own "
                  f"server (faster_whisper backend, its VAD on) and its own `StreamingTranscriptionClient`, each file "
                  f"its own session at real-time pace in 0.1 s chunks, followed by 2 s of silence (without it "
                  f"WhisperLive drops a file's last words at END_OF_AUDIO). Its text = its committed segments, then "
                  f"the last pending one, as its own client writes a transcript. Command: {peer_note}.", "",
                  "| dataset | WhisperLive WER | ins / del / sub | vs offline (`--denoiser none`) | "
                  "asr-stream `--denoiser none` WER | asr-stream default WER | ours better? |",
                  "|---|---|---|---|---|---|---|"]
        for name, clips in sets:
            texts = peer["texts"][name]
            labelled = all(t for _, _, t in clips)
            vs = counts(results["--denoiser none"][name]["offline"], texts)
            if labelled:
                refs = [t for _, _, t in clips]
                w = counts(refs, texts)
                ours = {label: counts(refs, res[name]["streamed"])["wer"] for label, res in results.items()}
                better = "yes" if ours["--denoiser none"] < w["wer"] else "**no**"
                lines.append(f"| {name} | {pct(w['wer'])} | {per100(w)} | {pct(vs['wer'])} | "
                             f"{pct(ours['--denoiser none'])} | {pct(ours['default'])} | {better} |")
            else:
                ours = counts(results["--denoiser none"][name]["offline"], results["--denoiser none"][name]["streamed"])
                better = "yes" if ours["wer"] < vs["wer"] else "**no**"
                lines.append(f"| {name} | — | — | {pct(vs['wer'])} ({per100(vs)}) | {pct(ours['wer'])} vs offline | — "
                             f"| {better} |")
        d = np.array(peer["delays"]) if peer["delays"] else np.zeros(1)
        lines += ["", f"WhisperLive's completed segments arrived {np.percentile(d, 50):.1f} s (p50) / "
                      f"{np.percentile(d, 95):.1f} s (p95) after their audio ended ({len(peer['delays'])} segments). "
                      "Our partial and final latency at real-time pace are in the continuous-speech section."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--limit", type=int, default=30, help="AN4 and LibriSpeech files (default 30)")
    p.add_argument("--quick", action="store_true", help="the first 3 files of each dataset (a smoke run)")
    p.add_argument("--only", help="datasets to run, by name, separated by | (default: all)")
    p.add_argument("--peer", choices=("auto", "none"), default="auto")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the section from --workdir's results.json (a finished run) without running again")
    a = p.parse_args()
    if a.report_only and not (a.workdir and (a.workdir / "results.json").exists()):
        p.error("--report-only needs --workdir with the results.json of a finished run")
    t0 = time.time()
    from asr_stream.io.audio_files import write_16k

    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="bench_streamed_"))
    offline = OfflineWhisper()
    sets = datasets(a.limit, offline)
    if a.only:
        sets = [(name, clips) for name, clips in sets if name in a.only.split("|")]
    if a.quick:
        sets = [(name, clips[:3]) for name, clips in sets]
    for name, clips in sets:
        (workdir / "audio" / name).mkdir(parents=True, exist_ok=True)
        for key, audio, _ in clips:
            write_16k(workdir / "audio" / name / f"{key}.wav", audio)
    print(f"{sum(len(c) for _, c in sets)} files in {len(sets)} datasets, in {workdir}", flush=True)
    if a.report_only:
        saved = json.loads((workdir / "results.json").read_text())
        results, peer, note, elapsed = saved["results"], saved["peer"], saved["peer_note"], saved["elapsed_s"]
        cmd = saved["cmd"]
        if "floor" not in saved:  # a run from before the second offline decode: add it now
            saved["floor"] = offline_floor(sets, offline)
            (workdir / "results.json").write_text(json.dumps(saved))
        floor = saved["floor"]
    else:
        results = {label: run_chain(label, preset, sets, workdir, offline) for label, preset in CHAINS.items()}
        peer, note = (None, "not run (`--peer none`)") if a.peer == "none" else run_peer(sets, workdir, offline.path)
        print(f"  whisper-live: {'done' if peer else note}", flush=True)
        floor = offline_floor(sets, offline)
        cmd = os.environ.get("BENCH_STREAMED_CMD") or shlex.join(["python", "bench/bench_streamed.py", *sys.argv[1:]])
        elapsed = time.time() - t0
        (workdir / "results.json").write_text(json.dumps({"results": results, "peer": peer, "peer_note": note,
                                                           "elapsed_s": elapsed, "cmd": cmd, "floor": floor}))
    section = report(sets, results, peer, note, cmd, elapsed, floor)
    common.write_section(a.out, section, BEGIN, END)
    print(section)


if __name__ == "__main__":
    main()
