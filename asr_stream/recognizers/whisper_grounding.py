"""Which decoded words the audio supports.

Whisper on a short buffer sometimes keeps writing after the speech it heard: it repeats a run
of words, or replays what it wrote earlier. Text alone cannot tell that from a speaker who
really says a phrase twice ("thank you, thank you"), so a repeated run is judged by where it
lies in the audio: a run that Whisper's own word alignment spreads over new speech is speech;
one whose words collapse onto a single instant (the decoder had no audio left to attend to),
lie over audio already transcribed, or lie where the voice detector hears no speech is not,
and is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from asr_stream.recognizers.whisper_decoder import SENTENCE_END, AlignedWord

MAX_RUN = 12  # longest repeated run looked for, in words
REPLAY_RUN = 4  # a run of this many words said earlier counts as a replay
RECENT = 16  # ... and a shorter one, of two or more, said among the last this many words
COLLAPSED_S = 0.02  # a word aligned to less than this has no audio of its own
MIN_RUN_WORD_S = 0.08  # a real run takes at least this much audio per word
MIN_REPEAT_SHARE = 0.5  # a repeat said again takes at least this share of the first saying's time
SPEECH_PROB = 0.35  # the voice detector's "not speech" threshold, for its mean over a run


def key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def repeated_run(keys: Sequence[str], j: int) -> int:
    """Length of the repeated run starting at `keys[j]`, or 0: the run just before it said again,
    two or more of the last `RECENT` words said again, or `REPLAY_RUN` words said anywhere
    earlier. (A loop often starts partway: "please call stammer. please call".) A word that is
    only punctuation is no repeat."""
    if not keys[j]:
        return 0
    for n in range(min(MAX_RUN, j, len(keys) - j), 0, -1):
        if keys[j : j + n] == keys[j - n : j]:
            return n
    best = 0
    for i in range(j - 1, -1, -1):
        if keys[i] != keys[j]:
            continue
        n = 1
        while n < MAX_RUN and j + n < len(keys) and i + n < j and keys[i + n] == keys[j + n]:
            n += 1
        if n >= REPLAY_RUN or (n >= 2 and j - i <= RECENT):
            best = max(best, n)
    return best


def looping(keys: Sequence[str], j: int, n: int) -> bool:
    """Does the run `keys[j : j + n]` (which repeats the n words before it) start again right
    after itself? A cut-off third copy counts."""
    after = keys[j + n : j + 2 * n]
    return bool(after) and after == keys[j : j + len(after)]


def collapsed(w: AlignedWord) -> bool:
    return w.end - w.start < COLLAPSED_S


def grounded_length(run: Sequence[AlignedWord], speech_prob: Callable[[float, float], float],
                    transcribed_until: float = 0.0, original: Sequence[AlignedWord] = ()) -> int:
    """How much of a repeated run lies on audio of its own. A loop's words collapse onto one
    instant (the decoder had no audio left to attend to), so the run's collapsed end is never
    kept; what comes before it is kept if it is spread over time, mostly on audio after
    `transcribed_until` (the end of the words already committed), where the voice detector
    hears speech, and, when the run repeats words of the same decode (`original`), taking at
    least `MIN_REPEAT_SHARE` of the time they took: a speaker saying it again takes about as long,
    a decoder looping over the end of its audio squeezes each copy shorter."""
    m = len(run)
    while m and collapsed(run[m - 1]):
        m -= 1
    head = run[:m]
    if not head or sum(map(collapsed, head)) * 2 > m:
        return 0
    if head[-1].end - head[0].start < MIN_RUN_WORD_S * m:
        return 0
    if len(original) >= m and head[-1].end - head[0].start < MIN_REPEAT_SHARE * (original[m - 1].end - original[0].start):
        return 0
    if (head[0].start + head[-1].end) / 2 <= transcribed_until:
        return 0  # a replay laid over audio that was already transcribed
    return m if speech_prob(head[0].start, head[-1].end) >= SPEECH_PROB else 0


def supported_words(earlier: Sequence[str], new: Sequence[AlignedWord],
                    speech_prob: Callable[[float, float], float], transcribed_until: float = 0.0) -> list[AlignedWord]:
    """The words of `new` (what a decode added after `earlier`) that the audio supports. A
    repeated run is kept as far as it is grounded in the audio; after an unsupported run the
    decode is cut (a decoder stuck in a loop writes nothing reliable after it), except for a run
    the decode starts with: forced to continue from a wrong committed word, Whisper often replays
    a few words onto no audio and then goes on with the real speech, which is judged on its own.
    Likewise a run only partly on audio and written again straight after: Whisper wrote the
    words once onto no audio and then again onto their audio, so the second copy is judged; and
    where words already kept lie on no audio and the same words follow on their audio, the second
    copy takes their place (a loop after it is then cut as usual). A copy after skipped ones is
    judged against the saying they all repeat ("884 3648", then twice more, the last copy
    squeezed into the utterance's last fifth of a second)."""
    keys = [key(w) for w in earlier] + [key(w.text) for w in new]
    base, kept, i = len(earlier), [], 0
    loop_from = None  # where the copies skipped just before this one began (a loop starts there)
    while i < len(new):
        n = repeated_run(keys, base + i)
        back_to_back = n and i >= n and keys[base + i - n : base + i] == keys[base + i : base + i + n]
        original = new[i - n : i] if back_to_back else ()
        if back_to_back and loop_from is not None and loop_from >= n and \
                keys[base + loop_from - n : base + loop_from] == keys[base + i : base + i + n]:
            original = new[loop_from - n : loop_from]  # the saying the skipped copies repeated
        m = grounded_length(new[i : i + n], speech_prob, transcribed_until, original) if n else 0
        unheard = bool(original) and all(map(collapsed, original))  # the copy before has no audio of its own
        if m == n and unheard and kept[len(kept) - n :] == list(original):
            # written onto no audio, then onto its audio: this copy is the saying, and a copy
            # after it is judged against it
            kept[len(kept) - n :] = new[i : i + n]
            i += n
            loop_from = None
            continue
        if m and back_to_back and looping(keys, base + i, n):
            m = 0  # said a third time straight after: a loop, none of whose copies is trusted
        elif n and m < n and keys[base + i + n : base + i + 2 * n] == keys[base + i : base + i + n]:
            loop_from = i if loop_from is None else loop_from
            i += n  # written again straight after: the next copy is judged on its own
            continue
        if n and m < n:
            kept += new[i : i + m]
            if not m:  # a word collapsed onto the instant the loop starts, and ending no sentence, is
                # the loop's first word ("exhibition. The crafts represented ..."), not the speech's last
                loop_start = new[i if loop_from is None else loop_from].start
                while (kept and collapsed(kept[-1]) and kept[-1].start >= loop_start - COLLAPSED_S
                       and not kept[-1].text.endswith(tuple(SENTENCE_END))):
                    kept.pop()
            if kept:
                return kept
            i += n
            loop_from = None
        else:
            loop_from = None
            kept.append(new[i])
            i += 1
    return kept
