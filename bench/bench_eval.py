"""The evaluation matrix in BENCHMARKS.md: `asr-stream eval` over every chain that exists here.

Runs `asr-stream eval` (real-time pace) for:
1. read English speech (../shared LJSpeech, else the pytest-audioeval clips) mixed with real noise
   (../shared noise, else babble) at 10 and 0 dB and clean: no denoiser, DeepFilterNet (the
   default chain) and Demucs (the trained light checkpoint in ../shared, when present), each
   into Whisper;
2. real noisy recordings with clean references (../shared Valentini): the same chains, for
   PESQ/STOI/DNSMOS as well as WER;
3. AN4 test clips through the project's own NeMo model (asr_stream/data/models/an4_fastconformer_ctc.nemo),
   without and with DeepFilterNet, clean and at 5 dB.
Each part's tables and plots go to docs/bench/eval-*/ and are embedded in BENCHMARKS.md with
the command that made them.

    python bench/bench_eval.py --out BENCHMARKS.md [--quick]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

BEGIN, END = "<!-- eval:begin -->", "<!-- eval:end -->"
SHARED = ROOT.parent / "shared" / "data"
DOCS = ROOT / "docs" / "bench"
LIGHT_DEMUCS = SHARED / "models" / "demucs_valentini_light32.th"
AN4_MODEL = ROOT / "asr_stream" / "data" / "models" / "an4_fastconformer_ctc.nemo"


def parts(quick: bool) -> list[dict]:
    whisper_chains = ["no-denoiser", "default"]
    if LIGHT_DEMUCS.exists():
        whisper_chains.append(f"demucs-light32:denoiser={os.path.relpath(LIGHT_DEMUCS, ROOT)}")
    out = []
    read = "ljspeech" if (SHARED / "speech" / "ljspeech").is_dir() else "audioeval"
    out.append(dict(key="read-speech", title=f"Read English speech ({read}) in real noise, into Whisper tiny.en",
                    args=["--dataset", read, "--limit", "2" if quick else "5", "--chains", ",".join(whisper_chains),
                          "--conditions", "clean,10,0"]))
    if (SHARED / "speech" / "valentini").is_dir():
        out.append(dict(key="valentini", title="Real noisy recordings with clean references (Valentini), into Whisper",
                        args=["--dataset", "valentini", "--limit", "2" if quick else "6",
                              "--chains", ",".join(whisper_chains), "--conditions", "clean"]))
    if AN4_MODEL.exists() and (SHARED / "speech" / "an4").is_dir():
        nemo = "asr=nemo;model=an4_fastconformer_ctc;runtime=onnx;lookahead_ms=80"
        out.append(dict(key="an4-nemo", title="AN4 test clips through the project's NeMo model (cache-aware, 80 ms)",
                        args=["--dataset", "an4", "--limit", "4" if quick else "15",
                              "--chains", f"nemo-an4:denoiser=none;{nemo},nemo-an4-dfn:denoiser=deepfilternet;{nemo}",
                              "--conditions", "clean,5"]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="a few clips per part")
    args = p.parse_args(argv)
    exe = Path(sys.executable).parent / "asr-stream"
    L = [BEGIN, "## Evaluation matrix (`asr-stream eval`)", "",
         "Every chain that runs here, at real-time pace, on real speech and real noise: WER (Whisper English "
         "normaliser), caption latency against reference word times (Whisper's offline word timestamps on the "
         "clean clip), RTF per stage, and the enhancement quality of what the recogniser heard. "
         "Noise is mixed at the stated SNR over active speech (Silero VAD), seeded per clip and condition. "
         "Clip counts are small so `make bench` stays short: read the WERs as indications, not as rankings "
         "with error bars.", ""]
    for part in parts(args.quick):
        out_dir = DOCS / f"eval-{part['key']}"
        if out_dir.exists():
            for f in out_dir.iterdir():
                if f.is_file():
                    f.unlink()
                else:
                    subprocess.run(["rm", "-rf", str(f)], check=True)
        cmd = ["eval", *part["args"], "--out", os.path.relpath(out_dir, ROOT)]
        shown = "asr-stream " + " ".join(shlex.quote(a) for a in cmd)
        print(shown, flush=True)
        proc = subprocess.run([str(exe), *cmd], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        L += [f"### {part['title']}", "", f"    {shown}", ""]
        if proc.returncode != 0:
            L += [f"Failed (exit {proc.returncode}): `{proc.stderr.strip().splitlines()[-1][:300]}`", ""]
            continue
        md = (out_dir / "results.md").read_text(encoding="utf-8")
        rel = os.path.relpath(out_dir, ROOT)
        md = md.replace("](", f"]({rel}/").replace("### ", "#### ")
        L += [md, ""]
        # the clips' audio is regenerated on demand; keep only the report in the repository
        subprocess.run(["rm", "-rf", str(out_dir / "audio")], check=True)
    L.append(END)
    write_section(args.out, "\n".join(L) + "\n", BEGIN, END)
    print(f"wrote the evaluation section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
