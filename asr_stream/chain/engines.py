"""Loaded engines, shared: each model is loaded once per process and settings, and every stream
(the CLI's one, the load test's many, the daemon's sessions) is made from the same engines."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from asr_stream.denoisers import load_denoiser_engine
from asr_stream.errors import UserError
from asr_stream.recognizers import load_recognizer_engine
from asr_stream.stages import Denoiser, DenoiserEngine, Recognizer, RecognizerEngine
from asr_stream.runtime.threads import configure_threads, usable_cores

_cache: dict = {}
_lock = threading.Lock()


@dataclass
class Engines:
    """The chain's two engines; `create_streams()` gives one session's denoiser and recogniser."""

    denoiser: DenoiserEngine
    recognizer: RecognizerEngine
    gate: bool = True
    gate_sleep: bool = True

    def create_streams(self, live: bool | None = None) -> tuple[Denoiser, Recognizer]:
        """`live`: the stream's audio comes at wall-clock rate (True) or as fast as it is read
        (False); None keeps what the engines were loaded for. Only engines whose streams behave
        differently when live (`paced_streams`) are told."""
        denoiser = self.denoiser.create_stream()
        if self.gate and denoiser.name != "none":
            from asr_stream.denoisers.gate import GatedDenoiser

            denoiser = GatedDenoiser(denoiser, sleep=self.gate_sleep, recognizer=self.recognizer.name)
        if live is not None and getattr(self.recognizer, "paced_streams", False):
            return denoiser, self.recognizer.create_stream(live=live)
        return denoiser, self.recognizer.create_stream()


def stage_options(s) -> dict:
    """The settings each stage's engine is built from (`pipeline.Settings`)."""
    live = s.mode == "microphone" or s.pace == "realtime"  # audio arrives at wall-clock rate
    return dict(device=s.device, threads=s.threads, model=s.model, language=s.language,
                atten_lim_db=s.atten_lim_db, dry=s.dry, denoise_hop=s.denoise_hop,
                denoise_exact=s.denoise_exact, denoise_int8=s.denoise_int8,
                lookahead_ms=s.lookahead_ms, streaming=s.streaming, runtime=s.runtime, chunk_s=s.chunk_s,
                left_s=s.left_s, right_s=s.right_s, live=live, batch=s.batch,
                concurrency=model_calls_at_once(s.threads), whisper=s.whisper)


def model_calls_at_once(threads: int) -> int:
    """How many calls into one engine run side by side: one per core's worth of threads (the
    scheduler's streams keep them busy; a single stream makes one call at a time anyway)."""
    return max(1, usable_cores() // max(1, threads))


def load_engines(s) -> Engines:
    """The engines for settings `s`, loaded on first use and reused by every later call with the
    same settings."""
    if s.device not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{s.device}' (use cpu or cuda)")
    if s.threads < 1:
        raise UserError(f"--threads must be at least 1, got {s.threads}")
    for name in ("gate", "gate_sleep"):
        if not isinstance(getattr(s, name), bool):
            raise UserError(f"{name} must be true or false, got {getattr(s, name)!r}")
    configure_threads(s.threads)
    options = stage_options(s)
    return Engines(_cached("denoiser", s.denoiser, options, load_denoiser_engine),
                   _cached("recognizer", s.asr, options, load_recognizer_engine), gate=s.gate,
                   gate_sleep=s.gate_sleep)


def _cached(kind: str, spec: str, options: dict, load):
    key = (kind, spec, repr(sorted(options.items())))
    with _lock:  # one load at a time: two sessions asking at once get the same engine
        if key not in _cache:
            _cache[key] = load(spec, **options)
        return _cache[key]


def clear() -> None:
    """Forget every loaded engine (tests)."""
    with _lock:
        _cache.clear()
