"""`asr-stream eval`: run chains over a dataset under noise conditions and write the report."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from asr_stream.errors import UserError
from asr_stream.evaluation.manifest import BUILTIN, SHARED_NOISE, dataset


def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asr-stream eval",
        description="Run one or more chains over a dataset under noise conditions, at real-time pace, and "
                    "report WER/CER, caption latency, RTF per stage, CPU, memory, drops and (for what the "
                    "recogniser heard) PESQ-WB, STOI and DNSMOS, as JSON, Markdown and PNG plots.",
        epilog="Datasets: " + "; ".join(f"{k}: {v[0]}" for k, v in BUILTIN.items()) +
               "; or a JSONL manifest (audio_filepath, text, optional clean_filepath), NeMo's format.")
    p.add_argument("--dataset", default="audioeval", help="built-in name or manifest .jsonl (default audioeval)")
    p.add_argument("--limit", type=int, help="first N utterances only")
    p.add_argument("--chains", default="default,no-denoiser",
                   help="comma-separated presets (names or YAML paths) or LABEL:key=value;key=value "
                        "(default: default,no-denoiser)")
    p.add_argument("--conditions", default="clean,10,5,0",
                   help="comma-separated: clean, SNR (dB; a noise file chosen per utterance, or babble when "
                        "there is no noise folder), babble@SNR, NOISE@SNR (default clean,10,5,0)")
    p.add_argument("--noise-dir", type=Path, help=f"folder of noise recordings (default {SHARED_NOISE} if present)")
    p.add_argument("--pace", choices=["realtime", "fast"], default="realtime",
                   help="realtime (default; latency is only meaningful so) or fast (WER only)")
    p.add_argument("--language", default="en", help="text normaliser: en (Whisper English) or any other (basic)")
    p.add_argument("--no-quality", action="store_true", help="skip PESQ/STOI/DNSMOS")
    p.add_argument("--out", type=Path, default=Path("eval-results"),
                   help="results folder (default eval-results/); a rerun resumes what is missing there")
    return p


def _chain_specs(text: str):
    from asr_stream.evaluation.runner import ChainSpec

    specs = [ChainSpec.parse(part.strip()) for part in text.split(",") if part.strip()]
    labels = [s.label for s in specs]
    if not specs:
        raise UserError("--chains: no chain given")
    if len(set(labels)) != len(labels):
        raise UserError(f"--chains: a label is given twice ({', '.join(labels)})")
    return specs


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_eval(argv: list[str]) -> int:
    from asr_stream.evaluation import report
    from asr_stream.evaluation.mixing import Condition
    from asr_stream.evaluation.runner import EvalPlan, load_clips, progress_printer, run_plan, summarize

    args = build_eval_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    noise_dir = args.noise_dir or (SHARED_NOISE if SHARED_NOISE.is_dir() else None)
    if args.noise_dir is not None and not args.noise_dir.is_dir():
        raise UserError(f"--noise-dir {args.noise_dir} is not a folder")
    conditions = []
    for spec in args.conditions.split(","):
        c = Condition.parse(spec.strip())
        if c.noise == "any" and noise_dir is None:
            c = Condition("babble", c.snr)
        conditions.append(c)
    plan = EvalPlan(chains=_chain_specs(args.chains), utterances=dataset(args.dataset, args.limit),
                    conditions=conditions, out_dir=args.out, pace=args.pace, language=args.language,
                    quality=not args.no_quality, noise_dir=noise_dir)
    print(f"asr-stream eval: {len(plan.chains)} chain(s) x {len(conditions)} condition(s) x "
          f"{len(plan.utterances)} utterance(s) of '{args.dataset}' -> {args.out}/", file=sys.stderr)
    started = time.monotonic()
    from asr_stream.evaluation.runner import prepare

    args.out.mkdir(parents=True, exist_ok=True)
    prepare(plan)  # reference word times first: the total below needs the durations
    # Ctrl-C (and SIGTERM) stop the run and keep the results so far. Set explicitly: a process
    # started in the background by a non-interactive shell inherits SIGINT ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    advance, close = progress_printer(plan.total_seconds)
    try:
        complete = run_plan(plan, progress=advance)
    finally:
        close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    clips = load_clips(args.out)
    rows = summarize(clips, args.language)
    meta = {"command": "asr-stream eval " + " ".join(argv), "dataset": args.dataset, "pace": args.pace,
            "complete": complete, "wall_seconds": round(time.monotonic() - started, 1)}
    files = report.write(rows, clips, args.out, meta)
    state = "complete" if complete else "interrupted: results so far"
    print(f"asr-stream eval: {state}; {files['markdown']}, {files['json']}, plots in {args.out}/", file=sys.stderr)
    return 0 if complete else 130
