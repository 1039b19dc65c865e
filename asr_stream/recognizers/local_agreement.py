"""LocalAgreement: which words of the newest decode are settled enough to commit.

Two consecutive decodes of a growing buffer that agree on a word, from the start, make it
settled (LocalAgreement-2, as in whisper_streaming). Our rule adds four guards, each a named
setting of `AgreementRule`:
- a word at the very end of the previous decode's buffer (`edge_margin_s`) may have been cut
  short there ("9" of "9169"): it is not agreed with;
- a number that ends the decode or that another number follows may still grow: Whisper writes
  digits as they are said ("7", "7 1", then "7154");
- the newest decode's last word, when it ends within `last_word_margin_s` of the buffer's end,
  may be cut off mid-word: it waits for what follows;
- a decode of less than `min_agree_buffer_s` of audio is not agreed with (an utterance's first
  fraction of a second: "a quick" before "The quick");
- and a word still unsettled `commit_horizon_s` before the buffer's end is committed as the
  newest decode has it, so commit latency stays bounded however long nobody pauses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asr_stream.recognizers.whisper_decoder import AlignedWord
from asr_stream.recognizers.whisper_grounding import COLLAPSED_S, collapsed, key

_NUMBER = re.compile(r"[$£€]?\d[\d,.:%-]*")
_CLOSING_MARKS = ".?!,;:。"


@dataclass(frozen=True)
class AgreementRule:
    edge_margin_s: float = 0.2
    last_word_margin_s: float = 0.3
    min_agree_buffer_s: float = 1.0
    commit_horizon_s: float = 2.0


@dataclass(frozen=True)
class Decode:
    """One decode's words (stream seconds) and the buffer they were decoded from."""

    words: list[AlignedWord]
    buffer_end_s: float = 0.0  # where the buffer ended in the stream
    buffer_s: float = 0.0  # how long it was


@dataclass(frozen=True)
class Agreement:
    count: int  # the newest decode's first `count` words are settled
    by_horizon: int  # of which this many only by the horizon rule


def growing_number(words: list[AlignedWord], i: int) -> bool:
    """Is words[i] a number that may still grow (it ends the decode, or a number follows it)?"""
    if not _NUMBER.fullmatch(words[i].text.strip()):
        return False
    return i + 1 == len(words) or bool(_NUMBER.fullmatch(words[i + 1].text.strip()))


def agree(previous: Decode, latest: Decode, rule: AgreementRule) -> Agreement:
    """How many of `latest`'s words are settled, given the decode before it."""
    earlier = previous.words if previous.buffer_s >= rule.min_agree_buffer_s else []
    words = latest.words
    count = 0
    for i, (a, b) in enumerate(zip(earlier, words)):
        if key(a.text) != key(b.text) or a.end > previous.buffer_end_s - rule.edge_margin_s:
            break
        if growing_number(words, i):
            break
        count += 1
    if count and count == len(words) and words[-1].end > latest.buffer_end_s - rule.last_word_margin_s:
        count -= 1
    horizon = latest.buffer_end_s - rule.commit_horizon_s
    by_horizon = 0
    while count < len(words) and words[count].end <= horizon:
        count += 1
        by_horizon += 1
    return Agreement(count, by_horizon)


def settled_words(previous: list[AlignedWord], latest: list[AlignedWord], count: int) -> list[AlignedWord]:
    """`latest[:count]` as they are committed. Whisper closes every partial with a full stop and
    two decodes often punctuate a word differently; a committed word cannot change later, so a
    word whose two decodes differ (or the decode's last word) loses its closing mark. A word whose
    newest alignment collapsed to an instant (a loop starts there) keeps the earlier decode's span,
    and so does one that swallowed the next word's audio (that word collapsed onto its end: "the"
    over "the lazy"), so the swallowed word is not taken later for audio already committed."""
    out = []
    for i, new in enumerate(latest[:count]):
        text = new.text
        old = previous[i] if i < len(previous) else None
        if old is None or old.text != text or i == len(latest) - 1:
            text = text.rstrip(_CLOSING_MARKS) or text
        span = new
        if old is not None and not collapsed(old):
            squeezed = (i + 1 < len(latest) and collapsed(latest[i + 1])
                        and abs(latest[i + 1].start - new.end) < COLLAPSED_S and key(old.text) == key(new.text)
                        and old.end < new.end)
            if collapsed(new) or squeezed:
                span = old
        out.append(AlignedWord(text, span.start, span.end, new.probability, new.glued))
    return out
