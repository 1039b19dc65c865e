import numpy as np

from asr_stream.io.framer import Framer
from asr_stream.io.ring_buffer import RingBuffer


def _drain(framer):
    hops = []
    while not framer.finished:
        hops += framer.hops(timeout=0.01)
    return hops


def test_fixed_hops_cover_the_stream_exactly():
    ring = RingBuffer(100_000)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 + 77).astype(np.float32)
    ring.write(x)
    ring.close()
    hops = _drain(Framer(ring, 16000, 256))
    assert all(len(h.samples) == 256 for h in hops[:-1])
    assert [h.start for h in hops] == list(range(0, len(x), 256))
    assert np.array_equal(np.concatenate([h.samples for h in hops]), x)


def test_resamples_to_16k_and_replaces_nan_inf():
    ring = RingBuffer(200_000)
    x = np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000).astype(np.float32) * 0.5
    x[100] = np.nan
    x[200] = np.inf
    x[300] = -np.inf
    ring.write(x)
    ring.close()
    framer = Framer(ring, 48000, 160)
    hops = _drain(framer)
    y = np.concatenate([h.samples for h in hops])
    assert len(y) == 16000
    assert np.isfinite(y).all()
    assert framer.sanitized == 3
