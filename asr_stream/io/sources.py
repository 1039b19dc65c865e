"""Audio sources: files and raw PCM on stdin, read in blocks into the ring buffer.

A file is never loaded whole, so a multi-hour recording runs in bounded memory. With
`pace="realtime"` blocks arrive at wall-clock rate, as from a live stream (and, like a live
stream, samples are dropped and counted if the chain falls behind); with `pace="fast"` the
reader waits for room, so nothing is dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf

from asr_stream.errors import UserError
from asr_stream.io.ring_buffer import RingBuffer

BLOCK_SECONDS = 0.02


class Source(Protocol):
    """Something that writes mono float32 audio at `sample_rate` into a ring buffer."""

    sample_rate: int
    description: str

    def start(self, ring: RingBuffer) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    @property
    def error(self) -> BaseException | None: ...

    @property
    def dropped(self) -> int: ...


class _ThreadedSource:
    """Shared thread plumbing: `_produce` runs in a worker thread and writes blocks."""

    sample_rate: int
    description: str

    def __init__(self, pace: str):
        if pace not in ("realtime", "fast"):
            raise UserError(f"unknown pace '{pace}' (use realtime or fast)")
        self.pace = pace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._dropped = 0

    def start(self, ring: RingBuffer) -> None:
        self._thread = threading.Thread(target=self._run, args=(ring,), name="source", daemon=True)
        self._thread.start()

    def _run(self, ring: RingBuffer) -> None:
        t0 = time.monotonic()
        sent = 0
        try:
            for block in self._blocks():
                if self._stop.is_set():
                    break
                if self.pace == "realtime":
                    due = t0 + sent / self.sample_rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    self._dropped += ring.write(block)
                else:
                    ring.write_blocking(block, self._stop)
                sent += len(block)
        except BaseException as exc:  # reported by the scheduler, never swallowed
            self._error = exc
        finally:
            ring.close()

    def _blocks(self):
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def dropped(self) -> int:
        return self._dropped


def _to_mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32)


class FileSource(_ThreadedSource):
    """Any file soundfile (libsndfile) reads: wav, flac, ogg, mp3, any rate, any channels."""

    def __init__(self, path: str | Path, pace: str = "fast"):
        super().__init__(pace)
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"audio file not found: {self.path}")
        if self.path.is_dir():
            raise UserError(f"audio path is a directory, not a file: {self.path}")
        try:
            info = sf.info(str(self.path))
        except PermissionError:
            raise UserError(f"cannot read audio file (permission denied): {self.path}") from None
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise UserError(f"unsupported or corrupt audio file: {self.path} ({exc})") from None
        if info.frames <= 0 or info.samplerate <= 0:
            raise UserError(f"audio file contains no audio: {self.path}")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:
            raise UserError(f"cannot read audio file: {self.path} ({exc.strerror})") from None
        self.sample_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.duration = info.frames / info.samplerate
        self.description = f"{self.path.name} ({self.sample_rate} Hz, {self.channels} ch, {self.duration:.1f} s)"

    def _blocks(self):
        blocksize = max(1, int(self.sample_rate * BLOCK_SECONDS))
        try:
            with sf.SoundFile(str(self.path)) as f:
                for block in f.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                    yield _to_mono(block)
        except sf.LibsndfileError as exc:
            raise UserError(f"corrupt audio file: {self.path} ({exc})") from None


RAW_FORMATS = {"s16le": ("<i2", 1 / 32768.0), "f32le": ("<f4", 1.0)}


class RawStdinSource(_ThreadedSource):
    """Headerless PCM on standard input (`--audio_path -`), e.g. from ffmpeg or arecord."""

    def __init__(self, rate: int, fmt: str = "s16le", channels: int = 1, pace: str = "fast",
                 stream: BinaryIO | None = None):
        super().__init__(pace)
        if fmt not in RAW_FORMATS:
            raise UserError(f"unknown raw format '{fmt}' (use {' or '.join(RAW_FORMATS)})")
        if rate <= 0:
            raise UserError(f"--raw-rate must be positive, got {rate}")
        if channels <= 0:
            raise UserError(f"--raw-channels must be positive, got {channels}")
        self.sample_rate = rate
        self.channels = channels
        self.dtype, self.scale = RAW_FORMATS[fmt]
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.description = f"stdin ({fmt}, {rate} Hz, {channels} ch)"

    def _blocks(self):
        frame_bytes = np.dtype(self.dtype).itemsize * self.channels
        want = max(1, int(self.sample_rate * BLOCK_SECONDS)) * frame_bytes
        leftover = b""
        frames = 0
        while True:
            data = self.stream.read(want)
            if not data:
                if frames == 0:
                    raise UserError("no audio on stdin (the stream ended before one whole sample frame)")
                break
            data = leftover + data
            usable = len(data) - len(data) % frame_bytes
            leftover = data[usable:]
            if usable:
                frames += usable // frame_bytes
                block = np.frombuffer(data[:usable], dtype=self.dtype).astype(np.float32) * self.scale
                yield _to_mono(block.reshape(-1, self.channels))
