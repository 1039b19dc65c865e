"""LocalAgreement's rule, on decodes as Whisper gives them (words with their aligned spans)."""

from __future__ import annotations

import pytest

from asr_stream.errors import UserError
from asr_stream.recognizers.local_agreement import AgreementRule, Decode, agree, growing_number, settled_words
from asr_stream.recognizers.whisper_decoder import AlignedWord
from asr_stream.recognizers.whisper_tuning import WhisperTuning

RULE = AgreementRule()


def words(*spec) -> list[AlignedWord]:
    """("text", start, end), ... as aligned words."""
    return [AlignedWord(t, s, e, 0.9) for t, s, e in spec]


def test_a_number_is_growing_while_it_ends_the_decode_or_digits_follow():
    ws = [AlignedWord(t, i, i + 0.5, 0.9) for i, t in enumerate(["Enter", "7", "1.", "dollars", "$15", "3"])]
    assert [growing_number(ws, i) for i in range(len(ws))] == [False, True, False, False, True, True]


def test_two_decodes_settle_the_words_they_agree_on_from_the_start():
    before = Decode(words(("The", 0.1, 0.3), ("quick", 0.3, 0.6), ("brown", 0.6, 0.9)), 1.5, 1.5)
    now = Decode(words(("The", 0.1, 0.3), ("quick", 0.3, 0.6), ("brawn", 0.6, 0.9), ("fox", 0.9, 1.4)), 1.9, 1.9)
    assert agree(before, now, RULE).count == 2  # up to the first disagreement
    assert agree(Decode([], 0.0, 0.0), now, RULE).count == 0  # nothing to agree with yet


def test_a_word_at_the_previous_buffers_end_may_have_been_cut_short():
    before = Decode(words(("Enter", 0.1, 0.5), ("9", 0.6, 1.35)), 1.4, 1.4)  # "9" ends 50 ms before its buffer
    now = Decode(words(("Enter", 0.1, 0.5), ("9", 0.6, 0.9), ("please", 1.2, 1.6)), 2.5, 2.5)
    assert agree(before, now, RULE).count == 1


def test_too_short_a_first_decode_is_not_agreed_with():
    before = Decode(words(("a", 0.1, 0.2), ("quick", 0.2, 0.5)), 0.8, 0.8)
    now = Decode(words(("a", 0.1, 0.2), ("quick", 0.2, 0.5), ("brown", 0.5, 0.9), ("fox", 0.9, 1.2)), 1.6, 1.6)
    assert agree(before, now, RULE).count == 0
    assert agree(before, now, AgreementRule(min_agree_buffer_s=0.5)).count == 2


def test_the_newest_decodes_last_word_waits_when_it_touches_the_buffer_end():
    before = Decode(words(("good", 0.1, 0.4), ("morning", 0.4, 0.9)), 1.2, 1.2)
    now = Decode(words(("good", 0.1, 0.4), ("morning", 0.4, 0.9)), 1.1, 1.1)
    assert agree(before, now, RULE).count == 1
    assert agree(before, Decode(now.words, 1.6, 1.6), RULE).count == 2


def test_the_horizon_commits_what_stayed_unsettled_too_long():
    before = Decode(words(("one", 0.1, 0.4), ("two", 0.5, 0.8)), 3.0, 3.0)
    now = Decode(words(("won", 0.1, 0.4), ("too", 0.5, 0.8), ("three", 2.5, 2.9)), 3.2, 3.2)
    result = agree(before, now, RULE)
    assert (result.count, result.by_horizon) == (2, 2)
    assert agree(before, now, AgreementRule(commit_horizon_s=3.0)).count == 0


def test_settled_words_lose_a_disputed_closing_mark_and_keep_an_uncollapsed_span():
    before = words(("Hello,", 0.1, 0.5), ("world.", 0.5, 0.9), ("again", 1.0, 1.3))
    now = words(("Hello,", 0.1, 0.5), ("world", 0.5, 0.9), ("again.", 1.0, 1.0))
    out = settled_words(before, now, 3)
    assert [w.text for w in out] == ["Hello,", "world", "again"]
    assert (out[2].start, out[2].end) == (1.0, 1.3)  # the newest alignment collapsed: the earlier span stands


def test_tuning_from_a_preset_section_rejects_what_it_does_not_know():
    tuning = WhisperTuning.from_mapping({"partial_interval_s": 0.3, "commit_horizon_s": 1.5})
    assert tuning.partial_interval_s == 0.3 and tuning.agreement.commit_horizon_s == 1.5
    assert WhisperTuning.from_mapping(None) == WhisperTuning()
    for bad, needle in (({"partial_intervall_s": 0.3}, "partial_intervall_s"), ({"final_pad_s": -1}, "final_pad_s"),
                        ({"max_buffer_s": "long"}, "max_buffer_s"), ({"max_utterance_s": 0}, "max_utterance_s"),
                        ([0.3, 1.5], "mapping")):
        with pytest.raises(UserError) as excinfo:
            WhisperTuning.from_mapping(bad)
        assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_a_word_that_swallowed_the_next_ones_audio_keeps_its_earlier_span():
    """The newest decode aligned "the" over "the lazy" (lazy collapsed onto its end): committing
    that span would make "lazy" look like committed audio when it is decoded again."""
    before = words(("over", 1.78, 2.02), ("the", 2.02, 2.2), ("lazy", 2.2, 2.38))
    now = words(("over", 1.81, 2.01), ("the", 2.01, 2.43), ("lazy", 2.43, 2.43), ("dog.", 2.43, 2.83))
    out = settled_words(before, now, 2)
    assert (out[1].text, out[1].start, out[1].end) == ("the", 2.02, 2.2)
    assert (out[0].start, out[0].end) == (1.81, 2.01)  # nothing swallowed: the newest span stands
