"""What the gate's stopped denoiser saves and costs over long sessions, in BENCHMARKS.md.

Three sessions of continuous read speech, each one stream at fast pace (CPU does not depend on
pacing): clean; the same speech in real noise at 5 dB throughout; clean and noisy alternating
every 30 s (each noisy stretch makes the stopped denoiser start again). Each runs through no
denoiser, the default chain (gated DeepFilterNet3, its denoiser stopped while the input reads
clean) and the same chain with the denoiser kept running (`--no-gate-sleep`). Reported: process
CPU, the denoiser stage's busy time, how much of the session the denoiser was off, how often it
started, and how many words differ from the kept-running chain's text (what the stops cost) and
from no denoiser's (on clean speech: the bypass is exact, so none).

    python bench/bench_gate_cpu.py --out BENCHMARKS.md [--seconds 180]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import cpu_and_cores, load_16k, write_section  # noqa: E402

BEGIN, END = "<!-- gate-cpu:begin -->", "<!-- gate-cpu:end -->"
SHARED = ROOT.parent / "shared" / "data"
NOISE = "speechbrain_noise4"  # one of the gate calibration's held-out noises
CHAINS = {"none": ["--denoiser", "none"], "default": [], "default-awake": ["--no-gate-sleep"]}


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """Continuous read speech: the unlabelled LibriSpeech utterances (or, without ../shared, the
    clip the package ships), back to back with 0.3 s gaps."""
    files = sorted((SHARED / "speech" / "librispeech_unlabeled").glob("*.flac"))
    source = "LibriSpeech utterances"
    if not files:
        files, source = [ROOT / "asr_stream" / "data" / "samples" / "LJ001-0001.wav"], "the bundled LJSpeech clip, repeated"
    parts, total, i = [], 0, 0
    while total < seconds * 16000:
        a = load_16k(files[i % len(files)])
        parts += [a, np.zeros(4800, np.float32)]
        total += len(a) + 4800
        i += 1
    return np.concatenate(parts)[: int(seconds * 16000)], source


def sessions(seconds: float, tmp: Path) -> tuple[dict[str, Path], str]:
    from asr_stream.evaluation.mixing import looped_segment, mix_at_snr

    clean, source = speech(seconds)
    noise_file = SHARED / "noise" / f"{NOISE}.wav"
    rng = np.random.default_rng(0)
    noise = load_16k(noise_file) if noise_file.exists() else rng.standard_normal(16000 * 30).astype(np.float32)
    noisy = mix_at_snr(clean, looped_segment(noise, len(clean), rng), 5.0)[0]
    block = 30 * 16000
    alternating = np.concatenate([(clean if (i // block) % 2 == 0 else noisy)[i : i + block]
                                  for i in range(0, len(clean), block)])
    paths = {}
    for name, audio in (("clean", clean), ("noisy 5 dB", noisy), ("clean/noisy every 30 s", alternating)):
        paths[name] = tmp / f"{name.split()[0].replace('/', '-')}.wav"
        sf.write(paths[name], audio, 16000, subtype="FLOAT")
    what = f"{seconds:.0f} s of {source}; noise: {noise_file.stem if noise_file.exists() else 'white noise'}"
    return paths, what


def run(exe: Path, wav: Path, flags: list[str], tmp: Path) -> tuple[dict, str, str]:
    stats = tmp / "stats.json"
    cmd = ["--audio_path", str(wav), "--pace", "fast", "--stats-json", str(stats), *flags]
    proc = subprocess.run([str(exe), *cmd], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"asr-stream failed: {proc.stderr.strip()[-500:]}")
    return json.loads(stats.read_text()), " ".join(proc.stdout.split()), "asr-stream " + " ".join(map(shlex.quote, cmd))


def differing_words(a: str, b: str) -> int:
    import jiwer

    if not a.strip() or not b.strip():
        return max(len(a.split()), len(b.split()))
    out = jiwer.process_words(a.lower(), b.lower())
    return out.substitutions + out.deletions + out.insertions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--seconds", type=float, default=180.0)
    args = p.parse_args(argv)
    exe = Path(sys.executable).parent / "asr-stream"
    cpu, cores = cpu_and_cores()
    cmd = os.environ.get("BENCH_GATE_CPU_CMD", "python bench/bench_gate_cpu.py")
    rows, shown = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, what = sessions(args.seconds, tmp)
        for session, wav in paths.items():
            out = {}
            for chain, flags in CHAINS.items():
                summary, text, line = run(exe, wav, flags, tmp)
                out[chain] = (summary, text)
                shown.append(line.replace(str(wav), f"<{session}>").replace(str(tmp / "stats.json"), "<stats.json>"))
                print(line, flush=True)
            base_cpu = out["none"][0]["cpu_seconds"]
            for chain, (summary, text) in out.items():
                gate = summary.get("denoiser_gate") or {}
                off = gate.get("denoiser_off_share")
                rows.append(
                    f"| {session} | {chain} | {summary['cpu_seconds']:.1f} | {summary['cpu_seconds'] / base_cpu:.2f} "
                    f"| {summary['rtf_stages'].get('denoiser') or 0:.3f} "
                    f"| {'' if off is None else f'{100 * off:.0f} %'} | {gate.get('denoiser_starts', '')} "
                    f"| {differing_words(out['default-awake'][1], text)} | {differing_words(out['none'][1], text)} "
                    f"| {len(text.split())} |")
    L = [BEGIN, "## The gate's stopped denoiser: CPU saved, words kept", "",
         f"Made by `{cmd}` on {cpu} ({cores} cores): {what}. One stream per run at fast pace; CPU s = the "
         "whole process (model loading included); denoiser RTF = the denoiser stage's busy time over the "
         "audio; words differing = word edits between this chain's text and the other's (what stopping "
         "the denoiser changed; against no denoiser, on clean speech a bypass changes nothing). The commands, "
         "with `<session>` for the session's file:", "",
         *[f"    {s}" for s in dict.fromkeys(shown)], "",
         "| session | chain | CPU s | CPU / none | denoiser RTF | denoiser off | starts | words differing from "
         "kept running | words differing from none | words |", "|---|---|---|---|---|---|---|---|---|---|",
         *rows, "", END]
    write_section(args.out, "\n".join(L) + "\n", BEGIN, END)
    print(f"wrote the gate-cpu section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
