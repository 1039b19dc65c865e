"""Noisy test conditions: real noise (or babble made from other utterances) mixed into speech at
a chosen SNR, the speech level measured on its active part only.

Measuring the speech level over the whole clip would count its pauses as speech and make every
mixture noisier than labelled, by more for clips with long pauses. Active samples are the ones
Silero VAD (shipped by faster-whisper) marks as speech. Everything is seeded from the condition
and the utterance, so a condition is the same audio in every run and for every chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_stream.errors import UserError
from asr_stream.io.audio_files import load_16k

SAMPLE_RATE = 16000


def active_speech_mask(speech: np.ndarray) -> np.ndarray:
    """True where Silero VAD finds speech (the whole clip if it finds none)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    mask = np.zeros(len(speech), bool)
    for seg in get_speech_timestamps(speech.astype(np.float32), VadOptions(min_silence_duration_ms=100,
                                                                            speech_pad_ms=30)):
        mask[seg["start"]:seg["end"]] = True
    return mask if mask.any() else np.ones(len(speech), bool)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def snr_db(speech: np.ndarray, noise: np.ndarray, mask: np.ndarray) -> float:
    """SNR of speech (over its active samples) to noise (over the whole clip)."""
    return 10 * np.log10(power(speech[mask]) / max(power(noise), 1e-20))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr: float, mask: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(mixture, scaled noise): `noise` (already the speech's length) scaled so that the active
    speech level is `snr` dB above it. A mixture that would clip is scaled down as a whole."""
    mask = active_speech_mask(speech) if mask is None else mask
    if power(noise) == 0:
        raise UserError("noise segment is silent: cannot mix at an SNR")
    gain = np.sqrt(power(speech[mask]) / (power(noise) * 10 ** (snr / 10)))
    scaled = (noise * gain).astype(np.float32)
    mixture = speech + scaled
    peak = float(np.max(np.abs(mixture))) if len(mixture) else 0.0
    if peak > 0.99:
        mixture, scaled = mixture * (0.99 / peak), scaled * (0.99 / peak)
    return mixture.astype(np.float32), scaled


def phrases_with_pauses(audio: np.ndarray, words: list, seed: int, pause_s=(0.4, 1.2), sr: int = SAMPLE_RATE) -> np.ndarray:
    """`audio` cut into phrases of one to five words at gaps between its words (`words`: word
    times, anything with .start and .end) with `pause_s` of quiet between them: a speaker saying
    one short phrase at a time. The words stay as they were said, so the transcript still holds."""
    rng = np.random.default_rng(seed)
    parts, last, count, size = [np.zeros(int(0.3 * sr), np.float32)], 0, 0, rng.integers(1, 6)
    for w, nxt in zip(words, words[1:]):
        count += 1
        if count >= size and nxt.start - w.end > 0.05:
            cut = int((w.end + nxt.start) / 2 * sr)
            parts += [audio[last:cut], np.zeros(int(rng.uniform(*pause_s) * sr), np.float32)]
            last, count, size = cut, 0, rng.integers(1, 6)
    parts.append(audio[last:])
    return np.concatenate(parts).astype(np.float32)


def seed_for(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "little")


def looped_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of `noise` from a random offset, looping around its end."""
    start = int(rng.integers(0, len(noise)))
    reps = int(np.ceil((start + n) / len(noise)))
    return np.tile(noise, reps)[start:start + n]


@dataclass(frozen=True)
class Condition:
    """`clean`, or a noise kind (a file stem in the noise folder, `babble`, or `any`: a noise file
    chosen per utterance) at an SNR."""

    noise: str | None
    snr: float | None

    @property
    def name(self) -> str:
        return "clean" if self.noise is None else f"{self.noise}@{self.snr:g}dB"

    @staticmethod
    def parse(spec: str) -> Condition:
        """`clean`, `10` (any noise at 10 dB), `babble@5`, `running_tap@0`."""
        if spec == "clean":
            return Condition(None, None)
        noise, _, snr = spec.rpartition("@")
        try:
            return Condition(noise or "any", float(snr))
        except ValueError:
            raise UserError(f"condition '{spec}': use clean, an SNR in dB, or NOISE@SNR") from None


class Mixer:
    """Makes the audio of each (utterance, condition)."""

    def __init__(self, noise_dir: Path, babble_sources: list[np.ndarray] | None = None, babble_talkers: int = 4):
        self.noise_dir = noise_dir
        self.files = sorted(p for p in noise_dir.glob("*") if p.suffix.lower() in (".wav", ".flac")) \
            if noise_dir.is_dir() else []
        self.babble_sources = babble_sources or []
        self.babble_talkers = babble_talkers
        self._cache: dict[Path, np.ndarray] = {}

    def _noise_file(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_16k(path)
        return self._cache[path]

    def noise_for(self, kind: str, n: int, rng: np.random.Generator, exclude: int | None = None) -> np.ndarray:
        if kind == "babble":
            pool = [i for i in range(len(self.babble_sources)) if i != exclude]
            if not pool:
                raise UserError("babble needs at least 2 utterances in the dataset (it is made of the others)")
            picks = rng.choice(pool, size=min(self.babble_talkers, len(pool)), replace=False)
            talkers = [looped_segment(self.babble_sources[i], n, rng) for i in picks]
            return np.sum([t / np.sqrt(max(power(t), 1e-12)) for t in talkers], axis=0).astype(np.float32)
        if not self.files:
            raise UserError(f"no noise files (.wav/.flac) in {self.noise_dir}: give --noise-dir")
        if kind == "any":
            path = self.files[int(rng.integers(0, len(self.files)))]
        else:
            matches = [p for p in self.files if p.stem == kind]
            if not matches:
                raise UserError(f"no noise '{kind}' in {self.noise_dir} (have: {', '.join(p.stem for p in self.files)})")
            path = matches[0]
        return looped_segment(self._noise_file(path), n, rng)

    def make(self, speech: np.ndarray, condition: Condition, key: str, index: int | None = None
             ) -> tuple[np.ndarray, str]:
        """(audio, what was mixed in) for one utterance under `condition`."""
        if condition.noise is None:
            return speech, "clean"
        rng = np.random.default_rng(seed_for(condition.name, key))
        noise = self.noise_for(condition.noise, len(speech), rng, exclude=index)
        mixture, _ = mix_at_snr(speech, noise, condition.snr)
        return mixture, condition.name
