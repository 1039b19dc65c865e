"""An evaluation's results as JSON, Markdown tables and PNG plots (matplotlib, no display)."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f} %"


def _ms(v):
    return "-" if v is None else f"{1000 * v:.0f}"


def _f(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _conditions(rows: list[dict]) -> list[str]:
    """Clean first, then noisier and noisier."""
    seen = {r["condition"]: r["snr"] for r in rows}
    return sorted(seen, key=lambda c: (seen[c] is not None, -(seen[c] or 0), c))


def _chains(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["chain"] not in out:
            out.append(r["chain"])
    return out


def markdown(rows: list[dict], plots: dict[str, str] | None = None, heading: str = "###") -> str:
    """Tables: WER (CER) per chain and condition; latency, speed and resources per chain and
    condition; enhancement quality where it was measured."""
    by = {(r["chain"], r["condition"]): r for r in rows}
    chains, conditions = _chains(rows), _conditions(rows)
    L = [f"{heading} WER (CER) by condition", "",
         "| chain | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for ch in chains:
        cells = [f"{_pct(by[ch, c]['wer'])} ({_pct(by[ch, c]['cer'])})" if (ch, c) in by else "-" for c in conditions]
        L.append(f"| {ch} | " + " | ".join(cells) + " |")
    L += ["", f"{heading} Caption latency, speed and resources", "",
          "Latency in ms from when a reference word's end entered the chain: first shown (partial) "
          "and committed (final), p50 / p95 / max over all words; *missed* = reference words never "
          "shown. RTF = busy time / audio time. CPU s = process CPU time over the cell's clips; peak RSS "
          "is the evaluating process's (every chain loaded so far).", "",
          "| chain | condition | clips | partial p50 / p95 / max | final p50 / p95 / max | missed | RTF denoiser "
          "| RTF recogniser | CPU s | peak RSS MB | dropped frames |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cells = [(ch, c, by[ch, c]) for ch in chains for c in conditions if (ch, c) in by]
    for ch, c, r in cells:
        lp, lf = r["latency_partial"], r["latency_final"]
        L.append(f"| {ch} | {c} | {r['clips']} | {_ms(lp['p50'])} / {_ms(lp['p95'])} / {_ms(lp['max'])} "
                 f"| {_ms(lf['p50'])} / {_ms(lf['p95'])} / {_ms(lf['max'])} | {r['missed_words']} "
                 f"| {_f(r['rtf_stages']['denoiser'])} | {_f(r['rtf_stages']['recognizer'])} "
                 f"| {r['cpu_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['dropped_frames']} |")
    if any(r.get("gate") for r in rows):
        L += ["", f"{heading} What the denoiser gate chose", "",
              "Mix = share of the denoised audio in what the recogniser heard (0 = the input as it was), "
              "averaged over time; bypassed = share of the audio with the denoiser bypassed; off = share "
              "with the denoiser stopped (the input read clean); SNR = the gate's own estimate, averaged "
              "over its readings.", "",
              "| chain | condition | mean mix | bypassed | denoiser off | estimated SNR dB |",
              "|---|---|---|---|---|---|"]
        for ch, c, r in cells:
            g = r.get("gate")
            if g:
                L.append(f"| {ch} | {c} | {g['mix']:.2f} | {100 * g['bypassed']:.0f} % "
                         f"| {100 * g.get('off', 0.0):.0f} % | {_f(g['snr_db'], 1)} |")
    if any(r.get("pesq") is not None or r.get("dnsmos") for r in rows):
        L += ["", f"{heading} What the recogniser heard: enhancement quality", "",
              "PESQ-WB and STOI against the clean speech (the clean recording, or the utterance before "
              "noise was mixed in); DNSMOS P.835 needs no reference. For a chain without a denoiser these "
              "score the input itself.", "",
              "| chain | condition | PESQ-WB | STOI | DNSMOS SIG | BAK | OVRL |", "|---|---|---|---|---|---|---|"]
        for ch, c, r in cells:
            d = r.get("dnsmos") or {}
            L.append(f"| {ch} | {c} | {_f(r.get('pesq'))} | {_f(r.get('stoi'), 3)} | {_f(d.get('sig'))} "
                     f"| {_f(d.get('bak'))} | {_f(d.get('ovrl'))} |")
    if plots:
        L.append("")
        for title, rel in plots.items():
            L += [f"![{title}]({rel})", ""]
    return "\n".join(L).rstrip() + "\n"


def plot(rows: list[dict], clips: list[dict], out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """WER vs SNR per chain, latency CDF per chain, RTF per stage per chain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    chains, files = _chains(rows), {}
    snrs = sorted({r["snr"] for r in rows if r["snr"] is not None})
    clean_x = (max(snrs) + 5) if snrs else 0  # "clean" drawn to the right of the highest SNR

    fig, ax = plt.subplots(figsize=(6, 4))
    for ch in chains:
        pts = sorted((clean_x if r["snr"] is None else r["snr"], r["wer"]) for r in rows
                     if r["chain"] == ch and r["wer"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=ch)
    ax.set_xticks(snrs + [clean_x], [f"{s:g}" for s in snrs] + ["clean"])
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER vs SNR")
    ax.grid(alpha=0.3)
    ax.legend()
    files["WER vs SNR"] = out_dir / f"{prefix}wer_vs_snr.png"
    fig.tight_layout()
    fig.savefig(files["WER vs SNR"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, ch in enumerate(chains):
        for kind, style in (("partial", "-"), ("final", "--")):
            v = np.sort([x for c in clips if c["chain"] == ch for x in c["latency"][kind]])
            if len(v):
                ax.plot(1000 * v, np.arange(1, len(v) + 1) / len(v), style, color=f"C{i}", label=f"{ch} {kind}")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of words")
    ax.set_title("Caption latency (CDF, all conditions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files["latency CDF"] = out_dir / f"{prefix}latency_cdf.png"
    fig.tight_layout()
    fig.savefig(files["latency CDF"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(chains))
    for j, stage in enumerate(("denoiser", "recognizer")):
        vals = []
        for ch in chains:
            mine = [r for r in rows if r["chain"] == ch]
            audio = sum(r["audio_seconds"] for r in mine)
            vals.append(sum(r["rtf_stages"][stage] * r["audio_seconds"] for r in mine) / audio if audio else 0)
        ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=stage)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xticks(x, chains, rotation=15)
    ax.set_ylabel("RTF (busy time / audio time)")
    ax.set_title("RTF per stage")
    ax.legend()
    files["RTF per stage"] = out_dir / f"{prefix}rtf_stages.png"
    fig.tight_layout()
    fig.savefig(files["RTF per stage"], dpi=110)
    plt.close(fig)
    return files


def write(rows: list[dict], clips: list[dict], out_dir: Path, meta: dict) -> dict[str, Path]:
    """results.json, results.md and the plots, in `out_dir`."""
    plots = plot(rows, clips, out_dir)
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "cells": rows}, indent=1), encoding="utf-8")
    md = markdown(rows, {k: v.name for k, v in plots.items()})
    (out_dir / "results.md").write_text(md, encoding="utf-8")
    return {"json": out_dir / "results.json", "markdown": out_dir / "results.md", **plots}
