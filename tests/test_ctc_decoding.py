"""Incremental greedy CTC and the open utterance: constructed log-probs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_stream.recognizers.ctc_decoding import CtcGreedyDecoder, CtcTranscript, Vocabulary

CHARS = list(" abc")  # ids 0..3; blank = 4
BLANK = len(CHARS)


def one_hot(labels: list[int], n: int = len(CHARS) + 1) -> torch.Tensor:
    """Log-probs whose argmax is `labels`, with random runner-up values."""
    rng = np.random.default_rng(len(labels))
    x = torch.from_numpy(rng.uniform(-9, -5, (len(labels), n)).astype(np.float32))
    x[torch.arange(len(labels)), torch.tensor(labels)] = -0.01
    return x


def greedy(labels: list[int]) -> list[int]:
    out, previous = [], BLANK
    for label in labels:
        if label not in (BLANK, previous):
            out.append(label)
        previous = label
    return out


# a, a (repeat: one token), blank, a (a second token), b, b, space, c
LABELS = [1, 1, BLANK, 1, 2, 2, 0, 3, BLANK, BLANK]


def test_greedy_decoder_collapses_repeats_and_keeps_blank_separated_ones():
    tokens = CtcGreedyDecoder(BLANK).step(one_hot(LABELS), first_frame=100)
    assert tokens == [(1, 100), (1, 103), (2, 104), (0, 106), (3, 107)]


@pytest.mark.parametrize("split", range(1, len(LABELS)))
def test_frames_split_anywhere_decode_as_one_piece(split):
    decoder = CtcGreedyDecoder(BLANK)
    log_probs = one_hot(LABELS)
    tokens = decoder.step(log_probs[:split], 0) + decoder.step(log_probs[split:], split)
    assert [t for t, _ in tokens] == greedy(LABELS)


def test_transcript_ends_an_utterance_after_a_run_of_blanks():
    transcript = CtcTranscript(Vocabulary(CHARS), frame_s=0.1, endpoint_s=0.3)
    hyps = transcript.add(one_hot([1, 2, BLANK, 0, 3]))
    assert [h.text for h in hyps] == ["ab c"] and not hyps[0].final and hyps[0].stable == 1
    hyps = transcript.add(one_hot([BLANK] * 3))
    assert len(hyps) == 1 and hyps[0].final and hyps[0].text == "ab c" and hyps[0].stable == 2
    first, second = hyps[0].words
    assert (first.start, first.end) == pytest.approx((0.0, 0.2)) and second.start == pytest.approx(0.4)
    hyps = transcript.add(one_hot([3, BLANK, BLANK, BLANK]))
    assert hyps[-1].final and hyps[-1].utterance == 1 and hyps[-1].text == "c"


def test_an_utterance_without_pauses_is_closed_at_a_word_boundary():
    transcript = CtcTranscript(Vocabulary(CHARS), frame_s=0.1, endpoint_s=10, max_utterance_s=2.0)
    finals = []
    for _ in range(30):  # "ab " over and over, never a long blank run
        finals += [h for h in transcript.add(one_hot([1, 2, 0])) if h.final]
    assert finals and all(set(w.text for w in h.words) == {"ab"} for h in finals)
    assert all(len(h.words) <= 8 for h in finals)
    assert len(transcript.tokens) < 30
