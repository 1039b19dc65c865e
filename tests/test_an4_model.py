"""The project's own AN4-trained FastConformer-CTC (asr_stream/data/models/an4_fastconformer_ctc.nemo): its
streamed WER on the AN4 test split, through the whole CLI (a file, and the live microphone),
stays within 10 % (relative) of the same model's offline WER. Needs ../shared's AN4 audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHARED, run_cli

MODEL = REPO / "asr_stream" / "data" / "models" / "an4_fastconformer_ctc.nemo"
AN4 = SHARED / "data" / "speech" / "an4"
GAP_S = 1.0

pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not MODEL.is_file(), reason="the bundled an4_fastconformer_ctc.nemo is absent"),
              pytest.mark.skipif(not AN4.is_dir(), reason="../shared AN4 is absent")]
pytest.importorskip("nemo.collections.asr.models", reason="nemo_toolkit is not installed")


@pytest.fixture(scope="module")
def test_split():
    from asr_stream.io.audio_files import load_16k
    from asr_stream.evaluation.manifest import dataset

    return [(load_16k(u.audio), u.text) for u in dataset("an4")]


@pytest.fixture(scope="module")
def offline_texts(test_split):
    """The model over each whole clip (the default look-ahead), greedy CTC."""
    import torch

    from asr_stream.recognizers.nemo_features import window_features
    from asr_stream.recognizers.nemo_model import ctc_head, load_nemo_model

    model = load_nemo_model(str(MODEL))
    blank = len(ctc_head(model).vocabulary)
    out = []
    for audio, _ in test_split:
        feats = window_features(model.preprocessor, audio)
        with torch.inference_mode():
            encoded, _ = model.encoder(audio_signal=feats[None], length=torch.tensor([feats.shape[1]]))
            labels = ctc_head(model)(encoder_output=encoded)[0].argmax(-1).tolist()
        ids = [x for i, x in enumerate(labels) if x != blank and (i == 0 or labels[i - 1] != x)]
        out.append(model.tokenizer.ids_to_text(ids))
    return out


def _wer(refs, hyps) -> float:
    import jiwer

    return jiwer.wer(" ".join(refs), " ".join(" ".join(hyps).split()))  # one line per final: join the lines


def _joined(clips, path, lead_s: float = 0.5):
    parts = [np.zeros(int(lead_s * 16000), np.float32)]
    for audio, _ in clips:
        parts += [audio, np.zeros(int(GAP_S * 16000), np.float32)]
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def test_streamed_wer_through_the_cli_is_within_10_percent_of_offline(test_split, offline_texts, tmp_path):
    refs = [text for _, text in test_split]
    offline = _wer(refs, offline_texts)
    wav = _joined(test_split, tmp_path / "an4_test.wav")
    out = tmp_path / "finals.txt"
    proc = run_cli("--audio_path", str(wav), "--denoiser", "none", "--asr", "nemo", "--model", "an4_fastconformer_ctc",
                   "--output", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    streamed = _wer(refs, [out.read_text()])
    assert offline < 0.6, f"offline WER {offline:.3f}: the committed model is not the trained one"
    assert streamed <= 1.1 * offline, f"streamed {streamed:.3f} vs offline {offline:.3f}"


@pytest.mark.microphone
def test_streamed_wer_on_the_live_microphone_is_within_10_percent_of_offline(test_split, offline_texts, tmp_path):
    from test_microphone import transcribe_live
    from virtual_mic import VirtualMic

    chosen = list(range(0, len(test_split), 5))[:20]  # 20 clips from across the speakers
    clips = [test_split[i] for i in chosen]
    refs = [text for _, text in clips]
    offline = _wer(refs, [offline_texts[i] for i in chosen])
    wav = _joined(clips, tmp_path / "an4_mic.wav")
    duration = sf.info(str(wav)).duration
    with VirtualMic() as mic:
        out, summary = transcribe_live(mic, (wav, " ".join(refs), duration), tmp_path, "--denoiser", "none",
                                       "--asr", "nemo", "--model", "an4_fastconformer_ctc")
    assert summary["dropped_frames"] == 0, summary
    streamed = _wer(refs, [out])
    assert streamed <= 1.1 * offline + 0.02, f"streamed {streamed:.3f} vs offline {offline:.3f}\n{out}"


HELD_OUT_CONDITIONS = ("5", "0", "babble@5")


def test_the_gate_helps_this_model_in_noise_its_calibration_never_heard(tmp_path):
    """The default gate takes the curves calibrated for NeMo models (recipes/gate/calibrate.py
    --recognizer nemo, on AN4's train split). On the test split, in the noise files that
    calibration left out and in babble, at 5 and 0 dB, each clip its own stream through
    `asr-stream eval`: the default chain makes fewer errors than no denoiser in each condition,
    and pooled at most 0.9 x as many (with Whisper's curves it made more at 5 dB); clean clips
    keep their text."""
    import json

    from conftest import GATE_HELD_OUT_NOISES, SHARED_NOISE, word_errors

    def _word_errors(row) -> int:
        return word_errors([row["reference"]], [row["hypothesis"]])["errors"]

    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    for name in GATE_HELD_OUT_NOISES:
        (noise_dir / f"{name}.wav").symlink_to(SHARED_NOISE / f"{name}.wav")
    nemo = "asr=nemo;model=an4_fastconformer_ctc;runtime=onnx;lookahead_ms=80"
    out = tmp_path / "eval"
    proc = run_cli("eval", "--dataset", "an4", "--limit", "16", "--noise-dir", str(noise_dir),
                   "--chains", f"none:denoiser=none;{nemo},default:denoiser=deepfilternet;{nemo}",
                   "--conditions", ",".join(("clean", *HELD_OUT_CONDITIONS)), "--pace", "fast", "--no-quality",
                   "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    by = {(r["chain"], r["condition"], r["utterance"]): r for r in rows}
    clean = sorted(u for c, cond, u in by if c == "none" and cond == "clean")
    assert len(clean) == 16
    assert [u for u in clean if by[("none", "clean", u)]["hypothesis"] != by[("default", "clean", u)]["hypothesis"]] == []
    noisy = sorted({r["condition"] for r in rows} - {"clean"})  # named as eval names them: any@5dB, ...
    assert len(noisy) == len(HELD_OUT_CONDITIONS), noisy
    errors = {}
    for condition in noisy:
        for chain in ("none", "default"):
            errors[(chain, condition)] = sum(_word_errors(by[(chain, condition, u)]) for u in clean)
        assert errors[("default", condition)] < errors[("none", condition)], errors
    pooled = [sum(errors[(chain, c)] for c in noisy) for chain in ("none", "default")]
    assert pooled[1] <= 0.9 * pooled[0], errors

