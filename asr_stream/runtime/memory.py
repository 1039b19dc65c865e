"""Handing freed memory back to the system once a session is gone.

A session's native state (model copies, ONNX and torch buffers, audio rings) is allocated from
many threads; glibc keeps what such threads free in per-thread arenas, so a daemon's resident
memory climbs session after session although what it holds does not. `malloc_trim` returns the
free pages of every arena. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

_lock = threading.Lock()
_trim = None


def release_free_memory() -> bool:
    """Return free heap pages to the system; True where the C library could."""
    global _trim
    with _lock:
        if _trim is None:
            try:
                _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
                _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                _trim = False
        if not _trim:
            return False
        _trim(0)
        return True
