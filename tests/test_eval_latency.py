"""Latency measurement: a synthetic recogniser that shows and commits each word a known delay
after its audio, run through a real chain at real-time pace; the harness must measure those
delays."""

from __future__ import annotations

import numpy as np
import pytest

from asr_stream.evaluation.latency import RefWord, WordLatency, distribution
from asr_stream.stages import Hypothesis, Word
from conftest import demo_clip

REFS = [RefWord("alpha", 0.3, 0.8), RefWord("bravo", 1.2, 1.7), RefWord("charlie", 2.2, 2.9),
        RefWord("delta", 3.5, 4.1), RefWord("echo", 5.0, 5.6)]


class DelayedRecognizer:
    """Shows word i once audio up to end_i + partial_s has arrived, commits it at end_i + final_s."""

    name = "delayed"

    def __init__(self, refs, partial_s: float, final_s: float):
        self.refs, self.partial_s, self.final_s = refs, partial_s, final_s
        self.reset()

    def reset(self):
        self.samples, self.shown, self.committed = 0, 0, 0

    def accept_waveform(self, samples):
        self.samples += len(samples)

    def decode(self):
        t = self.samples / 16000
        shown = sum(r.end + self.partial_s <= t for r in self.refs)
        committed = min(shown, sum(r.end + self.final_s <= t for r in self.refs))
        if (shown, committed) == (self.shown, self.committed):
            return []
        self.shown, self.committed = shown, committed
        words = tuple(Word(r.text, r.start, r.end) for r in self.refs[:shown])
        return [Hypothesis(0, words, committed, False)]

    def finish(self):
        words = tuple(Word(r.text, r.start, r.end) for r in self.refs)
        return [Hypothesis(0, words, len(words), True)]


def test_known_delays_are_measured(tmp_path):
    import soundfile as sf

    from asr_stream.denoisers.passthrough import Passthrough
    from asr_stream.chain.pipeline import Settings, run
    from asr_stream.chain.one_stream import Chain
    from asr_stream.io.sources import FileSource

    wav = tmp_path / "tone.wav"
    t = np.arange(int(6.5 * 16000)) / 16000
    sf.write(wav, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    partial_s, final_s = 0.3, 0.7
    chain = Chain(FileSource(wav, pace="realtime"), Passthrough(), DelayedRecognizer(REFS, partial_s, final_s))
    words = WordLatency(REFS)
    run(Settings(pace="realtime"), chain=chain, handle_signals=False, on_hypothesis=words.observe)
    d = words.delays(chain.clock.arrival_of)
    assert d["missed"] == 0 and len(d["partial"]) == len(d["final"]) == len(REFS)
    # the chain adds its own small delay (blocks, hops, queues) on top of the recogniser's
    assert all(partial_s - 0.02 <= x <= partial_s + 0.2 for x in d["partial"]), d
    assert all(final_s - 0.02 <= x <= final_s + 0.2 for x in d["final"]), d


def test_words_match_by_text_and_time_and_unmatched_ones_are_missed():
    words = WordLatency(REFS)
    # "bravo" at the wrong time does not count; "Charlie," at the right time does
    words.observe(Hypothesis(0, (Word("bravo", 4.0, 4.3), Word("Charlie,", 2.3, 2.8)), 1, False, emitted_at=10.0))
    words.observe(Hypothesis(0, (Word("bravo", 4.0, 4.3), Word("Charlie,", 2.3, 2.8)), 2, True, emitted_at=11.0))
    d = words.delays(lambda t: t)  # audio arrived at wall time = clip time
    assert d["missed"] == 4
    assert d["partial"] == [pytest.approx(10.0 - 2.9)] and d["final"] == [pytest.approx(11.0 - 2.9)]


def test_distribution():
    assert distribution([]) == {"n": 0, "p50": None, "p95": None, "max": None}
    out = distribution([0.1, 0.2, 0.3, 0.4])
    assert out["n"] == 4 and out["p50"] == pytest.approx(0.25) and out["max"] == pytest.approx(0.4)


def test_reference_words_come_from_an_offline_pass_with_times():
    from asr_stream.io.audio_files import load_16k
    from asr_stream.evaluation.latency import reference_words

    wav, text = demo_clip()
    refs = reference_words(load_16k(wav))
    assert [w.text.strip(",.").lower() for w in refs[:3]] == ["printing", "in", "the"]
    assert all(a.end <= b.start + 0.05 for a, b in zip(refs, refs[1:]))
    assert 8.0 < refs[-1].end < 9.7
