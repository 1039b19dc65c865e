import threading

import numpy as np

from asr_stream.io.ring_buffer import RingBuffer


def test_wraps_around_and_keeps_order():
    ring = RingBuffer(10)
    data = np.arange(35, dtype=np.float32)
    out = []
    for i in range(0, 35, 7):
        assert ring.write(data[i : i + 7]) == 0
        got, _ = ring.read(7)
        out.append(got)
    assert np.array_equal(np.concatenate(out), data)


def test_overflow_is_counted_not_raised():
    ring = RingBuffer(8)
    assert ring.write(np.ones(5, np.float32)) == 0
    assert ring.write(np.ones(5, np.float32)) == 2
    assert ring.dropped == 2
    got, _ = ring.read(100)
    assert len(got) == 8


def test_close_delivers_rest_then_empty():
    ring = RingBuffer(8)
    ring.write(np.arange(3, dtype=np.float32))
    ring.close()
    got, _ = ring.read(10)
    assert list(got) == [0, 1, 2]
    got, _ = ring.read(10, timeout=0.01)
    assert len(got) == 0 and ring.closed


def test_blocking_write_waits_for_reader_and_loses_nothing():
    ring = RingBuffer(16)
    data = np.arange(1000, dtype=np.float32)

    def produce():
        for i in range(0, 1000, 10):
            ring.write_blocking(data[i : i + 10])
        ring.close()

    t = threading.Thread(target=produce)
    t.start()
    out = []
    while True:
        got, _ = ring.read(7, timeout=0.5)
        if len(got) == 0 and ring.closed and len(ring) == 0:
            break
        out.append(got)
    t.join()
    assert np.array_equal(np.concatenate(out), data)
    assert ring.dropped == 0


def test_arrival_time_is_that_of_the_write_holding_the_last_sample():
    ring = RingBuffer(100)
    ring.write(np.zeros(10, np.float32))
    t_first = ring._arrivals[-1][1]
    ring.write(np.zeros(10, np.float32))
    t_second = ring._arrivals[-1][1]
    _, arrival = ring.read(5)
    assert arrival == t_first
    _, arrival = ring.read(10)
    assert arrival == t_second
