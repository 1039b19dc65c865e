"""The denoiser gate in BENCHMARKS.md: WER by SNR for every denoiser, fixed and gated, against no denoiser.

Runs `asr-stream eval` (fast pace: WER, CPU and quality do not depend on pacing) on speech the
gate's calibration (recipes/gate/calibrate.py) never saw:
1. the odd LJSpeech clips, mixed with the held-out noise files and with babble of the other
   clips, at 10, 5, 0 and -5 dB, and clean, into Whisper tiny.en: no denoiser, DeepFilterNet3,
   GTCRN and RNNoise as they are, and DeepFilterNet3 and GTCRN gated (the default chain is
   the gated DeepFilterNet3, whose denoiser stops on clean input; also run kept running);
2. AN4 test clips through the project's NeMo model, in held-out noise and babble: no denoiser,
   DeepFilterNet3 and GTCRN as they are and gated (the gate takes the curves calibrated for NeMo
   models on AN4's train split).
Without ../shared, part 1 runs on the pytest-audioeval clips in babble only. Then it checks the
issue's targets in the same run: never worse than no denoiser at any condition (and by how many
words), pooled 0 + 5 dB WER <= 0.8 x no denoiser, clean within +0.5 WER points, CPU on clean
speech within 1.1 x no denoiser's; and what stopping the denoiser costs against keeping it running.

    python bench/bench_gate.py --out BENCHMARKS.md [--quick]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import cpu_and_cores, write_section  # noqa: E402

BEGIN, END = "<!-- gate:begin -->", "<!-- gate:end -->"
SHARED = ROOT.parent / "shared" / "data"
DOCS = ROOT / "docs" / "bench"
AN4_MODEL = ROOT / "asr_stream" / "data" / "models" / "an4_fastconformer_ctc.nemo"
HELD_OUT_NOISES = ["dude_miaowing", "white_noise", "speechbrain_noise2", "speechbrain_noise4", "speechbrain_noise5"]
SNRS = [10, 5, 0, -5]
DEFAULT = "default"
AWAKE = "default-awake"  # the default chain with its denoiser kept running on clean input (--no-gate-sleep)
BASELINE = "none"
FORCED = ("dfn", "gtcrn", "rnnoise")  # the Whisper part's denoisers without the gate


def whisper_chains() -> list[str]:
    return [f"{BASELINE}:denoiser=none", "dfn:denoiser=deepfilternet;gate=false", DEFAULT,
            f"{AWAKE}:gate_sleep=false", "gtcrn:denoiser=gtcrn;gate=false", "gtcrn+gate:denoiser=gtcrn;gate=true",
            "rnnoise:denoiser=rnnoise;gate=false"]


def held_out_setup(tmp: Path, clips: int) -> tuple[Path, Path]:
    """A manifest of the odd LJSpeech clips and a folder holding only the held-out noises."""
    base = SHARED / "speech" / "ljspeech"
    texts = dict(line.split("\t", 1) for line in (base / "transcripts.tsv").read_text().splitlines() if "\t" in line)
    manifest = tmp / "ljspeech-held-out.jsonl"
    with manifest.open("w") as f:
        for p in sorted(base.glob("*.wav"))[1::2][:clips]:
            f.write(json.dumps({"audio_filepath": str(p), "text": texts[p.name]}) + "\n")
    noise_dir = tmp / "noise"
    noise_dir.mkdir()
    for name in HELD_OUT_NOISES:
        (noise_dir / f"{name}.wav").symlink_to(SHARED / "noise" / f"{name}.wav")
    return manifest, noise_dir


def run_eval(exe: Path, args: list[str], out_dir: Path, rerun: list[str] | None = None) -> tuple[str, int, str]:
    """`rerun`: keep this folder's earlier results except those chains' (eval resumes the rest)."""
    clips = out_dir / "clips.jsonl"
    if rerun is not None and clips.exists():
        kept = [line for line in clips.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["chain"] not in rerun]
        clips.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    elif out_dir.exists():
        subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    cmd = ["eval", *args, "--out", os.path.relpath(out_dir, ROOT)]
    shown = "asr-stream " + " ".join(shlex.quote(a) for a in cmd)
    print(shown, flush=True)
    proc = subprocess.run([str(exe), *cmd], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return shown, proc.returncode, proc.stderr


def _errors(row: dict) -> int:
    return row["substitutions"] + row["deletions"] + row["insertions"]


def targets(rows: list[dict], chain: str) -> list[str]:
    """The issue's three targets for `chain` against the no-denoiser chain, from this run's rows."""
    by = {(r["chain"], r["condition"]): r for r in rows}
    conditions = sorted({r["condition"] for r in rows}, key=lambda c: (c != "clean", c))
    L = ["| condition | no denoiser WER | gated WER | difference (words) | no worse? |", "|---|---|---|---|---|"]
    worse = []
    for c in conditions:
        a, b = by.get((BASELINE, c)), by.get((chain, c))
        if not a or not b or a["wer"] is None:
            continue
        diff = _errors(b) - _errors(a)
        ok = diff <= 0
        if not ok:
            worse.append(f"{c} (+{diff} words of {a['words']})")
        L.append(f"| {c} | {100 * a['wer']:.1f} % | {100 * b['wer']:.1f} % | {diff:+d} of {a['words']} "
                 f"| {'yes' if ok else '**no**'} |")
    pooled = [c for c in conditions if c != "clean" and by.get((BASELINE, c)) and by[(BASELINE, c)]["snr"] in (0, 5)]
    e_base = sum(_errors(by[(BASELINE, c)]) for c in pooled)
    e_gate = sum(_errors(by[(chain, c)]) for c in pooled if (chain, c) in by)
    words = sum(by[(BASELINE, c)]["words"] for c in pooled)
    ratio = e_gate / e_base if e_base else None
    clean_a, clean_b = by.get((BASELINE, "clean")), by.get((chain, "clean"))
    clean_diff = 100 * (clean_b["wer"] - clean_a["wer"]) if clean_a and clean_b else None
    L += ["", "| target | measured | status |", "|---|---|---|",
          f"| never worse than no denoiser, every condition | {'; '.join(worse) or 'no condition worse'} "
          f"| {'met' if not worse else '**missed**'} |"]
    if ratio is not None:
        L.append(f"| pooled 0 + 5 dB WER <= 0.8 x no denoiser | {100 * e_gate / words:.1f} % vs "
                 f"{100 * e_base / words:.1f} % (ratio {ratio:.2f}; {oracle(by, pooled, e_base)}) "
                 f"| {'met' if ratio <= 0.8 else '**missed**'} |")
    if clean_diff is not None:
        L.append(f"| clean <= +0.5 WER points over no denoiser | {clean_diff:+.1f} points "
                 f"| {'met' if clean_diff <= 0.5 else '**missed**'} |")
    if clean_a and clean_b and clean_a.get("cpu_seconds"):
        cpu = clean_b["cpu_seconds"] / clean_a["cpu_seconds"]
        L.append(f"| CPU on clean speech <= 1.1 x no denoiser's | {clean_b['cpu_seconds']:.1f} s vs "
                 f"{clean_a['cpu_seconds']:.1f} s (ratio {cpu:.2f}) | {'met' if cpu <= 1.1 else '**missed**'} |")
    return L


def oracle(by: dict, conditions: list[str], e_base: int) -> str:
    """What the best of this run's chains per condition, picked knowing the answers, pools to:
    how far any choice among these denoisers and mixes could go on these clips."""
    chains = sorted({chain for chain, _ in by})
    best = {c: min(chains, key=lambda ch: _errors(by[(ch, c)]) if (ch, c) in by else 10**9) for c in conditions}
    e_best = sum(_errors(by[(best[c], c)]) for c in conditions)
    picks = ", ".join(f"{c} {best[c]}" for c in conditions)
    return f"the best chain per condition, chosen knowing the answers: ratio {e_best / e_base:.2f} ({picks})"


def offline_anchors(data: list[str], conditions: str) -> dict[str, tuple[dict, dict]]:
    """Per condition: Whisper tiny.en offline on each whole clip, (as it is, after DeepFilterNet3
    over the whole clip), over the very mixtures `asr-stream eval` streamed (same seeds)."""
    from asr_stream.denoisers import create_denoiser, denoise_all
    from asr_stream.evaluation.manifest import dataset
    from asr_stream.evaluation.metrics import error_rates
    from asr_stream.evaluation.mixing import Condition, Mixer
    from asr_stream.evaluation.offline import OfflineWhisper
    from asr_stream.io.audio_files import load_16k

    utterances = dataset(data[data.index("--dataset") + 1])
    noise_dir = Path(data[data.index("--noise-dir") + 1]) if "--noise-dir" in data else Path(".")
    speech = [load_16k(u.audio) for u in utterances]
    mixer = Mixer(noise_dir, babble_sources=speech)  # as `asr-stream eval` builds its mixtures
    whisper, dfn = OfflineWhisper(), create_denoiser("deepfilternet")
    out = {}
    for spec in conditions.split(","):
        condition = Condition.parse(spec)
        plain, denoised = [], []
        for i, (u, x) in enumerate(zip(utterances, speech)):
            audio, _ = mixer.make(x, condition, u.key, i)
            plain.append(whisper.text(audio))
            denoised.append(whisper.text(denoise_all(dfn, audio)))
        refs = [u.text or "" for u in utterances]
        out[condition.name] = (error_rates(refs, plain), error_rates(refs, denoised))
    return out


def anchors_table(rows: list[dict], anchors: dict[str, tuple[dict, dict]], chain: str) -> list[str]:
    """Streamed against offline per condition, the best denoiser forced on, and the issue's 5 dB
    target: `chain` within 10 % of the best forced denoiser's WER."""
    by = {(r["chain"], r["condition"]): r for r in rows}
    conditions = sorted({r["condition"] for r in rows}, key=lambda c: (c != "clean", c))
    L = ["Offline anchors: Whisper tiny.en on each whole clip (greedy, one pass), as it is and after "
         "DeepFilterNet3 over the whole clip, on the same mixtures; streamed: this run's chains, each clip "
         "its own stream. Best forced = the lowest WER of the denoisers forced on (" + ", ".join(FORCED) + ").", "",
         "| condition | offline, no denoiser | offline, DeepFilterNet3 | streamed, no denoiser | streamed, "
         f"`{chain}` | best forced (streamed) | `{chain}` / best forced |", "|---|---|---|---|---|---|---|"]
    checks = []
    for c in conditions:
        a, b = by.get((BASELINE, c)), by.get((chain, c))
        forced = [by[(f, c)] for f in FORCED if (f, c) in by and by[(f, c)]["wer"] is not None]
        if not a or not b or c not in anchors or a["wer"] is None:
            continue
        best = min(forced, key=lambda r: r["wer"]) if forced else None
        ratio = b["wer"] / best["wer"] if best and best["wer"] else None
        if best is not None and b["snr"] == 5:
            checks.append(f"{c}: {100 * b['wer']:.1f} % vs {best['chain']} {100 * best['wer']:.1f} % "
                          f"({'met' if ratio is not None and ratio <= 1.1 else '**missed**'})")
        off_plain, off_dfn = anchors[c]
        best_cell = "" if best is None else f"{best['chain']} {100 * best['wer']:.1f} %"
        L.append(f"| {c} | {100 * off_plain['wer']:.1f} % | {100 * off_dfn['wer']:.1f} % | {100 * a['wer']:.1f} % "
                 f"| {100 * b['wer']:.1f} % | {best_cell} | {'' if ratio is None else f'{ratio:.2f}'} |")
    if checks:
        L += ["", f"Target: at 5 dB, `{chain}` within 10 % of the best forced denoiser's WER: " + "; ".join(checks) + "."]
    return L


def sleep_cost(rows: list[dict]) -> list[str]:
    """What stopping the denoiser on clean input costs and saves: the default chain against the same
    chain with the denoiser kept running, per condition, in this run."""
    by = {(r["chain"], r["condition"]): r for r in rows}
    conditions = sorted({r["condition"] for r in rows}, key=lambda c: (c != "clean", c))
    L = [f"The denoiser stopped on clean input (`{DEFAULT}`) against kept running (`{AWAKE}`, "
         "`--no-gate-sleep`), same clips: errors and CPU.", "",
         "| condition | errors kept running | errors with stops | denoiser off | CPU s kept running | CPU s with stops |",
         "|---|---|---|---|---|---|"]
    for c in conditions:
        a, b = by.get((AWAKE, c)), by.get((DEFAULT, c))
        if not a or not b:
            continue
        off = (b.get("gate") or {}).get("off")
        L.append(f"| {c} | {_errors(a)} | {_errors(b)} | {'' if off is None else f'{100 * off:.0f} %'} "
                 f"| {a['cpu_seconds']:.1f} | {b['cpu_seconds']:.1f} |")
    return L if len(L) > 4 else []


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["condition"].split("@")[0] for r in rows if r["snr"] is not None})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    chains = list(dict.fromkeys(r["chain"] for r in rows))
    for ax, kind in zip(axes[0], kinds):
        for i, ch in enumerate(chains):
            pts = sorted((r["snr"], 100 * r["wer"]) for r in rows if r["chain"] == ch and r["snr"] is not None
                         and r["condition"].split("@")[0] == kind and r["wer"] is not None)
            clean = [100 * r["wer"] for r in rows if r["chain"] == ch and r["condition"] == "clean"]
            xs = [p[0] for p in pts] + ([15] if clean else [])
            ys = [p[1] for p in pts] + clean
            style = dict(lw=2.5, color="k") if ch == DEFAULT else dict(lw=1.2, color=f"C{i}")
            ax.plot(xs, ys, marker="o", label=ch, **style)
        ax.set_xticks(SNRS[::-1] + [15], [str(s) for s in SNRS[::-1]] + ["clean"])
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("WER (%)")
        ax.set_title(f"{title}: {'real noise' if kind == 'any' else kind}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def part(exe: Path, key: str, title: str, args: list[str], chain: str, lines: list[str],
         rerun: list[str] | None = None, anchors: bool = False) -> None:
    from asr_stream.evaluation.runner import load_clips, summarize

    out_dir = DOCS / f"eval-{key}"
    shown, rc, err = run_eval(exe, args, out_dir, rerun)
    lines += [f"### {title}", "", f"    {shown}", ""]
    if rerun is not None:
        lines += [f"Cells of the chains other than {', '.join(rerun)} are kept from the previous run of this "
                  "same command (same code for them, same seeded mixtures); those chains were run again.", ""]
    if rc != 0:
        lines += [f"Failed (exit {rc}): `{(err.strip().splitlines() or ['?'])[-1][:300]}`", ""]
        return
    rows = summarize(load_clips(out_dir))
    rel = os.path.relpath(out_dir, ROOT)
    plot(rows, out_dir / "wer_by_snr.png", title.split(",")[0])
    lines += [f"Targets for `{chain}` (the gated chain), in this run:", "", *targets(rows, chain), ""]
    if anchors:
        lines += [*anchors_table(rows, offline_anchors(args, args[args.index("--conditions") + 1]), chain), ""]
    lines += [*sleep_cost(rows), "", f"![WER by SNR]({rel}/wer_by_snr.png)", ""]
    md = (out_dir / "results.md").read_text(encoding="utf-8")
    lines += [md.replace("](", f"]({rel}/").replace("### ", "#### "), ""]
    subprocess.run(["rm", "-rf", str(out_dir / "audio")], check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="two clips per part")
    p.add_argument("--rerun", help="comma-separated chain labels: run only these again, keep the rest of the "
                                   "last run's results (after a change to the gate alone)")
    args = p.parse_args(argv)
    rerun = args.rerun.split(",") if args.rerun else None
    exe = Path(sys.executable).parent / "asr-stream"
    cpu, cores = cpu_and_cores()
    cmd = os.environ.get("BENCH_GATE_CMD", "python bench/bench_gate.py")
    L = [BEGIN, "## Denoising that never makes recognition worse: the gate", "",
         f"Made by `{cmd}` on {cpu} ({cores} cores). The gate (README, *Denoiser gate*) mixes the denoiser's "
         "output with its input by the stream's estimated SNR. It was calibrated by recipes/gate/calibrate.py "
         "(recipes/gate/RESULTS.md) on even LJSpeech clips, six noise files and LibriSpeech babble. These runs "
         "use what that never saw: odd LJSpeech clips, the other five noise files, babble made of the other "
         "clips (same speaker: the hardest babble). `any@N dB` = one of those noises at N dB; difference "
         "(words) = errors of the gated chain minus errors without a denoiser. Small clip counts: a few "
         "words either way are noise. Fast pace (as fast as the chain runs): WER, CPU and quality are "
         "as live, the latency columns are not (the evaluation matrix above has live latencies).", ""]
    conditions = ",".join(["clean"] + [f"{s}" for s in SNRS] + [f"babble@{s}" for s in SNRS])
    with tempfile.TemporaryDirectory() as tmp:
        tmp, noise_dir = Path(tmp), None
        if (SHARED / "speech" / "ljspeech").is_dir():
            manifest, noise_dir = held_out_setup(tmp, 2 if args.quick else 8)
            data = ["--dataset", str(manifest), "--noise-dir", str(noise_dir)]
        else:
            data, conditions = ["--dataset", "audioeval"], ",".join(["clean"] + [f"babble@{s}" for s in SNRS])
        part(exe, "gate-whisper", "Whisper tiny.en, held-out read speech",
             [*data, "--chains", ",".join(whisper_chains()), "--conditions", conditions, "--pace", "fast"],
             DEFAULT, L, rerun, anchors=True)
        if noise_dir is not None and AN4_MODEL.exists() and (SHARED / "speech" / "an4").is_dir():
            conditions_an4 = ",".join(["clean"] + [str(s) for s in SNRS] + [f"babble@{s}" for s in SNRS])
            nemo = "asr=nemo;model=an4_fastconformer_ctc;runtime=onnx;lookahead_ms=80"
            chains = [f"{BASELINE}:denoiser=none;{nemo}", f"dfn:denoiser=deepfilternet;gate=false;{nemo}",
                      f"dfn+gate:denoiser=deepfilternet;gate=true;{nemo}", f"gtcrn:denoiser=gtcrn;gate=false;{nemo}",
                      f"gtcrn+gate:denoiser=gtcrn;gate=true;{nemo}"]
            part(exe, "gate-an4", "AN4 test clips, the project's NeMo model (cache-aware, 80 ms); the gate "
                 "with the curves calibrated for NeMo models (recipes/gate/RESULTS-nemo.md, AN4 train split)",
                 ["--dataset", "an4", "--limit", "4" if args.quick else "40", "--noise-dir", str(noise_dir),
                  "--chains", ",".join(chains), "--conditions", conditions_an4,
                  "--pace", "fast"], "dfn+gate", L, rerun)
    L.append(END)
    write_section(args.out, "\n".join(L) + "\n", BEGIN, END)
    print(f"wrote the gate section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
