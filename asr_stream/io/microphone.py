"""Live capture through PortAudio, with sounddevice (default) or PyAudio.

The capture callback only copies into the ring buffer; everything else happens in the
chain's workers. Overflows (ring full, or PortAudio's own input overflow) are counted.
"""

from __future__ import annotations

import threading

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.io.ring_buffer import RingBuffer

BACKENDS = ("sounddevice", "pyaudio")


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # PortAudio library missing
        raise UserError(f"PortAudio is not available ({exc}); install libportaudio2") from None
    return sounddevice


def list_input_devices() -> list[dict]:
    """Input-capable devices as dicts with index, name, channels, default_samplerate."""
    sd = _import_sounddevice()
    out = []
    for i, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            out.append({"index": i, "name": dev["name"], "channels": dev["max_input_channels"],
                        "default_samplerate": dev["default_samplerate"]})
    return out


def _resolve_device(device: str | int | None) -> tuple[int, dict]:
    sd = _import_sounddevice()
    if device is None or device == "":
        try:
            info = sd.query_devices(kind="input")
        except sd.PortAudioError:
            raise UserError("no microphone: PortAudio reports no default input device "
                            "(see --list-devices)") from None
        return int(info["index"]), info
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device)
    try:
        info = sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as exc:
        raise UserError(f"unknown input device {device!r}: {exc} (see --list-devices)") from None
    if info["max_input_channels"] <= 0:
        raise UserError(f"device {device!r} has no input channels (see --list-devices)")
    return int(info["index"]), info


def _pick_rate(index: int, info: dict) -> int:
    """16 kHz when the device takes it (no resampling), else its own default rate."""
    sd = _import_sounddevice()
    try:
        sd.check_input_settings(device=index, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
        return SAMPLE_RATE
    except Exception:
        return int(info["default_samplerate"])


class MicrophoneSource:
    """Captures one channel from an input device into the ring buffer."""

    def __init__(self, device: str | int | None = None, backend: str = "sounddevice",
                 block_seconds: float = 0.02):
        if backend not in BACKENDS:
            raise UserError(f"unknown audio backend '{backend}' (use {' or '.join(BACKENDS)})")
        self.backend = backend
        self.index, info = _resolve_device(device)
        self.sample_rate = _pick_rate(self.index, info)
        self.blocksize = max(1, int(self.sample_rate * block_seconds))
        self.description = f"microphone '{info['name']}' ({self.sample_rate} Hz, {backend})"
        self._ring: RingBuffer | None = None
        self._stream = None
        self._pa = None
        self._overflows = 0
        self._dropped = 0
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self.first_block = threading.Event()  # set when the first captured block arrives

    # -- capture callbacks: copy only -------------------------------------------------
    def _on_sounddevice(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self._overflows += 1
        self._dropped += self._ring.write(indata[:, 0])
        self.first_block.set()

    def _on_pyaudio(self, in_data, frame_count, time_info, status):
        import pyaudio

        if status & pyaudio.paInputOverflow:
            self._overflows += 1
        self._dropped += self._ring.write(np.frombuffer(in_data, dtype=np.float32))
        self.first_block.set()
        return (None, pyaudio.paContinue)

    # -- lifecycle --------------------------------------------------------------------
    def start(self, ring: RingBuffer) -> None:
        self._ring = ring
        try:
            if self.backend == "sounddevice":
                sd = _import_sounddevice()
                self._stream = sd.InputStream(device=self.index, channels=1, dtype="float32",
                                              samplerate=self.sample_rate, blocksize=self.blocksize,
                                              callback=self._on_sounddevice)
                self._stream.start()
            else:
                import pyaudio

                self._pa = pyaudio.PyAudio()
                self._stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=self.sample_rate,
                                             input=True, input_device_index=self.index,
                                             frames_per_buffer=self.blocksize,
                                             stream_callback=self._on_pyaudio)
                self._stream.start_stream()
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"cannot open input device {self.index}: {exc}") from None

    def stop(self) -> None:
        """Stop capturing; the chain then drains what was captured and ends."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            if self._stream is not None:
                if self.backend == "sounddevice":
                    self._stream.stop()
                    self._stream.close()
                else:
                    self._stream.stop_stream()
                    self._stream.close()
                    self._pa.terminate()
        except Exception as exc:
            self._error = exc
        finally:
            if self._ring is not None:
                self._ring.close()

    def join(self, timeout: float | None = None) -> None:
        self._stopped.wait(timeout)

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def overflows(self) -> int:
        return self._overflows
