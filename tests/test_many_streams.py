"""Many sessions over one set of engines: the same words as alone, batched; failures, drops and
memory kept to each session."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import audioeval_clips, demo_clip, load_16k, needs_shared, normalize

from asr_stream.denoisers import load_denoiser_engine
from asr_stream.chain.engines import Engines, load_engines
from asr_stream.chain.many_streams import MultiStreamScheduler
from asr_stream.chain.pipeline import Settings
from asr_stream.chain.one_stream import ChainClock
from asr_stream.stages import Hypothesis, Word
from asr_stream.output.stats import LatencyTracker

SR = 16000


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Continuous real speech: clips joined end to end with no pause added."""
    clips = [load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]
    return clips


def _track(clips, start: int, seconds: float) -> np.ndarray:
    parts, k = [], start
    while sum(map(len, parts)) < seconds * SR:
        parts.append(clips[k % len(clips)])
        k += 1
    return np.concatenate(parts)[: int(seconds * SR)]


def _finals(session, timeout=300) -> str:
    words = []
    while (h := session.events.get(timeout=timeout)) is not None:
        if h.final:
            words.append(h.text)
    return " ".join(words)


def _run(engines, tracks, workers) -> tuple[list[str], list]:
    scheduler = MultiStreamScheduler(engines, workers=workers, max_backlog_s=600)
    try:
        sessions = [scheduler.open_stream() for _ in tracks]
        for s, t in zip(sessions, tracks):  # all audio pending at once: every session has work at the same time
            s.accept_waveform(t)
        for s in sessions:
            s.finish()
        texts = [_finals(s) for s in sessions]
        return texts, sessions
    finally:
        scheduler.close()


def _batcher(engines):
    return getattr(engines.recognizer, "batcher", None) or engines.recognizer.decoder.batcher


def _sessions_batched_equal_alone(engines, tracks):
    alone = [_run(engines, [t], workers=1)[0][0] for t in tracks]
    batcher = _batcher(engines)
    calls, requests = batcher.stats.calls, batcher.stats.requests
    together, sessions = _run(engines, tracks, workers=4)
    assert all(s.error is None for s in sessions)
    assert together == alone
    assert len(normalize(alone[0]).split()) > 40  # real words, not an empty stream
    batched = batcher.stats.requests - requests - (batcher.stats.calls - calls)
    assert batched > 0, "no model call served more than one session"


def test_whisper_sessions_batched_together_give_the_words_each_gives_alone(speech):
    engines = load_engines(Settings(denoiser="none", asr="whisper", pace="fast"))
    # Whisper's decodes batch only when they happen to queue behind one another with the same
    # window, which depends on thread timing; a short linger makes the batched path certain here
    _batcher(engines).linger_s = 0.05
    try:
        _sessions_batched_equal_alone(engines, [_track(speech, 0, 24), _track(speech, 0, 24), _track(speech, 2, 24)])
    finally:
        _batcher(engines).linger_s = 0.0


@needs_shared
def test_nemo_sessions_batched_together_give_the_words_each_gives_alone():
    """The project's AN4 model on AN4 test speech (its own domain: float32 batching moves log-probs
    by about 1e-6, which flips no word where the model is sure of itself)."""
    from asr_stream.evaluation.manifest import dataset

    clips = [load_16k(u.audio) for u in dataset("an4")[:60]]
    engines = load_engines(Settings(denoiser="none", asr="nemo", pace="fast"))
    _sessions_batched_equal_alone(engines, [_track(clips, 0, 40), _track(clips, 0, 40), _track(clips, 20, 40)])


def test_nemo_batched_steps_equal_lone_steps(speech):
    """Two streams stepped in lockstep as one batch, against each alone: the same CTC log-probs
    (to float32 rounding) at every step, caches carried separately."""
    engine = load_engines(Settings(denoiser="none", asr="nemo", pace="fast")).recognizer
    tracks = [_track(speech, 0, 12), _track(speech, 1, 12)]

    def steps_of(streams, batched):
        requests_seen = []
        run = engine.batcher.run_batch

        def spy(requests):
            requests_seen.append(len(requests))
            return run(requests)

        engine.batcher.run_batch = spy
        linger, cap = engine.batcher.linger_s, engine.batcher.max_batch
        if batched:  # hold each step until the other stream's same step arrives
            engine.batcher.linger_s, engine.batcher.max_batch = 5.0, 2
        try:
            if batched:  # both streams' chunks as one call, by hand: same keys at every step
                import threading

                barrier = threading.Barrier(len(streams))

                def go(k):
                    r = streams[k]
                    for i in range(0, len(tracks[k]), 1280):
                        r.accept_waveform(tracks[k][i:i + 1280])
                        barrier.wait(10)
                        r.decode()
                    r.finish()
                threads = [threading.Thread(target=go, args=(k,)) for k in range(len(streams))]
                [t.start() for t in threads]
                [t.join(120) for t in threads]
            else:
                for k, r in enumerate(streams):
                    for i in range(0, len(tracks[k]), 1280):
                        r.accept_waveform(tracks[k][i:i + 1280])
                        r.decode()
                    r.finish()
        finally:
            engine.batcher.run_batch = run
            engine.batcher.linger_s, engine.batcher.max_batch = linger, cap
        return [r.log_probs for r in streams], requests_seen

    # without restarts at pauses, both streams step on the same schedule, so every step pairs up
    def fresh():
        return [engine.create_stream(keep_log_probs=True, restart_at_endpoints=False) for _ in tracks]

    alone, _ = steps_of(fresh(), batched=False)
    together, sizes = steps_of(fresh(), batched=True)
    assert max(sizes) == 2
    for a, b in zip(alone, together):
        assert len(a) == len(b) > 15
        assert max(float((x - y).abs().max()) for x, y in zip(a, b)) < 1e-3


def test_whisper_batched_decodes_equal_lone_decodes(speech):
    """The decoder's batch path, forced: buffers of one window length from different speech."""
    decoder = load_engines(Settings(denoiser="none", pace="fast")).recognizer.decoder
    audio = [_track(speech, k, 30)[SR * k: SR * k + int(SR * 3.2)] for k in range(3)]
    prefix = [Word("the", 0.0, 0.2)]
    requests = [decoder._prepare(a, 5.0, [], p, None) for a in audio for p in ([], prefix)]
    groups = {}
    for r in requests:
        groups.setdefault((r.features.shape[-1], r.suppress_blank, r.max_length, r.sot_index), []).append(r)
    assert any(len(g) > 1 for g in groups.values())
    for group in groups.values():
        together = decoder._decode_batch(group)
        for r, t in zip(group, together):
            alone = decoder._decode_batch([r])[0]
            assert [w.text for w in t.words] == [w.text for w in alone.words]
            assert np.allclose([w.start for w in t.words], [w.start for w in alone.words], atol=0.021)


def test_a_failing_session_fails_alone(speech):
    engines = load_engines(Settings(denoiser="none", asr="nemo", pace="fast"))
    broken = Engines(load_denoiser_engine("failing_stages:broken_denoiser"), engines.recognizer, gate=False)
    scheduler = MultiStreamScheduler(engines, workers=2, max_backlog_s=600)
    try:
        good, bad = scheduler.open_stream(), scheduler.open_stream(engines=broken)
        track = _track(speech, 0, 30)  # the broken denoiser fails 20 s in
        for s in (good, bad):
            s.accept_waveform(track)
            s.finish()
        text_good = _finals(good)
        _finals(bad)  # ends (with None) despite the failure
    finally:
        scheduler.close()
    assert bad.error is not None and "simulated denoiser failure" in str(bad.error)
    assert good.error is None and text_good == _run(engines, [track], workers=1)[0][0]
    assert scheduler.open_sessions == 0


def test_a_session_behind_drops_its_oldest_audio_and_counts_it(speech):
    engines = load_engines(Settings(denoiser="none", asr="nemo", pace="realtime"))
    scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=1.0)
    try:
        live = scheduler.open_stream()
        dropped = live.accept_waveform(_track(speech, 0, 3.0))  # 3 s at once into a 1 s backlog
        assert dropped == 2 * SR and live.dropped_samples == 2 * SR
        assert live.stats()["dropped_seconds"] == 2.0
        fed = scheduler.open_stream()  # a file fed as fast as it goes waits for room instead
        assert fed.accept_waveform(_track(speech, 0, 5.0), block=True) == 0
        for s in (live, fed):
            s.finish()
            _finals(s)
    finally:
        scheduler.close()
    assert fed.dropped_samples == 0 and fed.processed_samples == 5 * SR
    assert live.processed_samples == 1 * SR


def test_a_session_of_an_hour_keeps_bounded_bookkeeping():
    """An hour of 10 ms hops and of five-second utterances through the clock and the latency tracker."""
    clock, tracker = ChainClock(keep_s=120), LatencyTracker()
    sizes, longest = [], 0
    for second in range(3600):
        for k in range(100):
            end = (second * 100 + k + 1) * 160
            clock.mark(end, 1000.0 + end / SR)
        longest = max(longest, len(clock))
        if second % 5 == 4:
            utt = second // 5
            words = tuple(Word(f"w{i}", second - 4 + i * 0.4, second - 3.8 + i * 0.4) for i in range(10))
            tracker.observe(Hypothesis(utt, words, 5, False, emitted_at=1000.0 + second + 0.5), clock.arrival_of)
            tracker.observe(Hypothesis(utt, words, 10, True, emitted_at=1000.0 + second + 1.0), clock.arrival_of)
        if second in (600, 3599):
            sizes.append(tracker.state_size())
    assert sizes[0] == sizes[1]  # the same after ten minutes as after an hour
    assert longest <= 2 * 120 * 100 + 100  # two windows of hops at most, however long the session
    assert tracker.final.n == 720 * 10
    assert 0.5 < tracker.final.percentile(50) < 5.0
    assert clock.arrival_of(1.0) is None  # forgotten, not mis-timed
    assert clock.arrival_of(3599.5) == pytest.approx(1000.0 + 3599.5, abs=0.02)


def test_a_long_real_session_holds_constant_state(speech):
    """Six minutes of continuous speech (one minute, six times) through one real session: what it
    holds in the last two minutes stays near what it held in the first two (state that grew with
    the session would be three times as large by then)."""
    engines = load_engines(Settings(denoiser="none", asr="nemo", pace="fast"))
    scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=30)
    samples: list[tuple[int, dict]] = []
    try:
        s = scheduler.open_stream(on_hypothesis=lambda session, h: samples.append(
            (session.processed_samples, session.state_size())))
        track = _track(speech, 0, 60)
        for _ in range(6):
            for i in range(0, len(track), SR):  # a second at a time, as a live source sends it
                s.accept_waveform(track[i:i + SR], block=True)
        s.finish()
        s.closed.wait(120)
    finally:
        scheduler.close()
    assert s.error is None and s.processed_samples == 6 * 60 * SR
    first = [z for n, z in samples if n <= 2 * 60 * SR]
    last = [z for n, z in samples if n > 4 * 60 * SR]
    assert len(first) > 20 and len(last) > 20
    for key in first[0]:
        assert max(z[key] for z in last) <= 2 * max(z[key] for z in first) + 8, key


def test_an_unbounded_clock_times_every_word_of_a_long_input():
    clock = ChainClock(keep_s=None)
    for k in range(20 * 60 * 100):  # 20 minutes of 10 ms hops
        clock.mark((k + 1) * 160, float(k))
    assert clock.arrival_of(0.001) == 0.0 and len(clock) == 20 * 60 * 100


@pytest.mark.parametrize("denoiser", ["none", "gtcrn"])
def test_audio_in_pieces_that_are_not_whole_hops_is_heard_once(denoiser):
    """Wyoming clients send 1024-sample chunks, WebSockets 320: a turn's audio is rarely a whole
    number of the denoiser's hops. The part-hop left over is carried to the next turn and must
    not also be denoised now (it was: the recogniser heard 6 % more audio than was sent, and the
    words changed with the chunk size)."""
    engines = load_engines(Settings(denoiser=denoiser, gate=False, pace="fast"))
    audio = load_16k(demo_clip()[0])
    results = {}
    for piece in (1024, 1600, 777):
        scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=600)
        try:
            session = scheduler.open_stream(live=False)
            for i in range(0, len(audio), piece):
                session.accept_waveform(audio[i : i + piece], block=True)
            session.finish()
            words = []
            while (h := session.events.get(timeout=120)) is not None:
                if h.final:
                    words.append(h.text)
            summary = session.summary(live=False)
        finally:
            scheduler.close()
        assert summary["recognized_seconds"] == pytest.approx(len(audio) / 16000, abs=0.02), (piece, summary)
        results[piece] = " ".join(words)
    assert results[1024] == results[1600] == results[777], results


def test_a_session_turned_per_20_ms_gives_the_words_of_one_fed_at_once():
    """Live audio is turned a piece at a time (`wait_turned`, as `session_cost` measures it); the
    cache-aware recogniser then makes its features once per encoder step instead of per piece,
    and the words must be those of the same audio handed over at once."""
    from asr_stream.evaluation.manifest import dataset

    clips = [load_16k(u.audio) for u in dataset("an4")[:12]]
    audio = _track(clips, 0, 20)
    engines = load_engines(Settings(denoiser="none", asr="nemo", pace="fast"))
    texts = []
    for piece in (320, len(audio)):
        scheduler = MultiStreamScheduler(engines, workers=1, max_backlog_s=600)
        try:
            session = scheduler.open_stream(live=False)
            for i in range(0, len(audio), piece):
                session.accept_waveform(audio[i : i + piece], block=True)
                assert session.wait_turned(60)
                assert session.processed_samples == min(i + piece, len(audio))  # nothing left waiting
            session.finish()
            texts.append(_finals(session))
        finally:
            scheduler.close()
    assert texts[0] and texts[0] == texts[1], texts
