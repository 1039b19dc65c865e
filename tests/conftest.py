"""Shared test helpers: real speech (shipped clips, and ../shared when present), WER, CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_SPEECH = SHARED / "data" / "speech"
SHARED_NOISE = SHARED / "data" / "noise"
GATE_HELD_OUT_NOISES = ("dude_miaowing", "white_noise", "speechbrain_noise2", "speechbrain_noise4", "speechbrain_noise5")
# ^ the noise files recipes/gate/calibrate.py leaves out of the gate's calibration
SAMPLE_WAV = REPO / "asr_stream" / "data" / "samples" / "LJ001-0001.wav"

needs_shared = pytest.mark.skipif(not SHARED_SPEECH.is_dir(), reason="../shared (speech and noise data) is absent")

# The model-free tier (`make test-fast`): modules whose tests load no recogniser or denoiser model,
# start no daemon, browser or CLI run. Every other test is marked `slow` here (real models over
# real audio, whole installs, long sessions); `make test` runs both tiers.
MODEL_FREE = {"test_batching", "test_ctc_decoding", "test_demucs_checkpoint", "test_deploy", "test_eval_latency",
              "test_eval_metrics", "test_eval_mixing", "test_framer", "test_local_agreement", "test_writers",
              "test_resampler", "test_resources", "test_ring_buffer", "test_sources", "test_stats",
              "test_whisper_grounding", "test_whisper_models"}


# The longest modules (minutes each: real speech through Whisper, file by file and continuous) go
# first, so that with `--dist loadfile` they run beside the many short ones instead of after them.
LONGEST_FIRST = ("test_whisper_streamed_vs_offline", "test_whisper_continuous", "test_gate", "test_an4_model",
                 "test_many_streams")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__ not in MODEL_FREE:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: the rest keep their order


def audioeval_clips() -> list[tuple[Path, str]]:
    """English speech clips with transcripts shipped inside the pytest-audioeval package.

    Its `counting` clip is left out: Whisper writes "1, 2, 3" and the English normaliser turns
    the spoken-out reference into "12345678910", so WER cannot score it fairly."""
    import pytest_audioeval  # a namespace package: no __file__, but a __path__

    folder = Path(list(pytest_audioeval.__path__)[0]) / "samples" / "audio" / "en"
    return [(wav, wav.with_suffix(".txt").read_text().strip()) for wav in sorted(folder.glob("*.wav"))
            if wav.stem != "counting"]


def demo_clip() -> tuple[Path, str]:
    """The public-domain LJSpeech clip the package ships (22.05 kHz)."""
    return SAMPLE_WAV, SAMPLE_WAV.with_suffix(".txt").read_text().strip()


def shared_tsv(folder: str) -> list[tuple[Path, str]]:
    base = SHARED_SPEECH / folder
    rows = [line.rstrip("\n").split("\t") for line in (base / "transcripts.tsv").read_text().splitlines() if line.strip()]
    sub = "clean" if (base / "clean").is_dir() else ""
    return [(base / sub / name, text) for name, text in rows]


_normalizer = None


def normalize(text: str) -> str:
    global _normalizer
    if _normalizer is None:
        from whisper_normalizer.english import EnglishTextNormalizer

        _normalizer = EnglishTextNormalizer()
    return " ".join(_normalizer(text).split())


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return jiwer.wer([normalize(r) for r in refs], [normalize(h) or "<empty>" for h in hyps])


def load_16k(path: Path) -> np.ndarray:
    import julius
    import torch

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return julius.resample_frac(torch.from_numpy(x), sr, 16000).numpy() if sr != 16000 else x


def concat_with_gaps(clips: list[np.ndarray], gap_s: float = 1.2, sr: int = 16000) -> np.ndarray:
    gap = np.zeros(int(gap_s * sr), np.float32)
    parts = [gap]
    for c in clips:
        parts += [c.astype(np.float32), gap]
    return np.concatenate(parts)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if len(noise) < len(speech):
        noise = np.tile(noise, len(speech) // len(noise) + 1)
    start = rng.integers(0, len(noise) - len(speech) + 1)
    noise = noise[start : start + len(speech)]
    active = speech[np.abs(speech) > 0.02 * np.abs(speech).max()]
    gain = np.sqrt(np.mean(active**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def stream(recognizer, audio: np.ndarray, step: int = 1600) -> list:
    """Feed a recogniser `audio` in blocks of `step` samples from a fresh stream; all its hypotheses."""
    recognizer.reset()
    hyps = []
    for i in range(0, len(audio), step):
        recognizer.accept_waveform(audio[i : i + step])
        hyps += recognizer.decode()
    return hyps + recognizer.finish()


def final_text(hyps) -> str:
    return " ".join(h.text for h in hyps if h.final)


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 300, env: dict | None = None):
    """Run `asr-stream` as a user would (a separate process; stdout is a pipe)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "asr_stream", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=full_env, cwd=REPO)


@pytest.fixture(scope="session")
def whisper_model_path() -> str:
    from asr_stream.recognizers.whisper import bundled_model_path

    return bundled_model_path()


from asr_stream.evaluation.offline import OfflineWhisper  # noqa: E402


@pytest.fixture(scope="session")
def offline_whisper() -> OfflineWhisper:
    return OfflineWhisper()


from asr_stream.evaluation.mixing import phrases_with_pauses  # noqa: E402,F401  (tests import it from here)


def word_errors(refs: list[str], hyps: list[str]) -> dict:
    """WER, insertions / deletions / substitutions per word of `refs`, and the count of word errors
    (normalised text)."""
    import jiwer

    out = jiwer.process_words([normalize(r) or "<empty>" for r in refs], [normalize(h) or "<empty>" for h in hyps])
    n = sum(len(normalize(r).split()) for r in refs) or 1
    return {"wer": out.wer, "ins": out.insertions / n, "del": out.deletions / n, "sub": out.substitutions / n,
            "errors": out.insertions + out.deletions + out.substitutions}
