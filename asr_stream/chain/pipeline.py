"""The whole chain's wiring, in one place: source -> framer -> denoiser -> recogniser -> captions."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

from asr_stream.output.captions import Captions
from asr_stream.errors import UserError
from asr_stream.output.writers import CaptionWriter
from asr_stream.chain.one_stream import Chain
from asr_stream.stages import Hypothesis
from asr_stream.output.stats import LatencyTracker, summarize


@dataclass
class Settings:
    audio_path: str | None = None
    mode: str = "file"  # file | microphone
    pace: str = "fast"  # realtime | fast (files only)
    raw_rate: int = 16000
    raw_format: str = "s16le"
    raw_channels: int = 1
    audio_backend: str = "sounddevice"
    input_device: str | None = None
    max_seconds: float | None = None  # stop after this many seconds of audio
    denoiser: str = "deepfilternet"
    gate: bool = True  # mix the denoised audio with the input by estimated SNR (denoisers/gate.py)
    gate_sleep: bool = True  # ... and stop the denoiser while the input reads clean
    atten_lim_db: float = 20.0
    dry: float = 0.0  # Demucs: share of the input mixed back (out = dry*x + (1-dry)*denoised)
    denoise_hop: int | None = None  # Demucs: samples per step (default: one deep frame, 16 ms)
    denoise_exact: bool = False  # Demucs: wait for the resamplers' full look-ahead (= offline)
    denoise_int8: bool = False  # Demucs: int8 weights for the deep layers and the LSTM
    asr: str = "whisper"
    model: str | None = None
    language: str | None = "en"
    lookahead_ms: float | None = None  # NeMo cache-aware models: which right context (default: the model's)
    streaming: str = "auto"  # NeMo: cache-aware | buffered | auto (chosen from the model)
    runtime: str = "torch"  # NeMo: torch | onnx (ONNX Runtime, exported once and cached) | onnx-int8
    chunk_s: float = 2.0  # NeMo buffered streaming: chunk, left and right context windows
    left_s: float = 1.0
    right_s: float = 0.6
    device: str = "cpu"
    threads: int = 1
    batch: bool = True  # batch concurrent streams' model calls (many streams over one set of engines)
    whisper: dict = field(default_factory=dict)  # the Whisper policy's settings (recognizers/whisper_tuning.py)


def make_source(s: Settings):
    if s.mode == "microphone":
        from asr_stream.io.microphone import MicrophoneSource

        return MicrophoneSource(s.input_device, backend=s.audio_backend)
    if s.audio_path is None:
        raise UserError("no input: give --audio_path FILE (or - for stdin), or --mode microphone")
    from asr_stream.io.sources import FileSource, RawStdinSource

    if s.audio_path == "-":
        return RawStdinSource(s.raw_rate, s.raw_format, s.raw_channels, pace=s.pace)
    return FileSource(s.audio_path, pace=s.pace)


def build_stages(s: Settings):
    """One stream's denoiser and recogniser for these settings, over engines loaded once per
    process and shared (`engines.load_engines`); a chain per input can reuse them after `reset()`."""
    from asr_stream.chain.engines import load_engines

    return load_engines(s).create_streams()


def build_chain(s: Settings, source=None, stages=None, keep_denoised: bool = False,
                clock_s: float | None = 600.0) -> Chain:
    if s.max_seconds is not None and s.max_seconds <= 0:
        raise UserError(f"--max-seconds must be positive, got {s.max_seconds}")
    denoiser, recognizer = stages or build_stages(s)
    source = source or make_source(s)
    return Chain(source, denoiser, recognizer, max_seconds=s.max_seconds, keep_denoised=keep_denoised,
                 clock_s=clock_s)


def run(s: Settings, captions: Captions | None = None, writer: CaptionWriter | None = None,
        chain: Chain | None = None, handle_signals: bool = True,
        on_hypothesis=None) -> tuple[dict, list[Hypothesis]]:
    """Run the chain to the end of its input (or Ctrl-C / SIGTERM, which flush the last words).
    Returns the run's summary and its final hypotheses; a failing stage raises."""
    chain = chain or build_chain(s)
    latency = LatencyTracker()
    finals: list[Hypothesis] = []
    interrupts = 0

    def on_signal(signum, frame):
        nonlocal interrupts
        interrupts += 1
        chain.stop_input() if interrupts == 1 else chain.abort()

    decisions = getattr(chain.denoiser, "decisions_between", None)

    def annotate(hyp: Hypothesis) -> dict | None:  # what the denoiser gate did to this caption's audio
        return {"denoiser_gate": decisions(hyp.start, hyp.end)} if decisions else None

    old = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    try:
        t0 = time.monotonic()
        chain.start()
        for hyp in chain.events():
            latency.observe(hyp, chain.clock.arrival_of)
            if on_hypothesis is not None:
                on_hypothesis(hyp)
            if captions is not None:
                captions.update(hyp)
            if hyp.final:
                finals.append(hyp)
                if writer is not None:
                    writer.write(hyp, annotate(hyp))
        wall = (chain.finished_at or time.monotonic()) - t0
    finally:
        chain.abort()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if captions is not None:
            captions.close()
        if writer is not None:
            writer.close()
    pace = "realtime" if s.mode == "microphone" else s.pace
    summary = summarize(chain, latency, wall, pace)
    summary["interrupted"] = interrupts > 0
    return summary, finals
