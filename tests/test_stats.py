"""Latency is measured from when a word's end entered the chain to when it showed / was committed."""

from asr_stream.stages import Hypothesis, Word
from asr_stream.output.stats import LatencyTracker


def test_latency_follows_words_across_hypotheses():
    arrival_of = lambda t: 100.0 + t  # noqa: E731  (audio second t entered the chain at 100 + t)
    tr = LatencyTracker()
    a, b, b2 = Word("a", 0.0, 1.0), Word("bee", 1.0, 2.0), Word("be", 1.0, 2.0)
    tr.observe(Hypothesis(0, (a,), 0, False, emitted_at=101.3), arrival_of)  # a shown 0.3 s after its end
    tr.observe(Hypothesis(0, (a, b2), 1, False, emitted_at=102.2), arrival_of)  # a committed 1.0 s after
    tr.observe(Hypothesis(0, (a, b), 1, False, emitted_at=102.6), arrival_of)  # b's text changed: shown anew
    tr.observe(Hypothesis(0, (a, b), 2, True, emitted_at=103.0), arrival_of)  # final
    assert [round(x, 3) for x in tr.partial.recent] == [0.3, 0.6]
    assert [round(x, 3) for x in tr.final.recent] == [1.2, 1.0]
