"""Thread counts, set once for the whole process.

Every native runtime here (torch, CTranslate2, ONNX Runtime, numpy's OpenBLAS) keeps its own
pool; two big pools on the same cores fight and both slow down. So torch's and OpenBLAS's pools
are sized once, before any model runs, and every engine is given the same per-call thread count;
parallelism across streams comes from the scheduler's workers, not from wider pools. (OpenBLAS
sizes its pool to the cores, and its helper threads spin after each call: Whisper's feature
extraction is a numpy matrix product, so left alone they burn a core's fraction per stream.)
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_configured: int | None = None


def configure_threads(threads: int) -> int:
    """Size torch's intra-op pool and numpy's BLAS pool to `threads` (torch's inter-op pool to 1)
    the first time it is called; later calls keep the first setting, which is returned."""
    global _configured
    with _lock:
        if _configured is None:
            import torch

            torch.set_num_threads(int(threads))
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already used: torch allows setting it only before any parallel work
                pass
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=int(threads), user_api="blas")  # the BLAS libraries loaded so far
            os.environ["OPENBLAS_NUM_THREADS"] = str(int(threads))  # those loaded later read it at load
            _configured = int(threads)
        return _configured


def engine_threads() -> int:
    """The per-call thread count engines use (1 until configured)."""
    return _configured or 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name at the OS level too (Linux; 15 characters), so
    `top -H`, /proc and profilers tell the scheduler's threads from the runtimes' own."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, (name or threading.current_thread().name).encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
