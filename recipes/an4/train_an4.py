#!/usr/bin/env python
"""Train a small cache-aware streaming FastConformer-CTC on CMU AN4, on a CPU, from scratch.

Why: no pretrained NeMo checkpoint can be downloaded here, so the project trains its own small
streaming recogniser to have a real `.nemo` to run and test the NeMo stage with.

The whole path, in order (each step is an importable function):

1. `build_manifests`   - NeMo JSON-lines manifests from AN4's Sphinx transcripts (work dir).
2. `train_tokenizer`   - a SentencePiece BPE tokenizer on the train transcripts (work dir).
3. `build_config`      - configs/nemo/fastconformer_ctc_an4.yaml with the work-dir paths filled in.
4. `train`             - PyTorch Lightning training of `EncDecCTCModelBPE`, saved as one `.nemo`.
5. `evaluate_wer`      - greedy CTC WER on the AN4 test split, with the `.nemo` reloaded from disk,
                         for each trained look-ahead.
6. `streaming_vs_offline` - checks on a few clips that chunk-by-chunk cache-aware streaming gives
                         the same log-probs as the offline pass (so the WER holds for streaming).
7. `write_results`     - recipes/an4/RESULTS.md: command, epochs, wall time, size, WER.

Data is read in place from the shared AN4 folder and never copied; manifests, tokenizer and
Lightning logs go to the work dir (default /tmp/an4_work), not into the repository.

    .venv/bin/python recipes/an4/train_an4.py --max-epochs 60 --batch-size 16 --threads 2

Smoke test (about 30 s; writes nothing into the repository):

    .venv/bin/python recipes/an4/train_an4.py --max-steps 10 --batch-size 8 --eval-limit 20 \
        --work-dir /tmp/an4_smoke --out /tmp/an4_smoke/model.nemo --results /tmp/an4_smoke/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "speech" / "an4"  # ../shared beside the checkout
DEFAULT_WORK_DIR = Path("/tmp/an4_work")
DEFAULT_CONFIG = REPO_ROOT / "configs" / "nemo" / "fastconformer_ctc_an4.yaml"
DEFAULT_OUT = REPO_ROOT / "asr_stream" / "data" / "models" / "an4_fastconformer_ctc.nemo"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# AN4 split name -> (transcription file, fileids file); audio is wav/<fileid>.wav
SPLITS = {
    "train": ("an4_train.transcription", "an4_train.fileids"),
    "test": ("an4_test.transcription", "an4_test.fileids"),
}

_SPHINX_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<utt>[^()\s]+)\)\s*$")


# --------------------------------------------------------------------------- data


def parse_sphinx_transcripts(transcription: Path) -> dict[str, str]:
    """Map utterance id -> lower-cased text.

    Sphinx lines are `<s> TEXT </s> (utt-id)` in the train file, but AN4's test file has plain
    `TEXT (utt-id)` lines and a blank first line, so both forms are accepted.
    """
    out: dict[str, str] = {}
    for n, line in enumerate(transcription.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _SPHINX_LINE.match(line)
        if not m:
            raise ValueError(f"{transcription}:{n}: not a Sphinx transcript line: {line!r}")
        text = m.group("text").replace("<s>", " ").replace("</s>", " ")
        out[m.group("utt")] = " ".join(text.lower().split())
    return out


def read_split(data_dir: Path, split: str) -> list[tuple[Path, str]]:
    """(audio path, text) for each utterance of `split`, in the order of its .fileids file.

    The .fileids list is authoritative: wav/an4test_clstk holds a few more clips than the test
    list, and those have no transcript.
    """
    trans_name, ids_name = SPLITS[split]
    texts = parse_sphinx_transcripts(data_dir / trans_name)
    items = []
    for fileid in (data_dir / ids_name).read_text(encoding="utf-8").split():
        utt = fileid.rsplit("/", 1)[-1]
        if utt not in texts:
            raise ValueError(f"{ids_name}: {fileid} has no transcript in {trans_name}")
        items.append((data_dir / "wav" / f"{fileid}.wav", texts[utt]))
    if len(items) != len(texts):
        raise ValueError(f"{split}: {len(items)} file ids but {len(texts)} transcripts")
    return items


def build_manifests(data_dir: Path, work_dir: Path) -> dict[str, Path]:
    """Write <work_dir>/{train,test}_manifest.json (NeMo JSON lines) and return their paths.

    Durations come from the file headers (soundfile), so building them is quick.
    """
    import soundfile as sf

    work_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        out = work_dir / f"{split}_manifest.json"
        with open(out, "w", encoding="utf-8") as f:
            for audio, text in read_split(data_dir, split):
                info = sf.info(str(audio))
                if info.samplerate != 16000 or info.channels != 1:
                    raise ValueError(f"{audio}: expected 16 kHz mono, got {info.samplerate} Hz x {info.channels}")
                row = {"audio_filepath": str(audio), "duration": round(info.frames / info.samplerate, 4), "text": text}
                f.write(json.dumps(row) + "\n")
        paths[split] = out
    return paths


def read_manifest(path: Path) -> list[dict]:
    """Rows of a JSON-lines manifest."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(train_manifest: Path, out_dir: Path, vocab_size: int = 128, model_type: str = "bpe") -> Path:
    """Train a SentencePiece tokenizer on the train transcripts; return its directory.

    Writes what NeMo's `tokenizer.type: bpe` loads: tokenizer.model, tokenizer.vocab and
    vocab.txt (same options and vocab.txt format as NeMo's create_spt_model, which the
    `sentencepiece` package is called with directly here). AN4 has only ~100 distinct words, so
    `hard_vocab_limit=false` lets SentencePiece stop below `vocab_size` if it runs out of merges.
    """
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "text_corpus.txt"
    corpus.write_text("".join(row["text"] + "\n" for row in read_manifest(train_manifest)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        hard_vocab_limit=False,
        shuffle_input_sentence=False,  # all ~950 lines are used; keep it deterministic
        bos_id=-1,
        eos_id=-1,
        remove_extra_whitespaces=False,
        num_threads=1,
        minloglevel=2,
    )
    tokens = []
    for line in (out_dir / "tokenizer.vocab").read_text(encoding="utf-8").splitlines():
        piece = line.split("\t")[0]
        if piece in ("<s>", "</s>", "<pad>", "<unk>"):
            continue
        token = piece[1:] if piece.startswith("\u2581") else f"##{piece}"
        tokens.append(token if token else piece[0])
    (out_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return out_dir


# --------------------------------------------------------------------------- model


def build_config(
    config_path: Path,
    manifests: dict[str, Path],
    tokenizer_dir: Path,
    batch_size: int,
    overrides: list[str] | None = None,
):
    """Load the project YAML and fill in the work-dir paths, batch size and `--override`s."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_path)
    cfg.model.train_ds.manifest_filepath = str(manifests["train"])
    cfg.model.validation_ds.manifest_filepath = str(manifests["test"])
    cfg.model.tokenizer.dir = str(tokenizer_dir)
    cfg.model.train_ds.batch_size = batch_size
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    return cfg


def steps_per_epoch(n_utts: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, partial batch is kept)."""
    return math.ceil(n_utts / batch_size)


def count_parameters(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_device(device: str) -> str:
    """'cuda' only when asked for and present; otherwise 'cpu' (with a warning if CUDA was asked)."""
    import torch

    if device == "cuda":
        if torch.cuda.is_available():
            return "cuda"
        print("warning: --device cuda asked but CUDA is not available; training on the CPU", file=sys.stderr)
    return "cpu"


def _step_timer():
    """A Lightning callback that records the wall time of each training step (for the report)."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def fold_feature_normalization(model, manifest: Path, n_clips: int = 200) -> tuple[float, float]:
    """Start the encoder as if its input were normalised: (features - mean) / std.

    Streaming models take un-normalised log-mels (`normalize: NA`): per-utterance statistics do
    not exist yet while an utterance is being spoken. AN4's quiet recordings put those log-mels
    around a large negative offset, and from a random start the first convolution then needs
    thousands of Adam steps just to learn a bias that cancels it; training sat on the all-blank
    plateau. The training set's global mean and standard deviation are folded into the first
    subsampling convolution's weights and bias instead (w/std, b - mean/std * sum(w)): the same
    function as normalising the input, nothing changes at inference, and it streams exactly.
    """
    import torch

    from asr_stream.io.audio_files import load_16k

    rows = read_manifest(manifest)[:: max(1, len(read_manifest(manifest)) // n_clips)][:n_clips]
    total, total_sq, count = 0.0, 0.0, 0
    pre = model.preprocessor
    was_training = pre.training
    pre.eval()
    with torch.no_grad():
        for row in rows:
            audio = torch.from_numpy(load_16k(Path(row["audio_filepath"])))[None]
            feats, length = pre(input_signal=audio, length=torch.tensor([audio.shape[1]]))
            x = feats[0, :, : int(length[0])].double()
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.numel()
        pre.train(was_training)
        mean = total / count
        std = (total_sq / count - mean * mean) ** 0.5
        conv = model.encoder.pre_encode.conv[0]
        conv.bias -= (mean / std) * conv.weight.sum(dim=(1, 2, 3))
        conv.weight /= std
    return mean, std


def start_blank_likely(model, p_blank: float) -> None:
    """Set the CTC head's blank bias so that blank starts with probability `p_blank`.

    From a uniform start the quickest way down the CTC loss is to output blank everywhere, and a
    freshly initialised encoder gets there by making its output independent of the input (we
    measured it: after 500 steps, different clips and silence gave the same encoder output to
    3e-4). With blank already likely, that collapse buys little, and the gradient goes to the
    input-dependent part from the start.
    """
    import math

    import torch

    conv = model.decoder.decoder_layers[0]
    labels = conv.bias.shape[0]
    with torch.no_grad():
        conv.bias[-1] = math.log(p_blank / (1 - p_blank) * (labels - 1))


def train(
    cfg,
    out: Path,
    work_dir: Path,
    max_epochs: int,
    max_steps: int = -1,
    device: str = "cpu",
    val_every: int = 10,
    seed: int = 1234,
    fold_normalization: bool = True,
    blank_prior: float = 0.75,
) -> dict:
    """Train EncDecCTCModelBPE with Lightning and save it to `out` (.nemo); return run facts.

    The LR schedule's length is set explicitly (max_steps, or epochs x steps per epoch) so that
    the cosine decay ends where training ends. Logs go to <work_dir>/lightning_logs as CSV; no
    Lightning checkpoints are written (the .nemo is the result).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from omegaconf import open_dict

    from nemo.collections.asr.models import EncDecCTCModelBPE

    pl.seed_everything(seed, workers=True)
    n_train = len(read_manifest(Path(cfg.model.train_ds.manifest_filepath)))
    per_epoch = steps_per_epoch(n_train, cfg.model.train_ds.batch_size)
    total_steps = max_steps if max_steps and max_steps > 0 else per_epoch * max_epochs
    with open_dict(cfg):
        cfg.model.optim.sched.max_steps = total_steps

    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=32,
        max_epochs=max_epochs,
        max_steps=total_steps,
        check_val_every_n_epoch=max(1, val_every),
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        gradient_clip_val=1.0,
        logger=CSVLogger(save_dir=str(work_dir), name="lightning_logs"),
        enable_checkpointing=False,
        default_root_dir=str(work_dir),
        enable_model_summary=False,
        callbacks=[timer := _step_timer()],
    )
    model = EncDecCTCModelBPE(cfg=cfg.model, trainer=trainer)
    if fold_normalization:
        mean, std = fold_feature_normalization(model, Path(cfg.model.train_ds.manifest_filepath))
        print(f"log-mel mean {mean:.2f}, std {std:.2f}: folded into the first subsampling convolution", flush=True)
    if blank_prior:
        start_blank_likely(model, blank_prior)
    n_params = count_parameters(model)
    print(f"model: {n_params / 1e6:.2f} M parameters; {per_epoch} steps/epoch; {total_steps} steps planned", flush=True)

    t0 = time.perf_counter()
    trainer.fit(model)
    train_s = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    steps = sorted(timer.times)
    return {
        "params": n_params,
        "train_seconds": train_s,
        "global_step": int(trainer.global_step),
        "epochs": trainer.global_step / per_epoch,
        "steps_per_epoch": per_epoch,
        "seconds_per_step": train_s / max(1, trainer.global_step),  # includes validation and start-up
        "median_step_seconds": steps[len(steps) // 2] if steps else float("nan"),
        "step_seconds": timer.times,
    }


# --------------------------------------------------------------------------- evaluation


def evaluate_wer(
    model,
    manifest: Path,
    limit: int = 0,
    batch_size: int = 16,
    att_context_size: list[int] | None = None,
) -> dict:
    """Greedy CTC WER of `model` on `manifest` with the offline (whole-utterance) forward pass.

    For a chunked_limited cache-aware encoder, the offline pass applies the same attention and
    convolution limits as streaming does, so this is also the WER the model streams at for
    that look-ahead (`att_context_size`; None = the model's default, the first of its list).
    """
    import jiwer
    import numpy as np
    import soundfile as sf
    import torch

    rows = read_manifest(manifest)
    if limit and limit > 0:
        rows = rows[:limit]
    if att_context_size is not None:
        model.encoder.set_default_att_context_size(list(att_context_size))
    model.eval()
    device = next(model.parameters()).device
    hyps: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            wavs = [sf.read(r["audio_filepath"], dtype="float32")[0] for r in batch]
            lens = torch.tensor([len(w) for w in wavs], dtype=torch.long)
            signal = torch.zeros(len(wavs), int(lens.max()))
            for j, w in enumerate(wavs):
                signal[j, : len(w)] = torch.from_numpy(np.ascontiguousarray(w))
            log_probs, enc_len, _ = model.forward(input_signal=signal.to(device), input_signal_length=lens.to(device))
            out = model.decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=enc_len)
            hyps.extend(h.text if hasattr(h, "text") else str(h) for h in out)
    refs = [r["text"] for r in rows]
    return {
        "wer": float(jiwer.wer(refs, hyps)),
        "n_utts": len(rows),
        "att_context_size": list(model.encoder.att_context_size),
        "examples": list(zip(refs[:3], hyps[:3])),
    }


def streaming_vs_offline(model, manifest: Path, n_utts: int = 3, att_context_size: list[int] | None = None) -> dict:
    """Max |log-prob difference| between cache-aware streaming and the offline pass.

    Why: the WER above comes from the offline pass; this checks, on a few test clips, that
    feeding the same model chunk by chunk with its caches (NeMo's conformer_stream_step, as a
    live stream would) gives the same frame log-probs, so that WER is also the streaming WER.
    Streaming may emit one frame fewer at the very end (a partial last frame); it is not compared.
    """
    import soundfile as sf
    import torch
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    if att_context_size is not None:
        model.encoder.set_default_att_context_size(list(att_context_size))
    model.encoder.setup_streaming_params()
    model.eval()
    device = next(model.parameters()).device
    worst, steps = 0.0, 0
    for row in read_manifest(manifest)[:n_utts]:
        wav = torch.from_numpy(sf.read(row["audio_filepath"], dtype="float32")[0])
        with torch.inference_mode():
            offline, _, _ = model.forward(
                input_signal=wav[None].to(device), input_signal_length=torch.tensor([len(wav)], device=device)
            )
        buf = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
        buf.append_audio(wav.numpy(), stream_id=-1)
        cache = model.encoder.get_initial_cache_state(batch_size=1)
        pred, hyps, chunks = None, None, []
        for step, (chunk, chunk_len) in enumerate(buf):
            with torch.inference_mode():
                out = model.conformer_stream_step(
                    processed_signal=chunk, processed_signal_length=chunk_len,
                    cache_last_channel=cache[0], cache_last_time=cache[1], cache_last_channel_len=cache[2],
                    keep_all_outputs=buf.is_buffer_empty(), previous_hypotheses=hyps, previous_pred_out=pred,
                    drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
                    return_transcription=True, return_log_probs=True,
                )
            pred, hyps, cache, log_probs = out[0], out[1], out[2:5], out[6]
            chunks.append(log_probs)
            steps += 1
        streamed = torch.cat(chunks, dim=1)
        n = min(streamed.shape[1], offline.shape[1])
        worst = max(worst, float((streamed[:, :n] - offline[:, :n]).abs().max()))
    return {"att_context_size": list(model.encoder.att_context_size), "max_abs_diff": worst, "utts": n_utts, "chunks": steps}


# --------------------------------------------------------------------------- report


def write_results(path: Path, facts: dict) -> None:
    """Write RESULTS.md: how the model was made and how well it does, to reproduce or compare."""
    wers = facts["wers"]
    rows = "\n".join(
        f"| {w['att_context_size']} | {80 * w['att_context_size'][1]} ms ({80 * (w['att_context_size'][1] + 1)} ms chunks)"
        f" | {100 * w['wer']:.2f} % | {w['n_utts']} |"
        for w in wers
    )
    default = wers[0]
    checks = facts.get("streaming_checks") or []
    streaming = ""
    if checks:
        streaming = (
            "Cache-aware streaming (NeMo `conformer_stream_step`, chunk by chunk with caches) against the\n"
            "offline pass, on the first test clips: largest |log-prob difference| per look-ahead: "
            + ", ".join(f"{c['att_context_size']}: {c['max_abs_diff']:.1e} ({c['chunks']} chunks)" for c in checks)
            + ".\n"
        )
    text = f"""# AN4 FastConformer-CTC (cache-aware streaming): results

Written by `recipes/an4/train_an4.py` at the end of its run; rerun the command to reproduce.

```sh
{facts['command']}
```

| | |
|---|---|
| date (UTC) | {facts['date']} |
| model | `{facts['out']}` ({facts['size_bytes'] / 1e6:.1f} MB), {facts['params'] / 1e6:.2f} M parameters |
| config | `{facts['config']}` {facts['overrides'] or ''} |
| tokenizer | SentencePiece {facts['tokenizer_type']}, {facts['vocab']} tokens (+ CTC blank) |
| training | {facts['epochs']:.1f} epochs ({facts['global_step']} steps of batch {facts['batch_size']}, {facts['steps_per_epoch']} steps/epoch), seed {facts['seed']} |
| device | {facts['device']}, {facts['threads']} threads (OMP_WAIT_POLICY={facts['omp_wait_policy']}); {facts['cpu']} |
| wall time | training {facts['train_seconds'] / 60:.1f} min ({facts['seconds_per_step']:.2f} s/step overall, median step {facts['median_step_seconds']:.2f} s), whole run {facts['total_seconds'] / 60:.1f} min |
| versions | torch {facts['torch']}, nemo_toolkit {facts['nemo']}, lightning {facts['lightning']} |

## Greedy CTC WER on the AN4 test split

Offline forward pass of the reloaded `.nemo`, per trained look-ahead (`att_context_size`
= [left, right] in 80 ms encoder frames). For this chunked_limited encoder the offline pass
sees the same context as cache-aware streaming does. The first row is the model's default.

| att_context_size | look-ahead | WER | utterances |
|---|---|---|---|
{rows}

Examples (reference -> hypothesis, default look-ahead):

{chr(10).join(f'- `{r}` -> `{h}`' for r, h in default['examples'])}

{streaming}
The test split doubles as the validation set during training (AN4 has no dev split); it is
only logged, never used to pick a checkpoint.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="AN4 folder (wav/, *.transcription, *.fileids)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="manifests, tokenizer, logs (outside the repo)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model YAML")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="OmegaConf dotlist override of the YAML, e.g. model.encoder.n_layers=12 (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .nemo to write")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="where to write RESULTS.md ('' = nowhere)")
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --max-epochs when > 0)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--vocab-size", type=int, default=128)
    p.add_argument("--tokenizer-type", choices=["bpe", "unigram"], default="bpe")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fold-normalization", action=argparse.BooleanOptionalAction, default=True,
                   help="start the first convolution as if the log-mels were normalised (see fold_feature_normalization)")
    p.add_argument("--blank-prior", type=float, default=0.75,
                   help="initial probability of the CTC blank (0 = leave the random init; see start_blank_likely)")
    p.add_argument("--val-every", type=int, default=10, help="validate (test WER, logged to the work dir) every N epochs")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N test utterances (0 = all 117)")
    p.add_argument("--eval-all-lookaheads", action=argparse.BooleanOptionalAction, default=True,
                   help="WER for every trained att_context_size, not only the default")
    p.add_argument("--stream-check", type=int, default=3, metavar="N",
                   help="check cache-aware streaming against the offline pass on N test clips (0 = skip)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    # Idle OpenMP threads sleep instead of spinning. On a CPU shared with other jobs, spinning
    # threads stalled at every barrier when a core was taken: measured here under load, 25 steps
    # took 182 s (steps up to 22 s) with the default policy and 25 s (max 1.6 s) with PASSIVE.
    # Must be set before torch (libgomp) is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    work_dir = args.work_dir.resolve()
    if work_dir == REPO_ROOT or REPO_ROOT in work_dir.parents:
        raise SystemExit(f"--work-dir {work_dir} is inside the repository; use a folder outside it")

    manifests = build_manifests(args.data_dir, work_dir)
    tok_dir = train_tokenizer(
        manifests["train"], work_dir / f"tokenizer_spe_{args.tokenizer_type}_v{args.vocab_size}",
        vocab_size=args.vocab_size, model_type=args.tokenizer_type,
    )
    cfg = build_config(args.config, manifests, tok_dir, args.batch_size, args.override)
    run = train(cfg, args.out, work_dir, args.max_epochs, args.max_steps, device, args.val_every, args.seed,
                fold_normalization=args.fold_normalization, blank_prior=args.blank_prior)

    # Evaluate what was saved, not what is in memory: proves the .nemo is self-contained.
    import lightning
    import nemo
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(args.out), map_location=torch.device(device))
    contexts = [list(c) for c in model.encoder.att_context_size_all] if args.eval_all_lookaheads else [None]
    wers = [evaluate_wer(model, manifests["test"], args.eval_limit, att_context_size=c) for c in contexts]
    for w in wers:
        print(f"test WER {100 * w['wer']:.2f} % on {w['n_utts']} utterances, att_context_size={w['att_context_size']}")
    checks = []
    if args.stream_check > 0:
        checks = [streaming_vs_offline(model, manifests["test"], args.stream_check, c) for c in contexts]
        for c in checks:
            print(f"streaming vs offline, att_context_size={c['att_context_size']}: max |d log-prob| {c['max_abs_diff']:.1e}")

    facts = {
        **run,
        "command": shlex.join([".venv/bin/python", "recipes/an4/train_an4.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "out": str(args.out.resolve().relative_to(REPO_ROOT)) if REPO_ROOT in args.out.resolve().parents else str(args.out),
        "size_bytes": args.out.stat().st_size,
        "config": str(args.config.resolve().relative_to(REPO_ROOT)) if REPO_ROOT in args.config.resolve().parents else str(args.config),
        "overrides": " ".join(args.override),
        "tokenizer_type": args.tokenizer_type,
        "vocab": model.tokenizer.vocab_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": device,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "cpu": _cpu_name(),
        "total_seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "nemo": nemo.__version__,
        "lightning": lightning.__version__,
        "wers": wers,
        "streaming_checks": checks,
    }
    if args.results:
        write_results(Path(args.results), facts)
        print(f"wrote {args.results}")
    print(f"saved {args.out} ({facts['size_bytes'] / 1e6:.1f} MB, {run['params'] / 1e6:.2f} M parameters); "
          f"{run['global_step']} steps in {run['train_seconds']:.0f} s ({run['seconds_per_step']:.2f} s/step overall, "
          f"median step {run['median_step_seconds']:.2f} s)")
    return facts


if __name__ == "__main__":
    main()
