"""A gate around any denoiser: how much of its output the recogniser hears, chosen from the
stream's estimated SNR.

Recognisers are hurt more by a denoiser's artifacts than by leftover noise, so the denoised
audio is mixed with the noisy input, `out = (1 - mix) * x + mix * denoised`, and `mix` follows the
SNR estimate through a curve measured on calibration mixtures (recipes/gate): 0 (bypass) on
clean speech, more in noise. The curves are per recogniser where calibrated: Whisper, trained on
noisy audio, wants little denoising; a CTC model trained on clean speech wants much more.
Babble (the noise reads as speech to the VAD) has a curve of its own: a denoiser cannot tell
the talkers apart and removes speech with them. In a pause the SNR cannot be read and `mix`
holds. It moves at most `1 / ramp_s` per second, sample by sample, so a change never clicks.
Readings fall on fixed points of the stream (every 100 ms) and the ramp is anchored to them, so
the output is the same however the audio is cut into calls.

The gate adds no latency past a held start (below): the denoiser's output is aligned with its
input, and the matching input samples wait in a short queue.

The input alone is read two ways, over the last 3 s: `SpectralFloor` (per-band floors: clean read
speech with few pauses reads clean there, where a broadband floor reads it like 20 dB SNR) and
`InputLevel` (broadband: noise whose spectrum moves, a cat or clattering dishes, reads noisy
there); it reads clean when both do. While the gate has passed the input through for a few
seconds and the input reads clean, the denoiser stops: the input goes out as it is and the
denoiser costs nothing. When either reading falls `WAKE_MARGIN_DB` below clean the denoiser
starts again from a fresh state, first
fed the last second of input (its output for that is thrown away) so it is warm when its output
is heard, and the mix ramps up as before. The noise estimator is then fed every sample from
where the warm-up began, so its readings are what they would have been with the denoiser running.

A stream starts with the denoiser stopped, and its first start waits for a second of input: the
input alone says more then (speech has begun), and a start there, fed the stream from its first
sample, gives the output of a denoiser that ran from the start but for the mix's first tenths of a
second. It starts unless the input reads clean. A stream that reads clean never loads the denoiser. A
stream that started it and whose first five readings all ask for a bypass stops it again at
once instead of after the usual seconds (later in a stream, a short pause in the noise must not).
Starting and stopping happen at reading points from a fresh state, so the output does not depend
on how the audio is cut.

For a recogniser that wants much denoising (NeMo's curves) a stream's first `hold_s` are held
back until the first decision: the input readings at 1 s when they read clean (released as it
is), else the first SNR reading after the start at whose mix all of it goes out; a held stream
that ends sooner, in noise, is denoised whole at its end. Without the hold a stream's first words
pass at mix 0 while that reading builds up, and a short utterance in noise is mostly those words. It delays a stream's first output once,
by at most `hold_s`. Whisper, which wants little denoising, is not held: there the held start
measured no better (BENCHMARKS.md has both).
"""

from __future__ import annotations

import json
import math
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np

from asr_stream.denoisers.noise_estimate import InputLevel, NoiseEstimator, SpectralFloor
from asr_stream.stages import Denoiser

CALIBRATION = Path(__file__).with_name("gate_calibration.json")  # made by recipes/gate/calibrate.py
CALIBRATED_LIKE = "deepfilternet"  # what a denoiser without calibration of its own uses
MIX_BINS = (0.05, 0.5, 0.95)  # how --stats-json counts time: bypassed / light / medium / full
BABBLE_VAD = 0.5  # mean VAD probability of the noise above which it counts as babble (measured: 0.82-0.97
# in babble, 0.02-0.10 in other real noise)
READ_EVERY = 1600  # samples between readings of the estimator (and decisions kept in the timeline) ...
TIMELINE_SPAN = 1200  # ... for the last 2 minutes, so captions can say what their audio got
CLEAN_SPECTRAL_DB = 30.0  # the input alone reads clean when `SpectralFloor` reads at least this ...
CLEAN_LEVEL_DB = 15.0  # ... and `InputLevel` at least this (noise whose spectrum moves reads clean by
# the first); both over 3 s. BENCHMARKS.md has how often clean speech and noise start the denoiser
START_DECISION_S = 1.0  # a stream's first start waits for this much input (not digital silence)
WAKE_MARGIN_DB = 3.0  # later a stopped denoiser starts when either reads this much below (no flapping),
SLEEP_AFTER_S = 3.0  # and it stops while the input reads clean after the gate has passed it through this long,
MIN_AWAKE_S = 5.0  # and not before it has run this long (a start and a stop cost a model load);
START_CLEAN_READINGS = 5  # but a stream whose first this many SNR readings all bypass stops it at once
WARM_S = 1.0  # input the denoiser is fed again when it starts, its output thrown away
HOLD_S = {"nemo": 1.0}  # per recogniser: a stream's start held back until the first decision, at
# most this long (<= WARM_S: a start inside the hold then denoises all of it); others: not held


@lru_cache(maxsize=1)
def _calibrations() -> dict:
    return json.loads(CALIBRATION.read_text())


def calibration_for(denoiser_name: str, recognizer: str | None = None) -> dict:
    """{"estimator_map": [(raw, dB), ...], "curve": {"noise": [(dB, mix), ...], "babble": [...]}}
    for this denoiser, with the curves fitted for `recognizer` where there are some (how much
    denoising helps depends on what the recogniser was trained on) and Whisper's otherwise."""
    table = _calibrations()
    entry = table.get(denoiser_name) or table[CALIBRATED_LIKE]
    curve = entry.get("curve_by_recognizer", {}).get(recognizer, entry["curve"])
    return {"estimator_map": entry["estimator_map"], "curve": curve}


def curve_value(curve, snr_db: float) -> float:
    """Linear interpolation through the curve's points, constant past its ends."""
    xs, ys = [p[0] for p in curve], [p[1] for p in curve]
    if snr_db == math.inf:
        return float(ys[-1])
    return float(np.interp(snr_db, xs, ys))


class GatedDenoiser:
    """A `stages.Denoiser` over another one. `gate_counters()` says what it decided."""

    def __init__(self, inner: Denoiser, curve=None, babble_curve=None, estimator_map=None,
                 start_mix: float = 0.0, ramp_s: float = 0.25, sleep: bool = True, recognizer: str | None = None,
                 hold_s: float | None = None):
        """`curve` / `babble_curve`: (SNR dB, mix) points for noise and for speech-like noise
        (default: the calibration's for this denoiser and `recognizer`, the name of the
        recogniser that hears the output). `sleep`: stop the denoiser while the input reads
        clean; `hold_s`: hold the stream's start until the first decision, at most this long
        (default: `HOLD_S`'s for `recognizer`; 0: never; see the module)."""
        from asr_stream.io.vad import SileroVAD

        self.inner = inner
        self.name = inner.name  # the summary says "denoiser_gate" when it is gated
        self.hop_size = inner.hop_size
        self.latency_s = inner.latency_s
        calibration = calibration_for(inner.name, recognizer)
        self.curve = tuple(map(tuple, curve or calibration["curve"]["noise"]))
        self.babble_curve = tuple(map(tuple, babble_curve or curve or calibration["curve"]["babble"]))
        self.start_mix = float(start_mix)  # before the first reading: the input as it is
        self.step = 1.0 / (ramp_s * 16000)  # largest change of mix per sample
        self.estimator = NoiseEstimator(calibration=estimator_map or calibration["estimator_map"],
                                        speech_detector=SileroVAD())
        self.level = InputLevel(window_s=3.0)
        self.spectral = SpectralFloor(window_s=3.0)
        self.sleep = bool(sleep)
        self.warm = int(WARM_S * 16000)
        hold_s = HOLD_S.get(recognizer or "", 0.0) if hold_s is None else hold_s
        self.hold = int(round(min(max(hold_s, 0.0), WARM_S) * 16000 / READ_EVERY)) * READ_EVERY
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self.estimator.reset()
        self.level.reset()
        self.spectral.reset()
        self.mix = self.target = self.start_mix
        self._pending = np.zeros(0, np.float32)  # input samples not out yet, from stream sample `samples` on
        self._denoised = np.zeros(0, np.float32)  # their denoised twins, as far as the denoiser has got
        self._inner_at = 0  # the stream sample the denoiser's next output sample belongs to
        self._history = np.zeros(0, np.float32)  # recent input, from stream sample `_history_at` on
        self._history_at = 0
        self.asleep = self.sleep and self.start_mix == 0.0  # the first decision starts it in noise (see the module)
        self._started = not self.asleep  # whether the denoiser has run in this stream
        self._estimated_to = 0  # the stream sample the noise estimator needs next
        self._awake_at = 0  # where the denoiser last started
        self._passing_since: int | None = None  # since when the gate has passed the input through
        self._clean_readings = 0  # SNR readings in a row that asked for a bypass ...
        self._clean_so_far = True  # ... and whether every one of the stream's readings did
        self.samples = 0  # samples out
        self.asleep_samples = 0
        self.denoised_samples = 0  # samples the denoiser was fed, warm-up included
        self.wakes = 0
        self.seconds_by_bin = [0.0] * (len(MIX_BINS) + 1)
        self.mix_seconds = 0.0  # integral of mix over time: mean mix = mix_seconds / seconds
        self.snr_readings = 0
        self.snr_sum = 0.0  # over readings with speech and finite SNR
        self.last_snr_db: float | None = None
        self.babble_samples = 0  # audio during which the noise read as speech-like
        self.babble = False
        self._ramp_start, self._ramp_mix = 0, self.mix  # where and from what mix the ramp to target began
        self._timeline: deque = deque(maxlen=TIMELINE_SPAN)  # per reading: (sample, mix, snr or None, babble)
        self._holding = self.hold > 0  # the stream's start, held until the first decision:
        self._held_x = np.zeros(0, np.float32)  # its input, from stream sample 0 on,
        self._held_e = np.zeros(0, np.float32)  # and its denoised twins, as far as the denoiser ran
        self.held_seconds = 0.0  # how long the start was held

    def process(self, hop: np.ndarray) -> np.ndarray:
        x = np.asarray(hop, np.float32)
        self._pending = np.concatenate([self._pending, x])
        self._history = np.concatenate([self._history, x])
        if not self.asleep:
            self._take(self._denoise(x))
        return self._emit()

    def flush(self) -> np.ndarray:
        if self._holding and not self._started and self._input_reads_noisy():
            self._wake()  # a held stream that ended before its first decision, in noise: denoised whole
            self._take(self.inner.flush())
            self._decide(self.estimator.reading())
            return self._release()
        if not self.asleep:
            self._take(self.inner.flush())
        out = self._emit()
        if len(self._pending):  # the denoiser stopped while its tail was due: the rest as it is
            self.asleep, self._denoised = True, self._denoised[:0]
            out = np.concatenate([out, self._emit()])
        if self._holding:  # a stream shorter than its first decision: at the mix decided so far
            out = np.concatenate([self._release(), out])
        return out

    def _denoise(self, x: np.ndarray) -> np.ndarray:
        self.denoised_samples += len(x)
        return self.inner.process(x)

    def _take(self, e: np.ndarray) -> None:
        """Denoised samples for the stream from `_inner_at` on; those already out (a warm-up's) are
        dropped, after the estimator has read them."""
        due = self.samples + len(self._denoised)  # the stream sample the queue needs next
        drop = min(len(e), max(0, due - self._inner_at))
        unread = max(0, self._estimated_to - self._inner_at)
        if unread < drop:
            a = self._inner_at + unread - self._history_at
            self._estimate(self._history[a : a + drop - unread], e[unread:drop])
        if self._holding and drop and self._inner_at == len(self._held_e):  # twins of held input
            self._held_e = np.concatenate([self._held_e, np.asarray(e[:drop], np.float32)])
        self._inner_at += len(e)
        self._denoised = np.concatenate([self._denoised, np.asarray(e[drop:], np.float32)])

    def _emit(self) -> np.ndarray:
        """Out as far as the input (asleep) or its denoised twins (awake) go, in blocks that end on
        reading points: the output never depends on call sizes."""
        out = []
        while True:
            ready = len(self._pending) if self.asleep else len(self._denoised)
            if not ready:
                break
            n = min(ready, READ_EVERY - self.samples % READ_EVERY)
            x, self._pending = self._pending[:n], self._pending[n:]
            if self.asleep:
                y = self._pass_block(x)
            else:
                e, self._denoised = self._denoised[:n], self._denoised[n:]
                y = self._mix_block(x, e)
            if not self._holding:
                out.append(y)
            else:  # kept with its twins until the first decision
                self._held_x = np.concatenate([self._held_x, x])
                if not self.asleep:
                    self._held_e = np.concatenate([self._held_e, e])
            if self.samples % READ_EVERY == 0:
                out.append(self._at_reading_point())
        keep = self.samples - self.warm - self._history_at  # input the next start may need again
        if keep > 0:
            self._history, self._history_at = self._history[keep:], self._history_at + keep
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _pass_block(self, x: np.ndarray) -> np.ndarray:
        self.level.update(x)
        self.spectral.update(x)
        self.asleep_samples += len(x)
        self.samples += len(x)
        if not self._holding:
            self._tally(np.zeros(len(x), np.float32))
        return x.copy()

    def _mix_block(self, x: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Samples up to the next reading point: mix follows the ramp from the last decision."""
        n = len(x)
        self.level.update(x)
        self.spectral.update(x)
        self._estimate(x, e)
        since = (self.samples - self._ramp_start) + np.arange(1, n + 1)
        ramp = self._ramp_mix + np.clip(self.target - self._ramp_mix, -self.step * since, self.step * since)
        self.mix = float(ramp[-1])
        if self.babble:
            self.babble_samples += n
        self.samples += n
        if not self._holding:
            self._tally(ramp)
        m = ramp.astype(np.float32)
        return ((1 - m) * x + m * e).astype(np.float32)  # exactly x at mix 0 and e at mix 1

    def _estimate(self, x: np.ndarray, e: np.ndarray) -> None:
        self.estimator.update(x, e)
        self._estimated_to += len(x)

    def _at_reading_point(self) -> np.ndarray:
        """Decide; returns the held start once its mix is known."""
        released = np.zeros(0, np.float32)
        if self.asleep:
            if not self._started:  # the stream's start (see the module)
                noisy = self._input_reads_noisy() if self.level.frames >= START_DECISION_S * 100 else None
            else:
                noisy = self._input_reads_noisy(WAKE_MARGIN_DB)
            if noisy:
                self._wake()
            elif self._holding and (noisy is not None or self.samples >= self.hold):
                released = self._release()  # it reads clean: as it is
        else:  # the window is 1.5 s: a reading per 100 ms is plenty
            reading = self.estimator.reading()
            self._decide(reading)
            if self._holding and (self.last_snr_db is not None or self.samples >= self.hold):
                released = self._release()
            self._ramp_start, self._ramp_mix = self.samples, self.mix
            passing = self.target == 0.0 and self.mix == 0.0
            if passing:
                if self._passing_since is None:
                    self._passing_since = self.samples
            else:
                self._passing_since = None
            if reading.snr_db is not None:  # a pause neither counts nor breaks the run
                self._clean_readings = self._clean_readings + 1 if passing else 0
                self._clean_so_far = self._clean_so_far and passing
            long_passing = (self._passing_since is not None
                            and self.samples - self._passing_since >= SLEEP_AFTER_S * 16000
                            and self.samples - self._awake_at >= MIN_AWAKE_S * 16000)
            clean_start = self._clean_so_far and self._clean_readings >= START_CLEAN_READINGS
            if self.sleep and (long_passing or clean_start):  # read the input only when it could stop
                noisy = self._input_reads_noisy()
                if (long_passing and not noisy) or (clean_start and noisy is False):
                    self._fall_asleep()
        self._timeline.append((self.samples, self.mix, None if self.asleep else self.last_snr_db, self.babble))
        return released

    def _input_reads_noisy(self, margin_db: float = 0.0) -> bool | None:
        """Whether the input alone reads noisy (either reading `margin_db` below clean); None
        before both have half a second of it."""
        spectral, level = self.spectral.snr_db(), self.level.snr_db()
        if spectral is None or level is None:
            return None
        return spectral < CLEAN_SPECTRAL_DB - margin_db or level < CLEAN_LEVEL_DB - margin_db

    def _wake(self) -> None:
        """Start the (fresh) denoiser on the last `warm` samples, so it is warm from here on."""
        self.asleep, self._started = False, True
        self.wakes += 1
        self._awake_at = self._ramp_start = self.samples
        self._ramp_mix = self.mix = self.target = 0.0
        self._passing_since = None
        start = max(self._history_at, self.samples - self.warm)
        self._inner_at = start
        x = self._history[start - self._history_at :]
        e = self._denoise(x)
        self.estimator.reset()  # it reads the warm-up and all after it, as far as the denoiser has got
        self._estimated_to = start
        self._take(e)

    def _fall_asleep(self) -> None:
        self.asleep, self._clean_so_far = True, False
        self._denoised = self._denoised[:0]
        self._passing_since = None
        self.inner.reset()  # fresh for the next start (DeepFilterNet3 frees its state, loads a new one then)

    def _decide(self, reading) -> None:
        self.babble = reading.speech_like is not None and reading.speech_like >= BABBLE_VAD
        if reading.snr_db is not None:
            self.target = curve_value(self.babble_curve if self.babble else self.curve, reading.snr_db)
            self.last_snr_db = reading.snr_db
            if math.isfinite(reading.snr_db):
                self.snr_readings += 1
                self.snr_sum += reading.snr_db

    def _release(self) -> np.ndarray:
        """The held start at the mix decided (the ramp goes on from it): the input where the
        denoiser has no twins for it (asleep; a stream's end before its tail came)."""
        x, e = self._held_x, self._held_e[: len(self._held_x)]
        self._holding = False
        self._held_x = self._held_e = np.zeros(0, np.float32)
        self.held_seconds = len(x) / 16000
        self.mix = self._ramp_mix = self.target if len(e) else 0.0
        m = np.zeros(len(x), np.float32)
        m[: len(e)] = self.mix
        self._tally(m)
        if not self.mix:
            return x.copy()
        out = x.copy()
        out[: len(e)] = (1 - m[: len(e)]) * x[: len(e)] + m[: len(e)] * e
        return out

    def _tally(self, ramp: np.ndarray) -> None:
        seconds = len(ramp) / 16000
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
            "denoiser_off_share": round(self.asleep_samples / self.samples, 3) if self.samples else None,
            "denoiser_starts": self.wakes,
            "start_held_s": round(self.held_seconds, 2),
        }
