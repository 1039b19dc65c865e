"""`asr-stream denoise IN -o OUT`: run a denoiser stage over a whole file, file to file.

The file is read in blocks, mixed to mono, resampled to 16 kHz block by block, fed to the
denoiser one hop at a time and flushed at the end, as in the live chain. A file is all there
at once, though, so by default a denoiser that can use that does: Demucs normalises by the
whole file's standard deviation (measured in a first pass) and waits for its full look-ahead,
which makes the output the reference implementation's offline output. `live=True` gives
the live chain's output instead (a running scale). Only a block of input (plus what the
denoiser and the resamplers keep) is ever in memory, so hours-long recordings are fine. The output is aligned with the input and exactly as long: at
16 kHz by default, or resampled back to the input's rate with `keep_rate` (always mono).

The result is written to a hidden temporary file beside OUT and renamed over OUT at the end,
so a failed or interrupted run never leaves a half-written OUT behind.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.io.resampler import StreamingResampler

BLOCK_FRAMES = 1 << 15  # input frames read at a time (0.68 s at 48 kHz)
PROGRESS_MIN_SECONDS = 10.0  # shorter files finish before a progress bar means anything

# extensions libsndfile knows under another name: .aif -> AIFF, .oga -> OGG, .opus -> OGG/OPUS
_EXTENSION_ALIASES = {"AIF": ("AIFF", None), "OGA": ("OGG", None), "OPUS": ("OGG", "OPUS")}
_FLOAT_FORMATS = ("WAV", "WAVEX", "W64", "RF64", "CAF", "AIFF")


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) soundfile should write `path` with, from its extension: WAV (and the
    other formats that hold floats) as 32-bit float, so nothing clips or rounds; the rest
    with libsndfile's default (FLAC: PCM_16, OGG: Vorbis, ...)."""
    ext = Path(path).suffix[1:].upper()
    if not ext:
        raise UserError(f"output file has no extension: {path} (use .wav, .flac or .ogg)")
    fmt, subtype = _EXTENSION_ALIASES.get(ext, (ext, None))
    if fmt not in sf.available_formats():
        raise UserError(f"cannot write '.{ext.lower()}' files: {path} (use .wav, .flac or .ogg)")
    if subtype is None:
        subtype = "FLOAT" if fmt in _FLOAT_FORMATS else sf.default_subtype(fmt)
    if not subtype or not sf.check_format(fmt, subtype):
        raise UserError(f"cannot write '.{ext.lower()}' files: {path} (use .wav, .flac or .ogg)")
    return fmt, subtype


def _check_options(options: dict) -> None:
    dry = options.get("dry")
    if dry is not None and not (0.0 <= dry <= 1.0):
        raise UserError(f"--dry must be between 0 and 1, got {dry}")
    hop = options.get("denoise_hop")
    if hop is not None and hop < 1:
        raise UserError(f"--denoise-hop must be a positive number of samples, got {hop}")
    atten = options.get("atten_lim_db")
    if atten is not None and not (math.isfinite(atten) and atten >= 0):
        raise UserError(f"--atten-lim-db must be 0 (no limit) or more, got {atten}")


def _check_output(out_path: Path) -> tuple[str, str]:
    if out_path.is_dir():
        raise UserError(f"output is a directory, not a file: {out_path}")
    folder = out_path.parent
    if not folder.is_dir():
        raise UserError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write into the output folder (permission denied): {folder}")
    return output_format(out_path)


def _progress(enabled: bool | None, seconds: float):
    """A rich progress bar on stderr (with time remaining), or None. `enabled=None`: only
    when stderr is a terminal and the file is long enough to wait for."""
    if enabled is None:
        enabled = sys.stderr.isatty() and seconds > PROGRESS_MIN_SECONDS
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TextColumn("remaining"), TimeRemainingColumn(),
                    console=Console(file=sys.stderr), transient=True)


class _CappedWriter:
    """Writes the output as it comes, then makes it exactly `length` frames at the end: the
    resampler back to the input's rate rounds its length up, so its last samples are cut
    (and a denoiser that came up short would be padded with silence)."""

    def __init__(self, f: sf.SoundFile):
        self.f, self.written, self.held = f, 0, np.zeros(0, np.float32)

    def write(self, y: np.ndarray) -> None:
        y = np.concatenate([self.held, y])  # hold a few samples back, in case they are past the end
        keep = min(len(y), 64)
        self.held = y[len(y) - keep :]
        if len(y) > keep:
            self.f.write(y[: len(y) - keep])
            self.written += len(y) - keep

    def finish(self, length: int) -> None:
        if self.written > length:
            raise RuntimeError(f"wrote {self.written} frames, more than the input's {length}")
        tail = self.held[: length - self.written]
        tail = np.concatenate([tail, np.zeros(length - self.written - len(tail), np.float32)])
        if len(tail):
            self.f.write(tail)
            self.written += len(tail)


class _RunningStd:
    """Standard deviation of a long signal block by block (float64 sums, as torch's unbiased std)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        if not len(x):
            return
        x = x.astype(np.float64)
        n, mean = len(x), float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


def _mono_16k_blocks(in_path: Path, rate: int, on_block=None):
    """The file as 16 kHz mono float32, block by block (the resampler's tail last)."""
    to16 = StreamingResampler(rate, SAMPLE_RATE)
    try:
        with sf.SoundFile(str(in_path)) as f:
            for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
                if on_block is not None:
                    on_block(len(block))
                yield to16.process(mono)
    except sf.LibsndfileError as exc:
        raise UserError(f"corrupt audio file: {in_path} ({exc})") from None
    yield to16.flush()


def denoise_file(in_path: str | Path, out_path: str | Path, denoiser: str = "dns48", keep_rate: bool = False,
                 options: dict | None = None, progress: bool | None = None, threads: int | None = None,
                 live: bool = False) -> dict:
    """Denoise the audio file `in_path` (any rate, channels and format soundfile reads) into
    `out_path` (format from its extension), mono, at 16 kHz or, with `keep_rate`, at the
    input's rate. `denoiser` is any spec `create_denoiser` takes and `options` its options
    (dry, denoise_hop, denoise_exact, denoise_int8, atten_lim_db). `threads` sets torch's
    intra-op threads. `live` gives the live chain's output (no whole-file pass). Returns a summary: audio seconds, wall and CPU seconds, RTF (wall time
    over audio time), rates, the denoiser, the output path."""
    from asr_stream.denoisers import create_denoiser
    from asr_stream.io.sources import FileSource

    options = {k: v for k, v in (options or {}).items() if v is not None}
    _check_options(options)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        from asr_stream.runtime.threads import configure_threads

        configure_threads(threads)
    in_path, out_path = Path(in_path), Path(out_path)
    source = FileSource(in_path)  # checks the file: exists, is audio, readable, not empty
    rate, frames = source.sample_rate, sf.info(str(in_path)).frames
    fmt, subtype = _check_output(out_path)
    out_rate = rate if keep_rate else SAMPLE_RATE

    tmp = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    try:
        out = sf.SoundFile(str(tmp), "w", samplerate=out_rate, channels=1, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        why = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cannot write {out_path} as {fmt}/{subtype} at {out_rate} Hz ({why.strip()})") from None
    bar = None
    try:
        with out:
            t_load = time.monotonic()
            stage = create_denoiser(denoiser, **options)
            stage.reset()
            t0, c0 = time.monotonic(), time.process_time()  # RTF counts the processing, not the loading
            load_seconds = t0 - t_load
            whole_file = not live and getattr(stage, "normalizes", False) and hasattr(stage, "fix_scale")
            if whole_file:  # first pass: the std the offline pass divides by
                spread = _RunningStd()
                for x16 in _mono_16k_blocks(in_path, rate):
                    spread.update(x16)
                stage.fix_scale(spread.std)
                stage.reset()
            hop = stage.hop_size
            back = StreamingResampler(SAMPLE_RATE, rate) if keep_rate else None
            writer = _CappedWriter(out)
            read = fed = denoised = 0  # input frames read, 16 kHz samples fed to and taken from the stage

            def feed(x16: np.ndarray) -> None:
                """`x16` through the stage hop by hop, writing what comes out. Only the stream's
                last hop may be shorter: it goes in as it is, as the live chain's framer hands it
                over. Padding it with silence would make the stream longer than the file, and
                Demucs's last few milliseconds would then differ from the offline pass."""
                nonlocal fed
                for i in range(0, len(x16), hop):
                    chunk = x16[i : i + hop]
                    fed += len(chunk)
                    emit(stage.process(chunk))

            def emit(y16: np.ndarray) -> None:
                nonlocal denoised
                y16 = y16[: fed - denoised]  # aligned output: never past the real input
                denoised += len(y16)
                writer.write(back.process(y16) if back is not None else y16)

            bar = _progress(progress, frames / rate)
            task = None
            if bar is not None:
                bar.start()
                task = bar.add_task(f"denoising {in_path.name}", total=frames)
            def on_block(frames_read: int) -> None:
                nonlocal read
                read += frames_read
                if task is not None:
                    bar.advance(task, frames_read)

            pending = np.zeros(0, np.float32)
            for x16 in _mono_16k_blocks(in_path, rate, on_block):
                pending = np.concatenate([pending, x16])
                n = len(pending) // hop * hop
                feed(pending[:n])
                pending = pending[n:]
            feed(pending)
            emit(stage.flush())
            if back is not None:
                writer.write(back.flush())
            writer.finish(read if keep_rate else fed)
        os.replace(tmp, out_path)
    finally:
        if bar is not None:
            bar.stop()
        tmp.unlink(missing_ok=True)

    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    seconds = read / rate
    return {
        "input": str(in_path),
        "output": str(out_path),
        "denoiser": getattr(stage, "name", denoiser),
        "whole_file_scale": bool(whole_file),
        "audio_seconds": round(seconds, 3),
        "input_rate": rate,
        "input_channels": source.channels,
        "output_rate": out_rate,
        "output_frames": writer.written,
        "load_seconds": round(load_seconds, 3),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "rtf": round(wall / seconds, 4) if seconds else None,
    }


def format_summary(s: dict) -> str:
    rtf = "n/a" if s.get("rtf") is None else f"{s['rtf']:.3f}"
    return (f"denoised {s['audio_seconds']:.1f} s of audio with {s['denoiser']} in {s['wall_seconds']:.1f} s "
            f"(RTF {rtf}, CPU {s['cpu_seconds']:.1f} s) -> {s['output']} ({s['output_rate']} Hz mono)")
