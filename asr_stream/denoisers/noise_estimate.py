"""How noisy a stream is right now, from what its denoiser took out.

The denoiser's output `e` tells where the speech is and the input minus it, `x - e`, what the
noise is. Over the last 1.5 s: noise power N = mean power of `x - e`; the frames where `e` is
loudest (its upper half) carry the speech, so the speech power is the input's power there
minus N. The window holds speech when `e`'s loud frames stand well above its quiet ones (a
pause has no such contrast); otherwise there is no reading and the gate holds. It costs a few
sums per hop, works with any denoiser, and needs no model of its own.

A denoiser leaves part of the noise in `e`, so the raw ratio reads high in heavy noise; a
per-denoiser map fitted on mixtures at known SNRs (`calibration`) turns it into dB of mixing
SNR. When a denoiser cannot tell the noise from speech at all (babble), the noise stays in `e`
and the reading stays high: the gate then leaves the audio alone, which is also what helps
recognition there.

Whether the noise is speech-like (babble) is read the same way: Silero VAD, run on what the
denoiser took out, scores speech there in babble and not in other noise (0.2 ms per 32 ms).

The first 0.3 s are left out (denoisers pass or mute their first frames while they settle), and
the first reading waits for half a second more.
Frames of digital silence (padding, a muted input) are left out of both readings: they are not
the room's noise.
Memory is a fixed ring of 10 ms frame powers, however long the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FRAME = 160  # 10 ms at 16 kHz
VAD_CHUNK = 512  # Silero's 32 ms chunk
MIN_FRAMES = 50  # half a second before the first reading: shorter spans read speech onsets as noise
SILENCE_DBFS = -70.0  # residual quieter than this: no noise to speak of
DIGITAL_SILENCE = 1e-10  # frame power (-100 dBFS, under a 16-bit LSB) of padding, muted or dropped audio:
# it says nothing about the room, so no reading counts it (real recordings have none)


@dataclass(frozen=True)
class NoiseReading:
    snr_db: float | None  # None: no speech in the window, so no SNR to read; inf: no noise at all
    noise_dbfs: float  # power of the estimated noise over the window, dB full scale
    speech_like: float | None = None  # mean VAD probability of the noise over the window (babble: high)


# raw reading -> mixing SNR, per denoiser: (raw, snr) points, fitted on calibration mixtures
IDENTITY = ((0.0, 0.0), (1.0, 1.0))


class NoiseEstimator:
    """Rolling SNR estimate over the last `window_s` seconds of (input, denoised) pairs."""

    def __init__(self, window_s: float = 1.5, calibration=IDENTITY, contrast_db: float = 6.0,
                 warmup_s: float = 0.3, speech_detector=None):
        """`speech_detector`: a `vad.SileroVAD` (or anything with its `__call__` and `reset`) to
        score the noise for speech; None skips that."""
        self.size = max(10, int(round(window_s * 100)))
        self.detector = speech_detector
        self._vad_size = max(1, int(round(window_s * 16000 / VAD_CHUNK)))
        self.warmup = int(round(warmup_s * 100))  # frames skipped at the start: denoisers settle first
        self.calibration = tuple(calibration)
        self.contrast = 10 ** (contrast_db / 10)
        self.reset()

    def reset(self) -> None:
        self._px = np.zeros(self.size)  # mean power per 10 ms frame: input,
        self._pe = np.zeros(self.size)  # denoised,
        self._pr = np.zeros(self.size)  # and what the denoiser took out
        self._filled = 0
        self._next = 0
        self._skip = self.warmup
        self._vad = np.zeros(self._vad_size)  # VAD probabilities of the noise, 32 ms chunks
        self._vad_filled = self._vad_next = 0
        self._residual = np.zeros(0, np.float32)
        if self.detector is not None:
            self.detector.reset()
        self._carry_x = np.zeros(0, np.float32)
        self._carry_e = np.zeros(0, np.float32)

    def update(self, x: np.ndarray, e: np.ndarray) -> None:
        """Aligned input and denoised samples (any length)."""
        x = np.concatenate([self._carry_x, x])
        e = np.concatenate([self._carry_e, e])
        n = len(x) // FRAME * FRAME
        self._carry_x, self._carry_e = x[n:], e[n:]
        if not n:
            return
        skipped = min(self._skip, n // FRAME)
        self._skip -= skipped
        xs = x[skipped * FRAME : n].reshape(-1, FRAME).astype(np.float64)
        es = e[skipped * FRAME : n].reshape(-1, FRAME).astype(np.float64)
        px = (xs**2).mean(1)
        kept = px >= DIGITAL_SILENCE  # frames of the room, not padding
        if self.detector is not None:
            self._score_noise((xs[kept] - es[kept]).astype(np.float32).ravel())
        px, pe, pr = px[kept], (es[kept] ** 2).mean(1), ((xs[kept] - es[kept]) ** 2).mean(1)
        last = slice(-self.size, None)  # more frames than the ring holds: only the newest count
        where = (self._next + np.arange(len(px[last]))) % self.size
        self._px[where], self._pe[where], self._pr[where] = px[last], pe[last], pr[last]
        self._next = (self._next + len(px[last])) % self.size
        self._filled = min(self._filled + len(px), self.size)

    def _score_noise(self, residual: np.ndarray) -> None:
        self._residual = np.concatenate([self._residual, residual])
        while len(self._residual) >= VAD_CHUNK:
            self._vad[self._vad_next] = self.detector(self._residual[:VAD_CHUNK])
            self._residual = self._residual[VAD_CHUNK:]
            self._vad_next = (self._vad_next + 1) % self._vad_size
            self._vad_filled = min(self._vad_filled + 1, self._vad_size)

    def speech_like(self) -> float | None:
        return float(self._vad[: self._vad_filled].mean()) if self._vad_filled else None

    def raw_snr_db(self) -> tuple[float | None, float]:
        """(uncalibrated SNR or None in a pause, noise dBFS)."""
        k = self._filled
        if k < MIN_FRAMES:
            return None, -math.inf
        px, pe, pr = self._px[:k], self._pe[:k], self._pr[:k]
        noise = float(pr.mean())
        noise_db = 10 * math.log10(noise) if noise > 0 else -math.inf
        order = np.argsort(pe)
        loud, quiet = order[k // 2 :], order[: max(1, k // 5)]
        if pe[loud].mean() < self.contrast * max(pe[quiet].mean(), 1e-12):
            return None, noise_db  # no speech to measure against
        if noise_db < SILENCE_DBFS:
            return math.inf, noise_db
        speech = max(float(px[loud].mean()) - noise, 1e-3 * noise)
        return 10 * math.log10(speech / noise), noise_db

    def reading(self) -> NoiseReading:
        raw, noise_db = self.raw_snr_db()
        return NoiseReading(calibrated(self.calibration, raw), noise_db, self.speech_like())


def calibrated(points, raw: float | None) -> float | None:
    """A raw reading through a calibration map: linear through its (raw, dB) points, extended past
    both ends with the end segments' slopes."""
    if raw is None or raw == math.inf or len(points) < 2:
        return raw
    xs, ys = zip(*points)
    i = int(np.clip(np.searchsorted(xs, raw) - 1, 0, len(xs) - 2))
    return ys[i] + (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) * (raw - xs[i])


class _RecentFrames:
    """A ring of the last `size` frames' powers (`_p`, one row per frame)."""

    def _keep(self, powers: np.ndarray) -> None:
        powers = powers[-self.size :]
        self._p[(self._next + np.arange(len(powers))) % self.size] = powers
        self._next = (self._next + len(powers)) % self.size
        self._filled = min(self._filled + len(powers), self.size)
        self.frames += len(powers)


class InputLevel(_RecentFrames):
    """A rough SNR from the input alone, for while no denoiser runs: over the last `window_s`,
    the quietest fifth of the 10 ms frames is the noise floor and the loudest half, less that
    floor, the speech. Pauses between words give the floor away; where there are none, or the
    noise comes and goes, the floor reads high and the SNR low, which errs towards starting the
    denoiser (CPU), never towards leaving noise in (words). Digital silence is not a floor: a
    noisy recording that starts with padded zeros must read noisy once its noise begins. A few
    sums per hop, no model."""

    def __init__(self, window_s: float = 1.5):
        self.size = max(10, int(round(window_s * 100)))
        self.reset()

    def reset(self) -> None:
        self._p = np.zeros(self.size)
        self._filled = self._next = 0
        self.frames = 0  # 10 ms frames read that were not digital silence, in all
        self._carry = np.zeros(0, np.float32)

    def update(self, x: np.ndarray) -> None:
        x = np.concatenate([self._carry, np.asarray(x, np.float32)])
        n = len(x) // FRAME * FRAME
        self._carry = x[n:]
        powers = (x[:n].reshape(-1, FRAME).astype(np.float64) ** 2).mean(1)
        self._keep(powers[powers >= DIGITAL_SILENCE])

    def snr_db(self) -> float | None:
        """None before half a second of input that is not digital silence; inf when the floor is
        quieter than any real room."""
        k = self._filled
        if k < MIN_FRAMES:
            return None
        p = np.sort(self._p[:k])
        floor = float(p[: max(1, k // 5)].mean())
        if floor <= 0 or 10 * math.log10(floor) < SILENCE_DBFS:
            return math.inf
        speech = max(float(p[k // 2 :].mean()) - floor, 1e-3 * floor)
        return 10 * math.log10(speech / floor)


class SpectralFloor(_RecentFrames):
    """A rough SNR from the input alone that reads continuous speech right: in speech with few
    pauses the quietest frames are still speech, so a broadband floor (`InputLevel`) reads clean
    read speech like speech at 20 dB SNR; each frequency band on its own still falls to the
    noise between harmonics and phonemes. Over the last `window_s`, 32 ms frames every 10 ms
    (125 Hz - 7 kHz): per band the floor is the 10th percentile of its power, and the SNR is the
    mean power over the bands, less the floors, to the floors. Noise whose spectrum moves (a cat,
    clattering dishes) can read clean here; the gate asks both readings. An FFT per frame and a
    partial sort per reading; digital silence is left out, as in `InputLevel`."""

    SIZE, HOP, BANDS = 512, FRAME, slice(4, 225)  # bins 4..224 of a 512-point FFT at 16 kHz

    def __init__(self, window_s: float = 3.0, floor_percentile: int = 10):
        self.size = max(10, int(round(window_s * 100)))
        self.percentile = floor_percentile
        self._window = np.hanning(self.SIZE).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        self._p = np.zeros((self.size, self.BANDS.stop - self.BANDS.start), np.float32)
        self._filled = self._next = 0
        self.frames = 0  # frames read that were not digital silence, in all
        self._carry = np.zeros(0, np.float32)

    def update(self, x: np.ndarray) -> None:
        x = np.concatenate([self._carry, np.asarray(x, np.float32)])
        n = (len(x) - self.SIZE) // self.HOP + 1 if len(x) >= self.SIZE else 0
        self._carry = x[n * self.HOP :]
        if not n:
            return
        frames = np.lib.stride_tricks.sliding_window_view(x, self.SIZE)[: n * self.HOP : self.HOP]
        frames = frames[(frames[:, -self.HOP :].astype(np.float64) ** 2).mean(1) >= DIGITAL_SILENCE]
        spectra = np.fft.rfft(frames * self._window, axis=1)[:, self.BANDS]
        self._keep(spectra.real**2 + spectra.imag**2)

    def snr_db(self) -> float | None:
        """None before half a second of input that is not digital silence; inf when the floors are
        quieter than any real room."""
        k = self._filled
        if k < MIN_FRAMES:
            return None
        p = self._p[:k]
        floor = float(np.partition(p, k * self.percentile // 100, axis=0)[k * self.percentile // 100].sum())
        total = float(p.mean(0).sum())
        if floor <= 0 or 10 * math.log10(floor / (self.SIZE * (self.BANDS.stop - self.BANDS.start))) < SILENCE_DBFS:
            return math.inf
        return 10 * math.log10(max(total - floor, 1e-3 * floor) / floor)
