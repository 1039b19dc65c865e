#!/usr/bin/env python
"""The Demucs benchmark: our streaming Demucs (`asr_stream.denoisers.demucs.DemucsStreamer`)
against the reference streamer (facebookresearch/denoiser's `DemucsStreamer`) and the offline
pass, on this machine, with one torch thread.

    python bench/bench_demucs.py [--quick] [--out BENCHMARKS.md]

1. speed: dns48 and dns64 shapes (random weights, fixed seed; speed does not depend on the
   weights) at hops of 256, 512 and 1024 samples, fed real speech (the bundled LJ001-0001.wav at
   16 kHz, repeated as needed): ms per `feed` call (mean, p95), RTF, algorithmic latency, for
   our streamer (default look-ahead, exact, int8) and the reference streamer; the offline
   forward pass's RTF on the same audio;
2. quality: a real trained causal Demucs (../shared/data/models/demucs_valentini_light32.th)
   on the Valentini noisy/clean pairs: PESQ-WB and STOI of the offline pass, our streamer in
   each mode and the reference streamer; how far the streamed output is from the offline one;
   PESQ against the input level (the running normalisation depends on it);
3. int8: PESQ and the SNR of int8 - fp32 on the same real checkpoint, and the dns48 speed ratio.

About 7-8 minutes on an idle 2-core machine; --quick (4 s timed, 2 pairs, 2 gains) under 3.

It replaces only the part of the Markdown file between `<!-- demucs:begin -->` and
`<!-- demucs:end -->` (creating the file, or appending the section, when absent). The command
line shown is the one this script was run with; set BENCH_DEMUCS_CMD (e.g. "make bench") to
show another. Without ../shared the quality and int8 tables are skipped and the section says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr_stream.denoisers.demucs import Demucs, DemucsStreamer  # noqa: E402
from asr_stream.denoisers.demucs_checkpoint import build_demucs, read_checkpoint  # noqa: E402
import common  # noqa: E402  (bench/ is on sys.path when a script there runs)

SHARED = ROOT.parent / "shared"
CHECKPOINT = SHARED / "data/models/demucs_valentini_light32.th"
VALENTINI = SHARED / "data/speech/valentini"
SPEECH = ROOT / "asr_stream/data/samples/LJ001-0001.wav"
SR = 16000
SEED = 0
HOPS = (256, 512, 1024)
MODELS = {"dns48": dict(hidden=48), "dns64": dict(hidden=64)}
GAINS = (0.1, 0.3, 1.0, 4.0)
INT8_THRESHOLDS = (1 << 16, 1 << 14, 1)  # DemucsStreamer.quantize's default min_size first
BEGIN, END = "<!-- demucs:begin -->", "<!-- demucs:end -->"


# ---------------------------------------------------------------------------------------------
# helpers


load_16k = common.load_16k


def machine_info() -> dict:
    cpu, usable = common.cpu_and_cores()
    try:
        from importlib import metadata

        ref_v = metadata.version("denoiser")
    except Exception:  # noqa: BLE001
        ref_v = "not installed"
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "cpu family" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    l3 = None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                l3 = (index / "size").read_text().strip()
        except OSError:
            pass
    l3_bytes = None
    if l3:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        l3_bytes = int(l3[:-1]) * units[l3[-1]] if l3[-1] in units else int(l3)
    return {"cpu": cpu, "l3": l3, "l3_bytes": l3_bytes, "cores": os.cpu_count(), "usable_cores": usable, "python": platform.python_version(),
            "torch": torch.__version__, "denoiser": ref_v,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_start": os.getloadavg()[0]}


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process), for `others_busy`."""
    busy = float("nan")
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.monotonic(), busy, t.user + t.system


def others_busy(a: tuple, b: tuple) -> float:
    """Cores' worth of CPU that other processes used between two snapshots (0 = idle machine)."""
    wall = b[0] - a[0]
    return max(((b[1] - a[1]) - (b[2] - a[2])) / wall, 0.0) if wall > 0 else float("nan")


def bench_command(argv: list[str]) -> str:
    return os.environ.get("BENCH_DEMUCS_CMD") or "python bench/bench_demucs.py" + "".join(
        " " + shlex.quote(a) for a in argv)


def code(s: str) -> str:
    return f"`{s}`"


def f(v, digits=2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def reference_classes():
    from denoiser.demucs import Demucs as RefDemucs, DemucsStreamer as RefStreamer

    return RefDemucs, RefStreamer


def reference_model(hparams: dict, state: dict):
    RefDemucs, _ = reference_classes()
    ref = RefDemucs(**hparams)
    ref.load_state_dict(state)
    return ref.eval()


def weight_bytes(streamer: DemucsStreamer) -> tuple[int, int, int]:
    """(bytes the per-hop matmuls read, weights in all matmuls, weights stored int8)."""
    total = sum(mm.size for mm in streamer.matmuls())
    q = sum(mm.size for mm in streamer.matmuls() if mm.packed is not None)
    return 4 * (total - q) + q, total, q


# ---------------------------------------------------------------------------------------------
# 1. speed


@dataclass
class Timing:
    model: str
    hop: int
    variant: str  # "default" | "exact" | "int8" | "reference"
    times: list[float] = field(default_factory=list)
    latency_ms: float | None = None
    note: str = ""

    @property
    def mean_ms(self) -> float:
        return 1000 * float(np.mean(self.times))

    @property
    def p95_ms(self) -> float:
        return 1000 * float(np.percentile(self.times, 95))

    @property
    def rtf(self) -> float:
        return float(np.sum(self.times)) / (len(self.times) * self.hop / SR)


def time_feeds(feed, audio: torch.Tensor, hop: int, warm: int) -> list[float]:
    """Feed audio (1, n) in hops; the first `warm` samples untimed; each later feed timed."""
    for i in range(0, warm, hop):
        feed(audio[:, i:i + hop])
    times, produced = [], 0
    for i in range(warm, audio.shape[1] - hop + 1, hop):
        chunk = audio[:, i:i + hop]
        t0 = time.perf_counter()
        out = feed(chunk)
        times.append(time.perf_counter() - t0)
        produced += out.shape[1]
    expected = len(times) * hop
    if produced != expected:  # past warm-up every hop must come back whole
        raise RuntimeError(f"streamer produced {produced} samples for {expected} timed input samples")
    return times


def run_speed(speech: np.ndarray, timed_s: float, warm_s: float, log) -> tuple[list[Timing], dict]:
    _, RefStreamer = reference_classes()
    warm = int(round(warm_s * SR / max(HOPS))) * max(HOPS)  # a whole number of every hop
    timed = int(round(timed_s * SR / max(HOPS))) * max(HOPS)
    reps = -(-(warm + timed) // len(speech))
    audio = torch.from_numpy(np.tile(speech, reps)[:warm + timed].copy())[None]
    results: list[Timing] = []
    extra: dict = {"warm_s": warm / SR, "timed_s": timed / SR, "offline": {}, "bytes": {}}
    for name, kwargs in MODELS.items():
        torch.manual_seed(SEED)
        model = Demucs(**kwargs).eval()
        ref = reference_model(model.hparams, model.state_dict())
        n_params = sum(p.numel() for p in model.parameters())
        step = model.total_stride
        # the offline pass on the same timed audio (after one untimed pass on the warm-up second)
        with torch.inference_mode():
            model(audio[:, :warm][None])
            offline = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(audio[:, warm:][None])
                offline.append(time.perf_counter() - t0)
        extra["offline"][name] = float(np.median(offline)) / (timed / SR)
        log(f"  {name}: offline forward RTF {extra['offline'][name]:.3f} (median of 3)")
        for hop in HOPS:
            variants = ["default", "reference", "int8"] + (["exact"] if hop == HOPS[0] else [])
            for variant in variants:
                t = Timing(name, hop, variant)
                if variant == "reference":
                    with torch.no_grad():
                        rs = RefStreamer(ref, num_frames=hop // step)
                        t.times = time_feeds(rs.feed, audio, hop, warm)
                    t.latency_ms = 1000 * rs.total_length / SR
                else:
                    s = DemucsStreamer(model, lookahead=None if variant == "exact" else 64)
                    if variant == "int8":
                        s.quantize()
                    b, total, q = weight_bytes(s)
                    extra["bytes"][(name, variant)] = (b, total, q, n_params)
                    t.times = time_feeds(s.feed, audio, hop, warm)
                    t.latency_ms = 1000 * (s.latency_samples + hop - step) / SR
                results.append(t)
                log(f"  {name} hop {hop:4d} {variant:9s}: {t.mean_ms:7.2f} ms/hop (p95 {t.p95_ms:7.2f}), "
                    f"RTF {t.rtf:.3f}, latency {t.latency_ms:.1f} ms")
    return results, extra


# ---------------------------------------------------------------------------------------------
# 2. and 3. quality on the real checkpoint


def pesq_wb(clean: np.ndarray, x: np.ndarray) -> float:
    from pesq import pesq

    try:
        return float(pesq(SR, clean.astype(np.float64), x.astype(np.float64), "wb"))
    except Exception:  # noqa: BLE001  (e.g. NoUtterancesError on a silent output)
        return float("nan")


def stoi(clean: np.ndarray, x: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(clean, x, SR, extended=False))


def stream(streamer, x: np.ndarray, hop: int) -> np.ndarray:
    """The whole of x (n,) through a streamer in hops, then its flush; (n,) out."""
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None]
    outs = []
    with torch.no_grad():
        for i in range(0, t.shape[1], hop):
            outs.append(streamer.feed(t[:, i:i + hop]))
        outs.append(streamer.flush())
    y = torch.cat(outs, 1)[0].numpy()
    if len(y) != len(x):
        raise RuntimeError(f"streamed {len(y)} samples for {len(x)} in")
    return y


def offline(model: Demucs, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None, None])[0, 0].numpy()


def snr_db(ref: np.ndarray, diff: np.ndarray) -> float:
    p, d = float(np.sum(ref.astype(np.float64) ** 2)), float(np.sum(diff.astype(np.float64) ** 2))
    return float("inf") if d == 0 else 10 * math.log10(p / d)


def run_quality(quick: bool, log) -> dict:
    hparams, state = read_checkpoint(CHECKPOINT)
    model = build_demucs(hparams, state, CHECKPOINT)
    ref = reference_model(hparams, state)
    _, RefStreamer = reference_classes()
    hop = model.total_stride
    names = sorted(p.name for p in (VALENTINI / "noisy").glob("*.wav") if (VALENTINI / "clean" / p.name).is_file())
    if quick:
        names = names[:2]
    pairs = [(n, load_16k(VALENTINI / "noisy" / n), load_16k(VALENTINI / "clean" / n)) for n in names]
    for n, a, b in pairs:
        if len(a) != len(b):
            raise RuntimeError(f"{n}: noisy and clean lengths differ")

    def ours(**kw):
        return DemucsStreamer(model, **kw)

    def ours_int8(min_size):
        s = DemucsStreamer(model)
        s.quantize(min_size=min_size)
        return s

    rows: dict[str, dict] = {}

    def add(key, label, outs):
        rows[key] = {"label": label, "outs": outs,
                     "pesq": float(np.nanmean([pesq_wb(c, y) for (_, _, c), y in zip(pairs, outs)])),
                     "stoi": float(np.mean([stoi(c, y) for (_, _, c), y in zip(pairs, outs)]))}
        log(f"  {label}: PESQ {rows[key]['pesq']:.3f}, STOI {rows[key]['stoi']:.3f}")

    add("noisy", "noisy input (no denoiser)", [x for _, x, _ in pairs])
    off = [offline(model, x) for _, x, _ in pairs]
    add("offline", "offline pass, `model(x)` (whole file, its own std)", off)
    add("default", "our streamer, default (look-ahead 64, running scale)",
        [stream(ours(), x, hop) for _, x, _ in pairs])
    add("exact", "our streamer, exact (`lookahead=None`, running scale)",
        [stream(ours(lookahead=None), x, hop) for _, x, _ in pairs])
    scales = [float(model.input_scale(torch.from_numpy(x)[None, None])) for _, x, _ in pairs]
    add("fixed_default", "our streamer, default look-ahead, offline scale passed in",
        [stream(ours(scale=s), x, hop) for (_, x, _), s in zip(pairs, scales)])
    add("fixed_exact", "our streamer, exact, offline scale passed in",
        [stream(ours(lookahead=None, scale=s), x, hop) for (_, x, _), s in zip(pairs, scales)])
    int8_info = {}
    for th in INT8_THRESHOLDS:
        probe = ours_int8(th)
        _, total, q = weight_bytes(probe)
        n_mm = len(probe.matmuls())
        n_q = sum(mm.packed is not None for mm in probe.matmuls())
        int8_info[th] = {"total": total, "q": q, "n_mm": n_mm, "n_q": n_q}
        add(f"int8_{th}", f"our streamer, default, int8 (`quantize(min_size={th})`: {n_q} of {n_mm} matmuls, "
                          f"{100 * q / total:.0f}% of the weights)",
            [stream(ours_int8(th), x, hop) for _, x, _ in pairs])
    add("reference", "reference `DemucsStreamer(num_frames=1)`",
        [stream(RefStreamer(ref, num_frames=1), x, hop) for _, x, _ in pairs])

    diffs = {}
    for key in ("fixed_default", "fixed_exact", "default", "exact", "reference"):
        diffs[key] = max(float(np.max(np.abs(y - o))) for y, o in zip(rows[key]["outs"], off))
    peak = max(float(np.max(np.abs(o))) for o in off)

    fp32 = np.concatenate(rows["default"]["outs"])
    snrs = {th: snr_db(fp32, np.concatenate(rows[f"int8_{th}"]["outs"]) - fp32) for th in INT8_THRESHOLDS}

    sweep = []
    gains = (0.1, 1.0) if quick else GAINS
    for kind in ("noisy", "clean"):
        for g in gains:
            res = {}
            for method in ("offline", "ours", "reference"):
                scores = []
                for _, noisy, clean in pairs:
                    x = (noisy if kind == "noisy" else clean) * np.float32(g)
                    if method == "offline":
                        y = offline(model, x)
                    elif method == "ours":
                        y = stream(ours(), x, hop)
                    else:
                        y = stream(RefStreamer(ref, num_frames=1), x, hop)
                    scores.append(pesq_wb(clean, y / np.float32(g)))
                res[method] = float(np.nanmean(scores))
            sweep.append((kind, g, res))
            log(f"  gain sweep {kind} x{g:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))

    probe = ours().scale
    return {"hparams": hparams, "hop": hop, "quick": quick, "prior_std": probe.prior_std,
            "prior_s": probe.prior_weight / SR, "pairs": [n for n, _, _ in pairs],
            "seconds": sum(len(x) for _, x, _ in pairs) / SR, "lengths": [len(x) / SR for _, x, _ in pairs], "rows": rows, "diffs": diffs, "peak": peak,
            "snrs": snrs, "int8_info": int8_info,
            "largest_matmul": max(mm.size for mm in ours().matmuls()), "sweep": sweep, "scales": scales}


# ---------------------------------------------------------------------------------------------
# report


VARIANT_NAME = {"default": "ours, fp32, default look-ahead 64", "exact": "ours, fp32, exact (`lookahead=None`)",
                "int8": "ours, int8 (`quantize()`)", "reference": "reference `DemucsStreamer`"}


def render(speed: list[Timing], sx: dict, quality: dict | None, quality_note: str, info: dict, cmd: str,
           total_s: float) -> tuple[str, list[str]]:
    L = [BEGIN, "## Demucs: our streamer against the reference, and the offline pass", ""]
    L.append(f"Produced by {code(cmd)} — {info['date']}; CPU {info['cpu']}, {info['cores']} cores "
             f"({info['usable_cores']} usable); Python {info['python']}, torch {info['torch']}, reference "
             f"`denoiser` {info['denoiser']}. One torch thread (`torch.set_num_threads(1)`), models in eval "
             f"mode, fp32 unless stated. The whole benchmark took {total_s:.0f} s (speed "
             f"{info['speed_s']:.0f} s" + (f", quality and int8 {info['quality_s']:.0f} s" if "quality_s" in info
                                            else "") + f"); 1-minute load average "
             f"{info['load_start']:.2f} at the start, {info['load_end']:.2f} at the end; during the speed "
             f"measurements other processes kept {f(info['others_speed'])} of the {info['usable_cores']} cores "
             f"busy on average (/proc/stat less this process). Timings on a small "
             f"({info['usable_cores']}-core) VM are noisy: another process on the other core shares caches and memory bandwidth, "
             f"so read differences under ~10–20% as noise.")
    L.append("")

    # -- speed
    by = {(t.model, t.hop, t.variant): t for t in speed}
    L += ["### Speed (random weights, seed 0; speed does not depend on the weights)", "",
          f"Input: `asr_stream/data/samples/LJ001-0001.wav` resampled to 16 kHz, repeated: {sx['warm_s']:.2f} s untimed "
          f"warm-up, then {sx['timed_s']:.2f} s fed one hop per call, each `feed` call timed with "
          f"`time.perf_counter`. RTF = time in `feed` / audio duration. Algorithmic latency = "
          f"(latency_samples + hop − 256) / 16 kHz: the look-ahead plus the wait for a whole hop; for the "
          f"reference it is its `total_length` (the same formula). The reference runs with "
          f"`num_frames = hop / 256`, under `torch.no_grad()`; \"reference ÷ ours\" is the reference's mean "
          f"ms per hop over ours at the same hop (above 1: ours is faster).", "",
          "| model | hop | streamer | ms/hop mean | ms/hop p95 | RTF | algorithmic latency ms | reference ÷ ours |",
          "|---|---|---|---|---|---|---|---|"]
    out = ["speed (ms per hop mean / p95, RTF, latency):"]
    for name in MODELS:
        for hop in HOPS:
            r = by[(name, hop, "reference")]
            for variant in ("default", "exact", "int8", "reference"):
                t = by.get((name, hop, variant))
                if t is None:
                    continue
                ratio = "" if variant == "reference" else f"{r.mean_ms / t.mean_ms:.2f}×"
                label = VARIANT_NAME[variant] + (f" (num_frames={hop // 256})" if variant == "reference" else "")
                L.append(f"| {name} | {hop} ({1000 * hop // SR} ms) | {label} | {t.mean_ms:.2f} | {t.p95_ms:.2f} | "
                         f"{t.rtf:.3f} | {t.latency_ms:.1f} | {ratio} |")
                out.append(f"  {name} hop {hop:4d} {variant:9s} {t.mean_ms:7.2f} / {t.p95_ms:7.2f} ms, RTF {t.rtf:.3f}, "
                           f"latency {t.latency_ms:.1f} ms" + (f", reference/ours {ratio}" if ratio else ""))
        L.append(f"| {name} | whole input | offline forward pass, `model(x)` on the {sx['timed_s']:.2f} s "
                 f"(median of 3) | | | {sx['offline'][name]:.3f} | (whole file) | |")
        out.append(f"  {name} offline RTF {sx['offline'][name]:.3f}")
    L.append("")
    b48, total48, _, nparam48 = sx["bytes"][("dns48", "default")]
    b48q, _, q48, _ = sx["bytes"][("dns48", "int8")]
    t256 = by[("dns48", 256, "default")]
    q256 = by[("dns48", 256, "int8")]
    def fits(nbytes: int) -> str:
        if not info.get("l3_bytes"):
            return "compare with"
        return "more than" if nbytes > info["l3_bytes"] else "less than"

    L.append(f"Memory traffic: dns48 has {nparam48 / 1e6:.2f} M parameters, {4 * nparam48 / 1e6:.1f} MB in fp32, "
             f"and every deepest frame (256 input samples, 16 ms) multiplies its activations by all of them once "
             f"(the streamer's matmuls hold {total48 / 1e6:.2f} M weights, {b48 / 1e6:.1f} MB), "
             f"{fits(b48)} this CPU's last-level cache (L3 {info['l3'] or 'size unknown'}, as the VM reports it), "
             + ("so at one frame per hop each `feed` reads them all from memory: measured "
                if fits(b48) == "more than" else "measured ")
             + f"{t256.mean_ms:.2f} ms per 16 ms hop, i.e. {b48 / t256.mean_ms / 1e6:.1f} GB/s of weights. "
             f"`quantize()` stores {q48 / 1e6:.2f} M of those weights in int8 ({b48q / 1e6:.1f} MB per frame, "
             f"{fits(b48q)} the L3): {q256.mean_ms:.2f} ms per hop ({b48q / q256.mean_ms / 1e6:.1f} GB/s). Longer hops run several "
             f"frames per read of the weights, hence the lower RTF at 512 and 1024.")
    L.append("")

    # -- quality
    L += ["### Quality on real speech (trained checkpoint, Valentini pairs)", ""]
    if quality is None:
        L += [f"**Skipped: {quality_note}**", ""]
        out.append(f"quality: skipped ({quality_note})")
    else:
        q = quality
        h = q["hparams"]
        rows = q["rows"]
        L.append(f"Model: `../shared/data/models/demucs_valentini_light32.th` (CC-BY-NC, used in place), a causal "
                 f"Demucs trained on Valentini: hidden {h['hidden']}, depth {h['depth']}, resample "
                 f"{h['resample']}, growth {h['growth']}, glu {h['glu']}. Data: "
                 f"{'(`--quick`: only the first) ' if q['quick'] else ''}{len(q['pairs'])} Valentini "
                 f"noisy/clean pairs in `../shared/data/speech/valentini` ({', '.join(q['pairs'])}; "
                 f"{q['seconds']:.1f} s, 16 kHz). Every "
                 f"streamer is fed {q['hop']}-sample hops (this model's frame, {1000 * q['hop'] / SR:g} ms; the "
                 f"reference with `num_frames=1`, the same hop), then flushed; outputs are aligned with the input. "
                 f"PESQ-WB (`pesq`, mode wb) and STOI (`pystoi`) against the clean file, averaged over the pairs.")
        L += ["", "| condition | PESQ-WB | STOI |", "|---|---|---|"]
        out.append("quality (PESQ-WB, STOI):")
        for key, r in rows.items():
            L.append(f"| {r['label']} | {r['pesq']:.3f} | {r['stoi']:.3f} |")
            out.append(f"  {r['label']}: {r['pesq']:.3f} {r['stoi']:.3f}")
        d = q["diffs"]
        exact_note = ("exact matches it to float rounding" if d["fixed_exact"] < 1e-4 * max(q["peak"], 1e-9)
                      else "exact does NOT match it to float rounding")
        L += ["", f"Streamed against offline, max |difference| over all samples of all pairs (offline output peak "
                  f"{q['peak']:.3f}). With the offline scale passed in, which isolates the streaming arithmetic: "
                  f"default look-ahead {d['fixed_default']:.2e} (its up-sampler reads zeros for the input that "
                  f"has not arrived yet), exact {d['fixed_exact']:.2e} ({exact_note}). With the running scale: "
                  f"default {d['default']:.2e}, exact {d['exact']:.2e}; the reference streamer "
                  f"{d['reference']:.2e}.", ""]
        out.append(f"  max |stream - offline|: fixed scale default {d['fixed_default']:.2e}, exact "
                   f"{d['fixed_exact']:.2e}; running scale default {d['default']:.2e}, exact {d['exact']:.2e}; "
                   f"reference {d['reference']:.2e}")
        L += ["#### PESQ-WB against the input level", "",
              "Input (noisy, or the clean file itself) multiplied by the gain, output divided by it, PESQ against "
              "the clean file. The offline pass divides by the whole file's std, so the level barely matters; "
              "both streamers must estimate it as the audio arrives (ours blends its running RMS with a prior "
              f"std of {q['prior_std']:g} worth {q['prior_s']:g} s of audio, the reference starts from nothing). "
              f"The Valentini clips are short ({min(q['lengths']):.1f}–{max(q['lengths']):.1f} s), so the start "
              f"of each weighs heavily here.", "",
              "| input | gain | offline | ours, default | reference streamer |", "|---|---|---|---|---|"]
        out.append("gain sweep (PESQ offline / ours / reference):")
        for kind, g, res in q["sweep"]:
            L.append(f"| {kind} | ×{g:g} | {res['offline']:.3f} | {res['ours']:.3f} | {res['reference']:.3f} |")
            out.append(f"  {kind} x{g:g}: {res['offline']:.3f} / {res['ours']:.3f} / {res['reference']:.3f}")
        L.append("")

    # -- int8
    L += ["### int8 cost", ""]
    ratios = [(hop, by[('dns48', hop, 'int8')].mean_ms / by[('dns48', hop, 'default')].mean_ms) for hop in HOPS]
    ratio_txt = ", ".join(f"hop {hop}: {r:.2f}" for hop, r in ratios)
    if quality is not None:
        q = quality
        info8 = q["int8_info"]
        L.append(f"Random weights say little about what int8 does to the output, so this uses the trained "
                 f"checkpoint above (default look-ahead, running scale, the same pairs and hops). Its matmuls are "
                 f"small: the largest holds {q['largest_matmul']} weights, "
                 f"so `quantize()`'s default threshold (`min_size=65536`) quantises {info8[1 << 16]['n_q']} of its "
                 f"{info8[1 << 16]['n_mm']} matmuls; lower thresholds show what int8 costs. SNR = fp32 output power "
                 f"over the power of (int8 − fp32), all pairs together.")
        L += ["", "| streamer | int8 matmuls | int8 share of weights | PESQ-WB | STOI | SNR of int8 − fp32 (dB) |",
              "|---|---|---|---|---|---|"]
        r = q["rows"]["default"]
        L.append(f"| fp32 | 0 | 0% | {r['pesq']:.3f} | {r['stoi']:.3f} | |")
        out.append("int8 on the trained checkpoint (PESQ, STOI, SNR):")
        out.append(f"  fp32: {r['pesq']:.3f} {r['stoi']:.3f}")
        for th in INT8_THRESHOLDS:
            r, i8, s = q["rows"][f"int8_{th}"], info8[th], q["snrs"][th]
            snr = "identical" if math.isinf(s) else f"{s:.1f}"
            L.append(f"| int8, `quantize(min_size={th})` | {i8['n_q']} of {i8['n_mm']} | "
                     f"{100 * i8['q'] / i8['total']:.0f}% | {r['pesq']:.3f} | {r['stoi']:.3f} | {snr} |")
            out.append(f"  int8 min_size={th}: {r['pesq']:.3f} {r['stoi']:.3f}, SNR {snr}")
        L.append("")
    else:
        L += [f"Quality part skipped: {quality_note}", ""]
    _, total48i, q48i, _ = sx["bytes"][("dns48", "int8")]
    L.append(f"Speed, dns48 (table above; `quantize()` makes {100 * q48i / total48i:.0f}% of its weights int8): "
             f"int8 time per hop ÷ fp32 (default look-ahead): {ratio_txt}.")
    out.append(f"dns48 int8/fp32 time per hop: {ratio_txt}")
    L += ["", END]
    return "\n".join(L) + "\n", out


def write_section(path: Path, section: str) -> None:
    common.write_section(path, section, BEGIN, END)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="4 s of timed audio, 2 Valentini pairs, gains 0.1 and 1 only (under ~3 minutes)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"),
                   help="Markdown file whose demucs section is written (default BENCHMARKS.md at the repo root)")
    args = p.parse_args(argv)
    cmd = bench_command(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)

    t_start = time.monotonic()
    info = machine_info()

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"bench_demucs: {cmd}")
    log(f"  machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, torch {info['torch']}; "
        f"load average {info['load_start']:.2f}")
    speech = load_16k(SPEECH)
    snap = cpu_snapshot()
    speed, sx = run_speed(speech, 4.0 if args.quick else 10.0, 1.0, log)
    info["others_speed"] = others_busy(snap, cpu_snapshot())
    info["speed_s"] = time.monotonic() - t_start
    log(f"  speed part: {info['speed_s']:.0f} s; other processes used {info['others_speed']:.2f} cores meanwhile")

    quality, note = None, ""
    if not CHECKPOINT.is_file():
        note = ("../shared/data/models/demucs_valentini_light32.th not found on this machine (the trained "
                "checkpoint lives beside the checkout, in ../shared)")
    elif not (VALENTINI / "noisy").is_dir() or not (VALENTINI / "clean").is_dir():
        note = "../shared/data/speech/valentini/noisy and clean not found on this machine"
    if note:
        log(f"  quality: skipped: {note}")
    else:
        t0 = time.monotonic()
        quality = run_quality(args.quick, log)
        info["quality_s"] = time.monotonic() - t0
        log(f"  quality part: {info['quality_s']:.0f} s")
    info["load_end"] = os.getloadavg()[0]
    total = time.monotonic() - t_start
    section, lines = render(speed, sx, quality, note, info, cmd, total)
    out = Path(args.out)
    write_section(out, section)
    print("\n".join(lines))
    print(f"wrote the demucs section of {out} in {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
