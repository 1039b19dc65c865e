"""Concurrent calls into one engine coalesce into one model call, each caller getting its own result."""

import threading
import time

import pytest

from asr_stream.runtime.batching import Batcher


def _slow_sum(calls):
    def run(requests):
        calls.append(list(requests))
        time.sleep(0.05)  # the model call: long enough for the other callers to queue behind it
        return [r * 10 for r in requests]
    return run


def _call_all(batcher, items, key=lambda r: 0):
    results, errors = {}, {}

    def one(r):
        try:
            results[r] = batcher.call(key(r), r)
        except Exception as exc:  # noqa: BLE001 - the test looks at what each caller saw
            errors[r] = exc

    threads = [threading.Thread(target=one, args=(r,)) for r in items]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join(10)
    return results, errors


def test_waiting_calls_run_as_one_batch_and_each_gets_its_result():
    calls = []
    b = Batcher(_slow_sum(calls))
    results, errors = _call_all(b, list(range(6)))
    assert not errors and results == {r: r * 10 for r in range(6)}
    assert len(calls) < 6 and max(len(c) for c in calls) > 1  # the first ran alone, the rest queued and batched
    assert sorted(r for c in calls for r in c) == list(range(6))
    assert b.stats.requests == 6 and b.stats.calls == len(calls)


def test_only_requests_with_the_same_key_share_a_batch():
    calls = []
    b = Batcher(_slow_sum(calls))
    _call_all(b, list(range(8)), key=lambda r: r % 2)
    assert all(len({r % 2 for r in c}) == 1 for c in calls)


def test_batches_are_capped_and_can_be_switched_off():
    calls = []
    _call_all(Batcher(_slow_sum(calls), max_batch=2), list(range(6)))
    assert max(len(c) for c in calls) <= 2
    calls.clear()
    _call_all(Batcher(_slow_sum(calls), enabled=False), list(range(4)))
    assert [len(c) for c in calls] == [1, 1, 1, 1]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    def run(requests):
        time.sleep(0.03)
        if 3 in requests:
            raise RuntimeError("model failed")
        return requests

    b = Batcher(run)
    results, errors = _call_all(b, [1, 2, 3, 4], key=lambda r: r == 3)
    assert set(errors) == {3} and isinstance(errors[3], RuntimeError)
    assert results == {1: 1, 2: 2, 4: 4}
    assert b.call(0, 5) == 5  # not stuck


def test_a_lone_caller_runs_at_once_without_waiting_for_company():
    b = Batcher(lambda rs: rs)
    for i in range(200):
        assert b.call(0, i) == i
    assert b.stats.calls == 200 and b.stats.largest == 1


@pytest.mark.parametrize("n", [16])
def test_many_threads_never_lose_a_request(n):
    b = Batcher(lambda rs: [r + 1 for r in rs], max_batch=4)
    results, errors = _call_all(b, list(range(n)))
    assert not errors and results == {r: r + 1 for r in range(n)}


def test_lingering_waits_for_every_recent_caller_but_a_lone_one_never_waits():
    lone = Batcher(lambda rs: rs, linger_s=600.0)
    t = threading.Thread(target=lone.call, args=(0, 0))
    t.start()
    t.join(10)
    assert not t.is_alive()  # one caller: no company to wait for, so no ten-minute wait
    calls = []
    b = Batcher(lambda rs: calls.append(list(rs)) or rs, max_batch=8, linger_s=5.0)
    barrier = threading.Barrier(3)
    results = {}

    def caller(k):
        for i in range(3):
            barrier.wait(10)  # each round, the three callers arrive at about the same time
            results[(k, i)] = b.call(0, (k, i))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert results == {(k, i): (k, i) for k in range(3) for i in range(3)}
    assert [len(c) for c in calls[-2:]] == [3, 3]  # once all three were recent callers, each round was one batch


def test_up_to_concurrency_batches_run_at_once():
    active, peak, lock = [0], [0], threading.Lock()

    def run(requests):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.03)
        with lock:
            active[0] -= 1
        return requests

    b = Batcher(run, max_batch=1, concurrency=2)
    results, errors = _call_all(b, list(range(8)))
    assert not errors and len(results) == 8
    assert peak[0] == 2
