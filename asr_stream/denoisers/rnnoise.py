"""RNNoise (Valin 2018): a tiny GRU that predicts per-band gains, through the C library that
ships inside the `pyrnnoise` wheel.

Only the wheel's shared library is used, loaded here with ctypes: the package's Python side
imports a media stack (audiolab, av) the chain does not need, so it is installed `--no-deps`.
RNNoise takes 10 ms frames at 48 kHz in 16-bit sample units.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

import numpy as np

from asr_stream.denoisers.frames48k import Frames48kDenoiser
from asr_stream.errors import UserError

RNNOISE_DELAY_48K = 960  # the runtime's output lags its input by two frames (measured)
PCM_SCALE = 32768.0

_lib = None
_lib_lock = threading.Lock()


def library_path() -> Path:
    spec = importlib.util.find_spec("pyrnnoise")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise UserError("RNNoise needs the 'pyrnnoise' package (pip install --no-deps pyrnnoise)")
    path = Path(list(spec.submodule_search_locations)[0]) / "librnnoise.so"
    if not path.is_file():
        raise UserError(f"the 'pyrnnoise' package has no RNNoise library for this system: {path}")
    return path


def _library():
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(str(library_path()))
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.restype = None
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                                  ctypes.POINTER(ctypes.c_float)]
            lib.rnnoise_process_frame.restype = ctypes.c_float
            _lib = lib
        return _lib


class RNNoiseDenoiser(Frames48kDenoiser):
    name = "rnnoise"

    def __init__(self):
        self._lib = _library()
        self._state = None
        super().__init__(int(self._lib.rnnoise_get_frame_size()), RNNOISE_DELAY_48K)
        self._buf = np.zeros(self.frame_48k, np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self.voice_prob = 0.0  # the runtime's voice-activity estimate for the last frame
        self.reset()

    def _new_state(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
        self._state = self._lib.rnnoise_create(None)
        if not self._state:
            raise UserError("RNNoise could not create its state")

    def _denoise_frame(self, frame: np.ndarray) -> np.ndarray:
        np.multiply(frame, PCM_SCALE, out=self._buf)
        self.voice_prob = float(self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr))
        return self._buf / PCM_SCALE

    def __del__(self):
        if getattr(self, "_state", None) and getattr(self, "_lib", None):
            self._lib.rnnoise_destroy(self._state)
            self._state = None
