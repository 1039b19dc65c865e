"""A gate around any denoiser: how much of its output the recogniser hears, chosen from the
stream's estimated SNR.

Recognisers are hurt more by a denoiser's artifacts than by leftover noise, so the denoised
audio is mixed with the noisy input, `out = (1 - mix) * x + mix * denoised`, and `mix` follows the
SNR estimate through a curve measured on calibration mixtures (recipes/gate): 0 (bypass) on
clean speech, more in noise. Babble (the noise reads as speech to the VAD) has a curve of its
own: a denoiser cannot tell the talkers apart and removes speech with them. In a pause the SNR
cannot be read and `mix` holds. It moves at most `1 / ramp_s` per second, sample by sample, so a
change never clicks. Readings fall on fixed points of the stream (every 100 ms) and the ramp is
anchored to them, so the output is the same however the audio is cut into calls.

The gate adds no latency: the denoiser's output is aligned with its input, and the matching
input samples wait in a short queue.
"""

from __future__ import annotations

import json
import math
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np

from asr_stream.denoisers.noise_estimate import NoiseEstimator
from asr_stream.stages import Denoiser

CALIBRATION = Path(__file__).with_name("gate_calibration.json")  # made by recipes/gate/calibrate.py
CALIBRATED_LIKE = "deepfilternet"  # what a denoiser without calibration of its own uses
MIX_BINS = (0.05, 0.5, 0.95)  # how --stats-json counts time: bypassed / light / medium / full
BABBLE_VAD = 0.5  # mean VAD probability of the noise above which it counts as babble (measured: 0.82-0.97
# in babble, 0.02-0.10 in other real noise)
READ_EVERY = 1600  # samples between readings of the estimator (and decisions kept in the timeline) ...
TIMELINE_SPAN = 1200  # ... for the last 2 minutes, so captions can say what their audio got


@lru_cache(maxsize=1)
def _calibrations() -> dict:
    return json.loads(CALIBRATION.read_text())


def calibration_for(denoiser_name: str) -> dict:
    """{"estimator_map": [(raw, dB), ...], "curve": {"noise": [(dB, mix), ...], "babble": [...]}}
    for this denoiser."""
    table = _calibrations()
    return table.get(denoiser_name) or table[CALIBRATED_LIKE]


def curve_value(curve, snr_db: float) -> float:
    """Linear interpolation through the curve's points, constant past its ends."""
    xs, ys = [p[0] for p in curve], [p[1] for p in curve]
    if snr_db == math.inf:
        return float(ys[-1])
    return float(np.interp(snr_db, xs, ys))


class GatedDenoiser:
    """A `stages.Denoiser` over another one. `gate_counters()` says what it decided."""

    def __init__(self, inner: Denoiser, curve=None, babble_curve=None, estimator_map=None,
                 start_mix: float = 0.0, ramp_s: float = 0.25):
        """`curve` / `babble_curve`: (SNR dB, mix) points for noise and for speech-like noise
        (default: the calibration's for this denoiser)."""
        from asr_stream.io.vad import SileroVAD

        self.inner = inner
        self.name = inner.name  # the summary says "denoiser_gate" when it is gated
        self.hop_size = inner.hop_size
        self.latency_s = inner.latency_s
        calibration = calibration_for(inner.name)
        self.curve = tuple(map(tuple, curve or calibration["curve"]["noise"]))
        self.babble_curve = tuple(map(tuple, babble_curve or curve or calibration["curve"]["babble"]))
        self.start_mix = float(start_mix)  # before the first reading: the input as it is
        self.step = 1.0 / (ramp_s * 16000)  # largest change of mix per sample
        self.estimator = NoiseEstimator(calibration=estimator_map or calibration["estimator_map"],
                                        speech_detector=SileroVAD())
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self.estimator.reset()
        self.mix = self.target = self.start_mix
        self._pending = np.zeros(0, np.float32)  # input samples whose denoised twins are not out yet
        self.samples = 0
        self.seconds_by_bin = [0.0] * (len(MIX_BINS) + 1)
        self.mix_seconds = 0.0  # integral of mix over time: mean mix = mix_seconds / seconds
        self.snr_readings = 0
        self.snr_sum = 0.0  # over readings with speech and finite SNR
        self.last_snr_db: float | None = None
        self.babble_samples = 0  # audio during which the noise read as speech-like
        self.babble = False
        self._ramp_start, self._ramp_mix = 0, self.mix  # where and from what mix the ramp to target began
        self._timeline: deque = deque(maxlen=TIMELINE_SPAN)  # per reading: (sample, mix, snr or None, babble)

    def process(self, hop: np.ndarray) -> np.ndarray:
        self._pending = np.concatenate([self._pending, np.asarray(hop, np.float32)])
        return self._mix(self.inner.process(hop))

    def flush(self) -> np.ndarray:
        return self._mix(self.inner.flush())

    def _mix(self, e: np.ndarray) -> np.ndarray:
        n = len(e)
        if not n:
            return e
        x, self._pending = self._pending[:n], self._pending[n:]
        out = np.empty(n, np.float32)
        start = 0
        while start < n:  # blocks that end on reading points: the output never depends on call sizes
            end = min(n, start + READ_EVERY - self.samples % READ_EVERY)
            out[start:end] = self._mix_block(x[start:end], e[start:end])
            start = end
        return out

    def _mix_block(self, x: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Samples up to the next reading point: mix follows the ramp from the last decision."""
        n = len(x)
        self.estimator.update(x, e)
        since = (self.samples - self._ramp_start) + np.arange(1, n + 1)
        ramp = self._ramp_mix + np.clip(self.target - self._ramp_mix, -self.step * since, self.step * since)
        self.mix = float(ramp[-1])
        if self.babble:
            self.babble_samples += n
        self._count(ramp)
        if self.samples % READ_EVERY == 0:  # the window is 1.5 s: a reading per 100 ms is plenty
            self._decide(self.estimator.reading())
            self._ramp_start, self._ramp_mix = self.samples, self.mix
            self._timeline.append((self.samples, self.mix, self.last_snr_db, self.babble))
        m = ramp.astype(np.float32)
        return ((1 - m) * x + m * e).astype(np.float32)  # exactly x at mix 0 and e at mix 1

    def _decide(self, reading) -> None:
        self.babble = reading.speech_like is not None and reading.speech_like >= BABBLE_VAD
        if reading.snr_db is not None:
            self.target = curve_value(self.babble_curve if self.babble else self.curve, reading.snr_db)
            self.last_snr_db = reading.snr_db
            if math.isfinite(reading.snr_db):
                self.snr_readings += 1
                self.snr_sum += reading.snr_db

    def _count(self, ramp: np.ndarray) -> None:
        seconds = len(ramp) / 16000
        self.samples += len(ramp)
        self.mix_seconds += float(ramp.mean()) * seconds
        for b, count in enumerate(np.bincount(np.searchsorted(MIX_BINS, ramp), minlength=len(MIX_BINS) + 1)):
            self.seconds_by_bin[b] += int(count) / 16000

    def decisions_between(self, start_s: float, end_s: float) -> dict | None:
        """Mean mix and SNR estimate over a span of the stream (seconds), from the last 2 minutes."""
        lo, hi = int(start_s * 16000), int(end_s * 16000) + READ_EVERY
        marks = [m for m in list(self._timeline) if lo <= m[0] <= hi]
        if not marks:
            return None
        snrs = [m[2] for m in marks if m[2] is not None and math.isfinite(m[2])]
        return {"mix": round(float(np.mean([m[1] for m in marks])), 3),
                "snr_db": round(float(np.mean(snrs)), 1) if snrs else None,
                "babble": bool(np.mean([m[3] for m in marks]) >= 0.5)}

    def gate_counters(self) -> dict:
        seconds = self.samples / 16000
        names = ("bypassed", "light", "medium", "full")
        return {
            "mean_mix": round(self.mix_seconds / seconds, 3) if seconds else None,
            "seconds": {k: round(v, 2) for k, v in zip(names, self.seconds_by_bin)},
            "bypassed_share": round(self.seconds_by_bin[0] / seconds, 3) if seconds else None,
            "babble_share": round(self.babble_samples / self.samples, 3) if self.samples else None,
            "mean_snr_db": round(self.snr_sum / self.snr_readings, 1) if self.snr_readings else None,
            "last_snr_db": None if self.last_snr_db is None else round(self.last_snr_db, 1),
        }
