"""NeMo Conformer-CTC benchmark: rewrites the NeMo section of BENCHMARKS.md.

1. cache-aware streaming steps: FastConformer small / medium / large shapes (random weights,
   seed 0; speed does not depend on the weights) at each look-ahead, one thread: our loop in
   PyTorch and in ONNX Runtime, and NeMo's own `conformer_stream_step` loop (the one in NeMo's
   cache-aware streaming example, features for the whole file first, `return_transcription`
   on) in the same run;
2. buffered streaming of full-context models of the same shapes against one offline pass;
3. the whole chain, `asr-stream --pace realtime` with Demucs dns48 (random weights) and
   FastConformer large at 80 ms, one thread per stage on this machine's cores;
4. the AN4 model's WER (asr_stream/data/models/an4_fastconformer_ctc.nemo), streamed and offline, when the
   model and ../shared/data/speech/an4 are there.

    python bench/bench_nemo.py --out BENCHMARKS.md            # everything (about 15 min)
    python bench/bench_nemo.py --sizes small --lookaheads 80  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_and_cores, load_16k, write_section  # noqa: E402

BEGIN, END = "<!-- nemo:begin -->", "<!-- nemo:end -->"
CACHE = Path(os.environ.get("ASR_STREAM_CACHE", Path.home() / ".cache" / "asr-stream")) / "bench"
CLIP = ROOT / "asr_stream" / "data" / "samples" / "LJ001-0001.wav"
AN4 = ROOT.parent / "shared" / "data" / "speech" / "an4"
AN4_MODEL = ROOT / "asr_stream" / "data" / "models" / "an4_fastconformer_ctc.nemo"
# FastConformer shapes as NVIDIA publishes them (8x depthwise-striding subsampling, 256 channels)
SIZES = {"small": dict(d_model=176, n_layers=16, n_heads=4),
         "medium": dict(d_model=256, n_layers=16, n_heads=4),
         "large": dict(d_model=512, n_layers=17, n_heads=8)}
LOOKAHEADS = {0: [70, 0], 80: [70, 1], 480: [70, 6], 1040: [70, 13]}
VOCAB = 1024  # BPE pieces of NVIDIA's English streaming models
TARGETS = {("large", 80): 0.3, ("small", 80): 0.06}


def fastconformer_config(size: str, full_context: bool):
    from omegaconf import OmegaConf

    labels = [f"p{i}" for i in range(VOCAB - 1)] + [" "]
    enc = dict(_target_="nemo.collections.asr.modules.ConformerEncoder", feat_in=80, feat_out=-1,
               ff_expansion_factor=4, subsampling="dw_striding", subsampling_factor=8,
               subsampling_conv_channels=256, self_attention_model="rel_pos", conv_kernel_size=9,
               xscaling=True, untie_biases=True, pos_emb_max_len=5000, dropout=0.0, dropout_pre_encoder=0.0,
               dropout_emb=0.0, dropout_att=0.0, **SIZES[size])
    if full_context:
        enc.update(att_context_size=[-1, -1], att_context_style="regular", conv_norm_type="batch_norm")
    else:
        enc.update(att_context_size=[LOOKAHEADS[k] for k in (1040, 480, 80, 0)], att_context_style="chunked_limited",
                   conv_norm_type="layer_norm", conv_context_size="causal", causal_downsampling=True)
    return OmegaConf.create({
        "sample_rate": 16000, "labels": labels,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "normalize": "per_feature" if full_context else "NA",
                         "window_size": 0.025, "window_stride": 0.01, "window": "hann", "features": 80,
                         "n_fft": 512, "log": True, "frame_splicing": 1, "dither": 0.0, "pad_to": 0},
        "encoder": enc,
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": SIZES[size]["d_model"],
                    "num_classes": len(labels), "vocabulary": labels}})


def model_file(size: str, full_context: bool = False) -> Path:
    """A random-weight model of this shape, saved once as a .nemo (so its ONNX exports are cached).
    The CTC head's bias favours blank and " " so the random model's output has words to time."""
    path = CACHE / f"fastconformer_{size}{'_full' if full_context else ''}_seed0.nemo"
    if not path.exists():
        import torch
        from nemo.collections.asr.models import EncDecCTCModel

        from asr_stream.recognizers.nemo_model import quiet_nemo

        CACHE.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        with quiet_nemo():
            model = EncDecCTCModel(cfg=fastconformer_config(size, full_context)).eval()
            with torch.no_grad():  # random weights that make words: blank and the word separator win often
                bias = model.decoder.decoder_layers[0].bias
                bias[-1] += 1.9  # (tuned on the small model: about 20 % blank, half " ", words of a token or two)
                bias[-2] += 2.0
            model.save_to(str(path))
    return path


def feed(recognizer, audio: np.ndarray, block: int = 1600) -> float:
    """Stream `audio` in 100 ms blocks; seconds of wall time taken."""
    t0 = time.perf_counter()
    for i in range(0, len(audio), block):
        recognizer.accept_waveform(audio[i:i + block])
        recognizer.decode()
    recognizer.finish()
    return time.perf_counter() - t0


def nemo_loop(model, audio: np.ndarray) -> tuple[float, list[float]]:
    """NeMo's cache-aware streaming example loop, as it is written there."""
    import torch
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    t0 = time.perf_counter()
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
    buffer.append_audio(audio)
    channel, time_cache, channel_len = model.encoder.get_initial_cache_state(batch_size=1)
    previous, steps = None, []
    for step, (chunk, lengths) in enumerate(iter(buffer)):
        s0 = time.perf_counter()
        with torch.inference_mode():
            previous, _texts, channel, time_cache, channel_len, _ = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths, cache_last_channel=channel,
                cache_last_time=time_cache, cache_last_channel_len=channel_len,
                keep_all_outputs=buffer.is_buffer_empty(), previous_pred_out=previous,
                drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
                return_transcription=True)
        steps.append(time.perf_counter() - s0)
    return time.perf_counter() - t0, steps


def bench_steps(sizes, lookaheads, audio, log) -> list[dict]:
    import torch

    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_model import load_nemo_model

    torch.set_num_threads(1)
    seconds = len(audio) / 16000
    rows = []
    for size in sizes:
        path = model_file(size)
        model = load_nemo_model(str(path))
        params = sum(p.numel() for p in model.parameters())
        for la in lookaheads:
            row = dict(size=size, params=params, lookahead=la)
            recognizer = CacheAwareCtcRecognizer(model, lookahead_ms=la)
            row["latency_ms"] = recognizer.latency_s * 1000
            feed(recognizer, audio[:16000])  # warm-up
            recognizer.reset()
            wall = feed(recognizer, audio)
            row["torch"] = dict(rtf=wall / seconds, step_ms=1000 * float(np.mean(recognizer.step_times)),
                                p95_ms=1000 * float(np.percentile(recognizer.step_times, 95)))
            for runtime in ("onnx", "onnx-int8"):
                t0 = time.perf_counter()
                onnx = CacheAwareCtcRecognizer(model, lookahead_ms=la, runtime=runtime)
                row[f"{runtime}_setup_s"] = time.perf_counter() - t0
                feed(onnx, audio[:16000])
                onnx.reset()
                wall = feed(onnx, audio)
                row[runtime] = dict(rtf=wall / seconds, step_ms=1000 * float(np.mean(onnx.step_times)),
                                    p95_ms=1000 * float(np.percentile(onnx.step_times, 95)))
            model.encoder.set_default_att_context_size(LOOKAHEADS[la])
            model.encoder.setup_streaming_params()
            nemo_loop(model, audio[:16000])
            wall, steps = nemo_loop(model, audio)
            row["nemo"] = dict(rtf=wall / seconds, step_ms=1000 * float(np.mean(steps)),
                               p95_ms=1000 * float(np.percentile(steps, 95)))
            rows.append(row)
            log(f"{size} {la} ms: torch {row['torch']['rtf']:.3f} onnx {row['onnx']['rtf']:.3f} "
                f"int8 {row['onnx-int8']['rtf']:.3f} nemo {row['nemo']['rtf']:.3f}")
    return rows


def bench_buffered(sizes, audio, log) -> list[dict]:
    import torch

    from asr_stream.recognizers.nemo_buffered import BufferedCtcRecognizer
    from asr_stream.recognizers.nemo_features import window_features
    from asr_stream.recognizers.nemo_model import ctc_head, load_nemo_model

    torch.set_num_threads(1)
    seconds = len(audio) / 16000
    rows = []
    for size in sizes:
        model = load_nemo_model(str(model_file(size, full_context=True)))

        def offline():
            t0 = time.perf_counter()
            feats = window_features(model.preprocessor, audio)
            with torch.inference_mode():
                encoded, lengths = model.encoder(audio_signal=feats[None], length=torch.tensor([feats.shape[1]]))
                ctc_head(model)(encoder_output=encoded)
            return time.perf_counter() - t0

        offline()
        row = dict(size=size, offline=min(offline() for _ in range(2)) / seconds)
        for runtime in ("torch", "onnx"):
            recognizer = BufferedCtcRecognizer(model, runtime=runtime)
            feed(recognizer, audio[:48000])
            recognizer.reset()
            row[runtime] = feed(recognizer, audio) / seconds
            row["latency_ms"] = recognizer.latency_s * 1000
        rows.append(row)
        log(f"buffered {size}: offline {row['offline']:.3f} torch {row['torch']:.3f} onnx {row['onnx']:.3f}")
    return rows


def random_dns48() -> Path:
    path = CACHE / "dns48_random_seed0.th"
    if not path.exists():
        import torch

        from asr_stream.denoisers.demucs import Demucs

        torch.manual_seed(0)
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(Demucs(hidden=48).state_dict(), path)
    return path


def bench_chain(audio_path: Path, variants, log) -> list[dict]:
    rows = []
    for model, runtime, int8_denoiser, denoiser, audio in variants:
        audio = audio or audio_path
        with tempfile.TemporaryDirectory() as tmp:
            stats = Path(tmp) / "stats.json"
            args = ["--audio_path", str(audio), "--pace", "realtime", "--denoiser", str(denoiser or random_dns48()),
                    "--asr", "nemo", "--model", str(model), "--lookahead-ms", "80", "--runtime", runtime,
                    "--stats-json", str(stats), "--quiet"] + (["--denoise-int8"] if int8_denoiser else [])
            shown = "asr-stream " + " ".join(shlex.quote(a) for a in args).replace(str(CACHE), "$CACHE").replace(
                str(Path(tmp)), "$TMP").replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")
            exe = Path(sys.executable).parent / "asr-stream"
            p = subprocess.run([str(exe)] + args, capture_output=True, text=True, cwd=ROOT, timeout=600)
            row = dict(runtime=runtime, model=Path(model).stem, command=shown,
                       denoiser_weights=(Path(denoiser).stem if denoiser else "dns48 random")
                       + (" int8" if int8_denoiser else " fp32"))
            if p.returncode != 0:
                row["error"] = p.stderr.strip()[-300:]
            else:
                row.update(json.loads(stats.read_text()))
            rows.append(row)
            log(f"chain {runtime}: {row.get('rtf_stages', row.get('error'))}")
    return rows


def an4_stream_of(n: int, path: Path) -> None:
    """The first n AN4 test clips, each followed by 1 s of silence, as one 16 kHz file."""
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "recipes" / "an4"))
    from train_an4 import read_split  # noqa: E402

    parts = [np.zeros(8000, np.float32)]
    for wav, _ in read_split(AN4, "test")[:n]:
        parts += [load_16k(wav), np.zeros(16000, np.float32)]
    sf.write(str(path), np.concatenate(parts), 16000)


def an4_wer(log) -> dict | None:
    """The AN4 model's WER on the AN4 test split, streamed (each look-ahead) and offline."""
    if not AN4_MODEL.exists() or not (AN4 / "an4_test.transcription").exists():
        return None
    import jiwer
    import torch

    from asr_stream.recognizers.nemo_cache_aware import CacheAwareCtcRecognizer
    from asr_stream.recognizers.nemo_features import window_features
    from asr_stream.recognizers.nemo_model import ctc_head, load_nemo_model

    sys.path.insert(0, str(ROOT / "recipes" / "an4"))
    from train_an4 import read_split  # noqa: E402  (the recipe's own reading of AN4)

    clips = read_split(AN4, "test")
    model = load_nemo_model(str(AN4_MODEL))
    refs = [text for _, text in clips]
    audios = [load_16k(path) for path, _ in clips]
    out = {"clips": len(clips), "seconds": sum(len(a) for a in audios) / 16000}
    probe = CacheAwareCtcRecognizer(model)
    for la, context in sorted(probe.lookaheads_ms.items()):
        model.encoder.set_default_att_context_size(context)
        offline = []
        for audio in audios:
            feats = window_features(model.preprocessor, audio)
            with torch.inference_mode():
                enc, _ = model.encoder(audio_signal=feats[None], length=torch.tensor([feats.shape[1]]))
                log_probs = ctc_head(model)(encoder_output=enc)[0]
            offline.append(model.tokenizer.ids_to_text(_greedy_ids(log_probs, log_probs.shape[1] - 1)))
        out[la] = dict(offline=jiwer.wer(refs, offline))
        for runtime in ("torch", "onnx", "onnx-int8"):
            recognizer = CacheAwareCtcRecognizer(model, lookahead_ms=la, runtime=runtime)
            streamed = []
            for audio in audios:
                hyps = []
                for i in range(0, len(audio), 1600):
                    recognizer.accept_waveform(audio[i:i + 1600])
                    hyps += recognizer.decode()
                hyps += recognizer.finish()
                streamed.append(" ".join(h.text for h in hyps if h.final))
            out[la][runtime] = jiwer.wer(refs, streamed)
        log(f"AN4 {la} ms: {out[la]}")
    return out


def _greedy_ids(log_probs, blank: int) -> list[int]:
    out, previous = [], blank
    for label in log_probs.argmax(-1).tolist():
        if label not in (blank, previous):
            out.append(label)
        previous = label
    return out


def render(steps, buffered, chain, an4, info, cmd) -> str:
    L = [BEGIN, "## NeMo Conformer-CTC (`asr-stream --asr nemo`)", "",
         f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores usable), torch {info['torch']}, "
         f"onnxruntime {info['ort']}, nemo_toolkit {info['nemo']}. Produced by:", "", f"    {cmd}", ""]
    if steps:
        L += ["### Cache-aware streaming, one thread (random weights, seed 0)", "",
              f"{CLIP.name} ({info['clip_s']:.1f} s of speech) streamed in 100 ms blocks. RTF = wall time of "
              "the whole stream (features, encoder, CTC head, decoding) / audio time. *NeMo loop* is NeMo's "
              "cache-aware streaming example loop (`CacheAwareStreamingAudioBuffer` + `conformer_stream_step`, "
              "`return_transcription=True`), timed in the same process; its features are computed for the "
              "whole file up front. Latency = one chunk plus the last feature frame's half window "
              "(what a word at the start of a chunk waits for before computation).", "",
              "| model | params | look-ahead | latency | ours torch: ms/step (p95) | RTF | ours ONNX: ms/step (p95) "
              "| RTF | ours ONNX int8: ms/step | RTF | NeMo loop: ms/step (p95) | RTF | NeMo / ours torch "
              "| NeMo / ours ONNX | target |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in steps:
            t, o, q, n = r["torch"], r["onnx"], r["onnx-int8"], r["nemo"]
            target = TARGETS.get((r["size"], r["lookahead"]))
            best = min(t["rtf"], o["rtf"], q["rtf"])
            verdict = "" if target is None else f"RTF <= {target}: " + ("met" if best <= target else "**missed**")
            L.append(f"| {r['size']} | {r['params'] / 1e6:.1f} M | {r['lookahead']} ms | {r['latency_ms']:.0f} ms "
                     f"| {t['step_ms']:.1f} ({t['p95_ms']:.1f}) | {t['rtf']:.3f} | {o['step_ms']:.1f} ({o['p95_ms']:.1f}) "
                     f"| {o['rtf']:.3f} | {q['step_ms']:.1f} | {q['rtf']:.3f} "
                     f"| {n['step_ms']:.1f} ({n['p95_ms']:.1f}) | {n['rtf']:.3f} "
                     f"| {n['rtf'] / t['rtf']:.2f}x | {n['rtf'] / o['rtf']:.2f}x | {verdict} |")
        L += ["", "ONNX export (once per model file and look-ahead, then cached beside the model; int8 is "
              "quantized from it): " + ", ".join(f"{r['size']} {r['lookahead']} ms {r['onnx_setup_s']:.1f} s"
                                                for r in steps) + ". A cached export loads in about a second.", ""]
    if buffered:
        L += ["### Buffered streaming of full-context models, one thread", "",
              "Same shapes with full attention (`att_context_size [-1,-1]`, per-utterance feature "
              "normalisation), default windows: 2.0 s chunk, 1.0 s left, 0.6 s right context. Offline = one "
              "pass over the whole clip (features, encoder, CTC head).", "",
              "| model | offline RTF | buffered torch RTF | / offline | buffered ONNX RTF | / offline | latency "
              "| target: <= 2x offline |", "|---|---|---|---|---|---|---|---|"]
        for r in buffered:
            best = min(r["torch"], r["onnx"]) / r["offline"]  # fp32 runtimes only
            L.append(f"| {r['size']} | {r['offline']:.3f} | {r['torch']:.3f} | {r['torch'] / r['offline']:.2f}x "
                     f"| {r['onnx']:.3f} | {r['onnx'] / r['offline']:.2f}x | {r['latency_ms']:.0f} ms "
                     f"| {'met' if best <= 2 else '**missed**'} ({best:.2f}x) |")
        L.append("")
    if chain:
        L += ["### Whole chain: Demucs dns48 + FastConformer large at 80 ms, `--pace realtime`", "",
              f"Random weights for dns48 and the large model (no trained ones can be had here), one intra-op "
              f"thread per stage, {info['cores']} cores, `speech_x3.wav` = {CLIP.name} three times (29 s). "
              "Random weights make no words (random Demucs turns speech into noise), so latency cannot be "
              "measured on those rows; the last row is a chain of trained models for that: the light Demucs "
              "checkpoint from ../shared (hidden 32, fp32) and the project's AN4 model (1.4 M parameters, the "
              "same 80 ms look-ahead and 160 ms chunks), on `an4_test_20.wav` (the first 20 AN4 test clips, "
              "1 s of silence after each). Latency is from the audio timeline (when a word's end entered the "
              "chain) to when the word first showed (partial) and when it was committed (the next word "
              "started, or the utterance ended). Here a word's end is the recogniser's own (the frame after its "
              "last CTC token), which CTC tends to place late, so partial latency reads low, even below zero; "
              "the evaluation section measures against reference word times instead.", "",
              "| denoiser | recogniser | runtime | RTF denoiser | RTF recogniser | partial latency p50 / p95 "
              "| committed p50 / p95 | dropped | target: RTF <= 0.5, p95 <= 300 ms | command |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in chain:
            if "error" in r:
                L.append(f"| {r['denoiser_weights']} | {r['model']} | {r['runtime']} | failed: {r['error']} "
                         f"| | | | | | `{r['command']}` |")
                continue
            st, lp, lf = r["rtf_stages"], r.get("latency_partial_s") or {}, r.get("latency_final_s") or {}
            rtf = max(st["denoiser"], st["recognizer"])
            ok = rtf <= 0.5 and (lp.get("p95") or 9) <= 0.3
            L.append(f"| {r['denoiser_weights']} | {r['model']} | {r['runtime']} | {st['denoiser']:.2f} | {st['recognizer']:.2f} "
                     f"| {_ms(lp.get('p50'))} / {_ms(lp.get('p95'))} | {_ms(lf.get('p50'))} / {_ms(lf.get('p95'))} "
                     f"| {r['dropped_frames']} | {'met' if ok else '**missed**'} | `{r['command']}` |")
        L.append("")
    if an4:
        L += ["### The AN4 model: WER on the AN4 test split, streamed vs offline", "",
              f"`checkpoints/{AN4_MODEL.name}` (trained by `make train-an4`), {an4['clips']} clips, "
              f"{an4['seconds'] / 60:.1f} min. Streamed = our cache-aware recogniser fed 100 ms blocks; offline = "
              "the same model over each whole clip at the same look-ahead; greedy CTC, lower-case text, no "
              "normaliser needed (AN4 transcripts are already plain).", "",
              "| look-ahead | offline WER | streamed, torch | relative to offline | streamed, ONNX | streamed, ONNX int8 |",
              "|---|---|---|---|---|---|"]
        for la in sorted(k for k in an4 if isinstance(k, int)):
            w = an4[la]
            rel = (w["torch"] - w["offline"]) / w["offline"] if w["offline"] else 0.0
            L.append(f"| {la} ms | {100 * w['offline']:.1f} % | {100 * w['torch']:.1f} % | {100 * rel:+.1f} % "
                     f"| {100 * w['onnx']:.1f} % | {100 * w['onnx-int8']:.1f} % |")
        L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def _ms(v):
    return "-" if v is None else f"{1000 * v:.0f} ms"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--lookaheads", nargs="+", type=int, default=list(LOOKAHEADS), choices=list(LOOKAHEADS))
    p.add_argument("--skip", nargs="*", default=[], choices=["steps", "buffered", "chain", "an4"])
    args = p.parse_args(argv)
    import logging

    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)
    import onnxruntime
    import torch
    from importlib.metadata import version

    log = lambda s: print(s, flush=True)  # noqa: E731
    audio = load_16k(CLIP)
    cpu, cores = cpu_and_cores()
    info = dict(date=time.strftime("%Y-%m-%d"), cpu=cpu, cores=cores, torch=torch.__version__,
                ort=onnxruntime.__version__, nemo=version("nemo_toolkit"), clip_s=len(audio) / 16000)
    # a skipped part keeps its figures from the last run (bench/out/nemo.json), so one part can be redone
    saved_path = ROOT / "bench" / "out" / "nemo.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    steps = saved.get("steps", []) if "steps" in args.skip else bench_steps(args.sizes, args.lookaheads, audio, log)
    buffered = saved.get("buffered", []) if "buffered" in args.skip else bench_buffered(args.sizes, audio, log)
    chain = saved.get("chain", [])
    if "chain" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            import soundfile as sf

            long = Path(tmp) / "speech_x3.wav"
            sf.write(long, np.tile(audio, 3), 16000)
            large = model_file("large")
            variants = [(large, "torch", False, None, None), (large, "onnx", True, None, None),
                        (large, "onnx-int8", True, None, None)]
            light = ROOT.parent / "shared" / "data" / "models" / "demucs_valentini_light32.th"
            if AN4_MODEL.exists() and light.exists() and (AN4 / "an4_test.fileids").exists():
                # trained models end to end, so words come out and caption latency can be measured
                an4_stream = Path(tmp) / "an4_test_20.wav"
                an4_stream_of(20, an4_stream)
                variants.append((AN4_MODEL, "onnx", False, light, an4_stream))
            chain = bench_chain(long, variants, log)
            for r in chain:
                r["command"] = r["command"].replace(str(long), "speech_x3.wav").replace(
                    str(Path(tmp) / "an4_test_20.wav"), "an4_test_20.wav")
    an4 = saved.get("an4") if "an4" in args.skip else an4_wer(log)
    if an4:
        an4 = {int(k) if str(k).isdigit() else k: v for k, v in an4.items()}
    saved_path.parent.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps({"steps": steps, "buffered": buffered, "chain": chain, "an4": an4,
                                      "info": info}, indent=1))
    cmd = os.environ.get("BENCH_NEMO_CMD") or "python bench/bench_nemo.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    write_section(args.out, render(steps, buffered, chain, an4, info, cmd), BEGIN, END)
    log(f"wrote the NeMo section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
