#!/usr/bin/env python
"""Calibrate the denoiser gate: the noise estimator's map to dB and the mix-by-SNR curve.

Why: the gate (asr_stream/denoisers/gate.py) mixes a denoiser's output with its input by the
stream's estimated SNR. Both numbers it needs are measured here, on real speech and real noise
from ../shared, with a split the tests and the benchmark do not see:

1. `mixtures`  - calibration split: the even LJSpeech clips, six of the real noise files, babble
                 of four LibriSpeech talkers (the first 60), at -5, 0, 5 and 10 dB, and clean.
2. `measure`   - each mixture through each denoiser once (streamed, hop by hop); the estimator's
                 raw reading over the stream; Whisper tiny.en offline on the input mixed with the
                 denoised audio at mix 0, 0.25, 0.5, 0.75 and 1 (mixing is linear, so one
                 denoising pass serves every mix).
3. `fit`       - per denoiser: the raw reading -> mixing SNR map (mean raw reading at each SNR),
                 and two curves, real noise and babble (the gate tells them apart with the VAD):
                 at each SNR the mix with the fewest errors there and (at half weight) at the
                 SNRs either side, if that is at least 10 % fewer than without the denoiser
                 (else 0: bypass), a tie going to the lighter mix; in real noise a lower SNR
                 gets no less than the next higher one unless the lighter mix clearly wins there;
                 bypass from 15 dB up (clean recordings read 19 dB and more).
4. `held_out`  - the map's error on the held-out split: odd LJSpeech clips, the other noise
                 files, babble from other talkers.
5. writes asr_stream/denoisers/gate_calibration.json and recipes/gate/RESULTS.md.

    .venv/bin/python recipes/gate/calibrate.py [--clips 16] [--denoisers deepfilternet,gtcrn]

(about 40 min on 2 cores; `make calibrate-gate`). `--measured FILE` refits from a previous
run's measurements (written to the work dir) without measuring again.

The curves are the recogniser's: a model trained on clean, narrow data (a fine-tuned
Conformer-CTC) gains from denoised audio where Whisper, trained on noisy audio, loses. So
`--recognizer nemo` fits curves for CTC models with the project's AN4 model
(asr_stream/data/models/an4_fastconformer_ctc.nemo, streamed as the chain runs it) on AN4's train
split (the bench holds out its test split), same noises and babble, and adds them under
`curve_by_recognizer` without touching the estimator maps (those are the denoiser's); its table
goes to recipes/gate/RESULTS-nemo.md (about 7 min with `--clips 40 --denoisers deepfilternet`).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from asr_stream.denoisers import denoise_all  # noqa: E402
from asr_stream.io.audio_files import load_16k  # noqa: E402
from asr_stream.evaluation.mixing import looped_segment, mix_at_snr, power  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CALIBRATION_NOISES = ["doing_the_dishes", "exercise_bike", "running_tap", "speechbrain_noise1",
                      "speechbrain_noise3", "pink_noise"]
HELD_OUT_NOISES = ["dude_miaowing", "white_noise", "speechbrain_noise2", "speechbrain_noise4",
                   "speechbrain_noise5"]
SNRS = [10, 5, 0, -5]
MIXES = [0.0, 0.25, 0.5, 0.75, 1.0]
BYPASS_ABOVE_DB = 15.0
CLEAR_GAIN = 0.10  # a mix must make at least 10 % fewer errors than no denoiser to be chosen
OUT_JSON = ROOT / "asr_stream" / "denoisers" / "gate_calibration.json"
OUT_MD = ROOT / "recipes" / "gate" / "RESULTS.md"
AN4_MODEL = "an4_fastconformer_ctc"  # bundled; what `--recognizer nemo` calibrates with


def ljspeech(split: str) -> list[tuple[Path, str]]:
    base = SHARED / "speech" / "ljspeech"
    texts = dict(line.split("\t", 1) for line in (base / "transcripts.tsv").read_text().splitlines() if "\t" in line)
    clips = sorted(base.glob("*.wav"))
    clips = clips[::2] if split == "calibration" else clips[1::2]
    return [(p, texts[p.name]) for p in clips]


def an4_train(limit: int) -> list[tuple[Path, str]]:
    """`limit` AN4 train utterances spread evenly over the split (it is ordered by speaker)."""
    sys.path.insert(0, str(ROOT / "recipes" / "an4"))
    from train_an4 import read_split  # noqa: E402  (the recipe's own reading of AN4)

    clips = read_split(SHARED / "speech" / "an4", "train")
    return clips[:: max(1, len(clips) // limit)][:limit]


def babble_talkers(split: str) -> list[np.ndarray]:
    files = sorted((SHARED / "speech" / "librispeech_unlabeled").rglob("*.flac"))
    return [load_16k(p) for p in (files[:60] if split == "calibration" else files[60:120])]


def mixtures(split: str, limit: int, recognizer: str = "whisper"):
    """(clip, reference, kind, snr, audio) for each clip under each condition, seeded per clip."""
    noises = CALIBRATION_NOISES if split == "calibration" else HELD_OUT_NOISES
    talkers = babble_talkers(split)
    clips = an4_train(limit) if recognizer == "nemo" else ljspeech(split)[:limit]
    for i, (path, text) in enumerate(clips):
        speech = load_16k(path)
        rng = np.random.default_rng(i)
        yield path.name, text, "clean", None, speech
        for snr in SNRS:
            noise = looped_segment(load_16k(SHARED / "noise" / f"{noises[i % len(noises)]}.wav"), len(speech), rng)
            yield path.name, text, "real", snr, mix_at_snr(speech, noise, snr)[0]
            picks = rng.choice(len(talkers), 4, replace=False)
            babble = np.sum([looped_segment(talkers[j], len(speech), rng) / math.sqrt(power(talkers[j]))
                             for j in picks], axis=0).astype(np.float32)
            yield path.name, text, "babble", snr, mix_at_snr(speech, babble, snr)[0]


def raw_reading(x: np.ndarray, e: np.ndarray) -> float | None:
    """The estimator's median raw reading over a stream (fed in 20 ms pieces, as the chain does)."""
    from asr_stream.denoisers.noise_estimate import NoiseEstimator

    est, values = NoiseEstimator(), []
    for i in range(0, len(x), 320):
        est.update(x[i : i + 320], e[i : i + 320])
        raw, _ = est.raw_snr_db()
        if raw is not None:
            values.append(min(raw, 60.0))
    return float(np.median(values)) if values else None


def whisper_transcriber():
    """Whisper tiny.en offline on a whole clip (greedy, no VAD)."""
    from faster_whisper import WhisperModel

    from asr_stream.recognizers.whisper import bundled_model_path

    model = WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8", cpu_threads=1)

    def transcribe(x):
        segments, _ = model.transcribe(x.astype(np.float32), language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False)
        return " ".join(s.text for s in segments)

    return transcribe


def nemo_transcriber():
    """The AN4 model streamed as the chain runs it (cache-aware, 80 ms look-ahead, ONNX): short
    clips are where a streaming CTC model and its offline decode differ most."""
    from asr_stream.recognizers import create_recognizer

    recognizer = create_recognizer("nemo", model=AN4_MODEL, runtime="onnx", lookahead_ms=80, live=False)

    def transcribe(x):
        recognizer.reset()
        hyps = []
        for i in range(0, len(x), 1600):
            recognizer.accept_waveform(x[i : i + 1600].astype(np.float32))
            hyps += recognizer.decode()
        hyps += recognizer.finish()
        return " ".join(h.text for h in hyps if h.final)

    return transcribe


def measure(denoisers: list[str], limit: int, log, recognizer: str = "whisper") -> list[dict]:
    from asr_stream.denoisers import create_denoiser
    from asr_stream.evaluation.metrics import normalize

    stages = {name: create_denoiser(name) for name in denoisers}
    text_of = nemo_transcriber() if recognizer == "nemo" else whisper_transcriber()

    def transcribe(x):
        return normalize(text_of(x)) or "<empty>"

    rows, t0 = [], time.monotonic()
    for clip, text, kind, snr, x in mixtures("calibration", limit, recognizer):
        row = {"clip": clip, "reference": normalize(text), "kind": kind, "snr": snr, "raw": {},
               "hyp": {"none": transcribe(x)}}
        for name, stage in stages.items():
            e = denoise_all(stage, x)
            row["raw"][name] = raw_reading(x, e)
            for mix in MIXES[1:]:
                row["hyp"][f"{name}@{mix}"] = transcribe(x + mix * (e - x))
        rows.append(row)
        log(f"{clip} {kind} {snr}: {time.monotonic() - t0:.0f} s")
    return rows


def wer(rows: list[dict], key: str) -> tuple[float, int, int]:
    """(WER, errors, reference words) pooled over rows."""
    import jiwer

    refs = [r["reference"] for r in rows]
    hyps = [r["hyp"][key] for r in rows]
    out = jiwer.process_words(refs, hyps)
    errors = out.substitutions + out.deletions + out.insertions
    words = sum(len(r.split()) for r in refs)
    return errors / words, errors, words


def fit(rows: list[dict], denoisers: list[str]) -> dict:
    out = {}
    for name in denoisers:
        points = []
        for snr in sorted(SNRS):
            raws = [r["raw"][name] for r in rows if r["snr"] == snr and r["raw"].get(name) is not None]
            points.append((round(float(np.mean(raws)), 2), float(snr)))
        curves = {}
        for kind, label in (("real", "noise"), ("babble", "babble")):
            errors = {(snr, mix): wer([r for r in rows if r["snr"] == snr and r["kind"] == kind],
                                      "none" if mix == 0 else f"{name}@{mix}")[1] for snr in SNRS for mix in MIXES}
            levels = sorted(SNRS)
            curve, scores = [], []
            for i, snr in enumerate(levels):
                # fewest errors at this SNR plus half those at the SNRs either side: a few clips per
                # cell make single cells noisy, and the best mix changes slowly with the SNR
                near = [(levels[j], 1.0 if j == i else 0.5) for j in (i - 1, i, i + 1) if 0 <= j < len(levels)]
                score = {mix: sum(w * errors[(s, mix)] for s, w in near) for mix in MIXES}
                # the denoiser is heard only where it clearly helps: the goal is never worse
                clear = [m for m in MIXES if m == 0 or score[m] <= (1 - CLEAR_GAIN) * score[0]]
                curve.append((float(snr), min(clear, key=lambda m: (score[m], m))))  # a tie: the lighter mix
                scores.append(score)
            if kind == "real":
                # more noise gets no less of the denoiser than less noise, unless the lighter mix
                # clearly wins there: near 100 % WER, a few clips cannot tell the mixes apart
                for i in range(len(levels) - 2, -1, -1):
                    lighter, heavier = curve[i][1], curve[i + 1][1]
                    if lighter < heavier and not scores[i][lighter] <= (1 - CLEAR_GAIN) * scores[i][heavier]:
                        curve[i] = (curve[i][0], heavier)
            curve.append((BYPASS_ABOVE_DB, 0.0))
            curves[label] = curve
        out[name] = {"estimator_map": points, "curve": curves}
    return out


def held_out(calibration: dict, denoisers: list[str], limit: int) -> dict:
    """The calibrated estimate against the mixing SNR on the held-out split."""
    from asr_stream.denoisers import create_denoiser
    from asr_stream.denoisers.noise_estimate import calibrated

    stages = {name: create_denoiser(name) for name in denoisers}
    errors = {name: {} for name in denoisers}
    clean_reads = {name: [] for name in denoisers}
    for _, _, kind, snr, x in mixtures("held-out", limit):
        for name, stage in stages.items():
            e = denoise_all(stage, x)
            raw = raw_reading(x, e)
            if raw is None:
                continue
            value = calibrated(calibration[name]["estimator_map"], raw)
            if snr is None:
                clean_reads[name].append(value)
            else:
                errors[name].setdefault(f"{kind}@{snr}", []).append(value - snr)
    report = {}
    for name in denoisers:
        cells = {k: {"bias_db": round(float(np.mean(v)), 2), "mae_db": round(float(np.mean(np.abs(v))), 2),
                     "n": len(v)} for k, v in sorted(errors[name].items())}
        every = [abs(e) for v in errors[name].values() for e in v]
        report[name] = {"cells": cells, "mae_db": round(float(np.mean(every)), 2),
                        "p90_abs_error_db": round(float(np.percentile(every, 90)), 2),
                        "clean_min_db": round(float(min(clean_reads[name])), 1) if clean_reads[name] else None}
    return report


def write_results(rows: list[dict], calibration: dict, accuracy: dict | None, denoisers: list[str], argv: list[str],
                  seconds: float, note: str = "", out_md: Path = OUT_MD, recognizer: str = "whisper") -> None:
    how = ("the project's AN4 model streamed (cache-aware, 80 ms, ONNX)" if recognizer == "nemo"
           else "Whisper tiny.en offline (greedy, no VAD)")
    clips = f"{len({r['clip'] for r in rows})} {'AN4 train' if recognizer == 'nemo' else 'LJSpeech'} clips"
    L = [f"# Gate calibration for {recognizer} (recipes/gate/calibrate.py)", "",
         f"Command: `{' '.join(['.venv/bin/python recipes/gate/calibrate.py', *map(shlex.quote, argv)])}` "
         f"({seconds / 60:.0f} min). {how} on each calibration mixture "
         f"mixed at `x + mix * (denoised - x)`; {clips}. {note}", ""]
    for name in denoisers:
        L += [f"## {name}", "", "WER % by condition and mix (mix 0 = no denoiser); **bold** = the curve's choice "
              "(real noise: the noise curve; babble: the babble curve).", "",
              "| condition | " + " | ".join(f"mix {m}" for m in MIXES) + " |", "|---|" + "---|" * len(MIXES)]
        chosen = {"real": dict(calibration[name]["curve"]["noise"]), "babble": dict(calibration[name]["curve"]["babble"])}
        for kind in ("clean", "real", "babble"):
            for snr in ([None] if kind == "clean" else sorted(SNRS, reverse=True)):
                cell = [r for r in rows if r["kind"] == kind and r["snr"] == snr]
                if not cell:
                    continue
                cells = []
                for m in MIXES:
                    v, errs, words = wer(cell, "none" if m == 0 else f"{name}@{m}")
                    text = f"{100 * v:.1f}"
                    cells.append(f"**{text}**" if snr is not None and chosen[kind].get(float(snr)) == m else text)
                L.append(f"| {kind}{'' if snr is None else f' {snr} dB'} | " + " | ".join(cells) + " |")
        L += ["", f"Estimator map (mean raw reading -> mixing SNR): {calibration[name]['estimator_map']}; "
                  f"curves (SNR dB -> mix): noise {calibration[name]['curve']['noise']}, babble "
                  f"{calibration[name]['curve']['babble']}.", ""]
        if accuracy is None:
            continue
        L += [f"Held-out accuracy of the calibrated estimate (odd LJSpeech clips, noises "
              f"{', '.join(HELD_OUT_NOISES)}, babble of other talkers): mean absolute error "
              f"{accuracy[name]['mae_db']} dB, 90th percentile {accuracy[name]['p90_abs_error_db']} dB; "
              f"lowest reading on clean speech {accuracy[name]['clean_min_db']} dB.", "",
              "| condition | bias dB | mean abs error dB | clips |", "|---|---|---|---|"]
        for k, c in accuracy[name]["cells"].items():
            L.append(f"| {k} | {c['bias_db']:+.1f} | {c['mae_db']:.1f} | {c['n']} |")
        L.append("")
    out_md.write_text("\n".join(L) + "\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=16, help="clips per split (default 16; AN4 utterances are "
                   "short: use more with --recognizer nemo)")
    p.add_argument("--denoisers", default="deepfilternet,gtcrn")
    p.add_argument("--recognizer", choices=("whisper", "nemo"), default="whisper",
                   help="whose curves to fit (whisper: the estimator maps and the default curves)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/gate_calibration"))
    p.add_argument("--measured", type=Path, help="refit from this measurements file instead of measuring")
    p.add_argument("--note", default="", help="a sentence for RESULTS.md (where the measurements came from)")
    args = p.parse_args(argv)
    needs = "an4" if args.recognizer == "nemo" else "ljspeech"
    if not (SHARED / "speech" / needs).is_dir() or not (SHARED / "noise").is_dir():
        print(f"calibrate: needs ../shared ({needs}, noise, LibriSpeech)", file=sys.stderr)
        return 2
    denoisers = args.denoisers.split(",")
    t0 = time.monotonic()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.measured:
        rows = json.loads(args.measured.read_text())
    else:
        rows = measure(denoisers, args.clips, lambda m: print(m, flush=True), args.recognizer)
        (args.work_dir / f"measured-{args.recognizer}.json").write_text(json.dumps(rows))
    fitted = fit(rows, denoisers)
    table = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    if args.recognizer == "whisper":
        accuracy = held_out(fitted, denoisers, args.clips)
        for name, c in fitted.items():
            kept = table.get(name, {}).get("curve_by_recognizer")
            table[name] = {"estimator_map": c["estimator_map"], "curve": c["curve"],
                           **({"curve_by_recognizer": kept} if kept else {})}
        out_md = OUT_MD
    else:
        accuracy = None
        for name, c in fitted.items():
            if name not in table:
                print(f"calibrate: no estimator map for {name} yet: run the whisper calibration first", file=sys.stderr)
                return 2
            table[name].setdefault("curve_by_recognizer", {})[args.recognizer] = c["curve"]
            c["estimator_map"] = table[name]["estimator_map"]
        out_md = OUT_MD.with_name(f"RESULTS-{args.recognizer}.md")
    OUT_JSON.write_text("{\n" + ",\n".join(f' "{name}": ' + json.dumps(entry) for name, entry in table.items())
                        + "\n}\n")
    write_results(rows, fitted, accuracy, denoisers, argv, time.monotonic() - t0, args.note, out_md, args.recognizer)
    print(f"wrote {OUT_JSON.relative_to(ROOT)} and {out_md.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
