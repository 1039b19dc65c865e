"""Repeated runs are judged by where Whisper's alignment puts them, not by their text."""

from asr_stream.recognizers.whisper_decoder import AlignedWord
from asr_stream.recognizers.whisper_grounding import repeated_run, supported_words


def words(spec):
    """'a:0.0-0.3 b:0.3-0.6' -> aligned words"""
    out = []
    for item in spec.split():
        text, span = item.split(":")
        a, b = span.split("-")
        out.append(AlignedWord(text, float(a), float(b), 0.9))
    return out


def kept(earlier, new, speech_prob, transcribed_until=0.0) -> int:
    """How many words are kept, checking they are the first ones (nothing reordered)."""
    out = supported_words(earlier, new, speech_prob, transcribed_until)
    return len(out) if out == list(new[: len(out)]) else -1


def speech(start, end):
    return 0.9


def silence(start, end):
    return 0.05


def test_repeated_runs_are_found():
    keys = "thank you thank you".split()
    assert repeated_run(keys, 2) == 2
    assert repeated_run("no no".split(), 1) == 1
    assert repeated_run("it was the best of times it was the worst".split(), 5) == 0  # 3 words, not a replay
    assert repeated_run("it was the best of times it was the best".split(), 6) == 4  # replay of 4 words
    assert repeated_run("one two three four".split(), 2) == 0


def test_real_repeated_speech_is_kept():
    new = words("thank:1.0-1.3 you:1.3-1.6 thank:1.9-2.2 you:2.2-2.5")
    assert kept([], new, speech) == 4
    said_twice = words("printing:5.0-5.4 in:5.4-5.5 the:5.5-5.6 only:5.6-5.9 sense:5.9-6.3")
    assert kept("printing in the only sense".split(), said_twice, speech) == 5


def test_collapsed_loop_is_cut():
    # Whisper's loop: the repeated words all aligned to one instant at the end of the audio
    new = words("the:1.0-1.2 only:1.2-1.5 sense.:1.5-1.5 the:1.5-1.5 only:1.5-1.5 sense:1.5-1.9")
    assert kept([], new, speech) == 3
    assert kept([], words("quick:0.5-0.8 quick:0.8-0.8 quick:0.8-0.8"), speech) == 1


def test_a_word_collapsed_where_a_loop_starts_goes_with_the_loop():
    # LJ001-0001's final decode: the speech ends with "exhibition."; the decoder then loops,
    # starting the copy with a "The" it collapses onto the loop's instant
    earlier = "crafts represented in the exhibition".split()
    new = words("crafts:7.2-8.0 represented:8.0-8.4 in:8.4-8.8 the:8.8-9.0 exhibition.:9.0-9.36 The:9.36-9.36 "
                "crafts:9.36-9.36 represented:9.36-9.36 in:9.36-9.36 the:9.36-9.36 exhibition.:9.36-9.36")
    assert kept(earlier, new, speech) == 5


def test_a_collapsed_word_where_a_loop_starts_goes_with_it_when_the_loop_is_written_twice():
    # the same clip's final decode in a live stream that had skipped partials: the loop is written
    # out twice, its second copy a little later, and the "The" that starts the first copy is no word
    earlier = "most if not from all the arts and".split()
    new = words("crafts:7.23-7.85 represented:7.85-8.37 in:8.37-8.79 the:8.79-8.95 exhibition.:8.95-9.35 "
                "The:9.35-9.35 crafts:9.35-9.35 represented:9.35-9.35 in:9.35-9.35 the:9.35-9.35 "
                "exhibition.:9.35-9.39 The:9.39-9.39 crafts:9.39-9.39 represented:9.39-9.39 in:9.39-9.39 "
                "the:9.39-9.39 exhibition.:9.39-9.39 The:9.89-9.89 crafts:9.89-9.89 represented:9.89-9.89")
    assert kept(earlier, new, speech) == 5


def test_a_copy_written_onto_no_audio_before_a_loop_gives_way_to_the_copy_on_the_audio():
    # a live stream's decode over the same clip's end: the decoder writes the words once onto the
    # buffer's first instant, once over their audio, then loops; the copy on the audio is the speech
    earlier = "most if not from all the arts and".split()
    new = words("crafts:7.25-7.25 represented:7.25-7.25 in:7.25-7.25 the:7.25-7.25 exhibition.:7.25-7.25 "
                "Crafts:7.25-7.97 represented:7.97-8.39 in:8.39-8.77 the:8.77-9.05 exhibition.:9.05-9.39 "
                "Crafts:9.39-9.39 represented:9.39-9.39 in:9.39-9.39 the:9.39-9.39 exhibition.:9.39-9.39 "
                "Crafts:9.89-9.89 represented:9.89-9.89 in:9.89-9.89")
    out = supported_words(earlier, new, speech, transcribed_until=7.25)
    assert [(w.text, w.start) for w in out] == [(w.text, w.start) for w in new[5:10]]


def test_real_words_before_a_loop_are_kept():
    # a real replay of earlier words, then the decoder starts looping: the real part stays
    earlier = "jumps over the lazy dog the quick brown fox".split()
    new = words("jumps:4.5-4.9 over:4.9-5.1 the:5.1-5.3 lazy:5.3-5.5 dog.:5.5-5.8 "
                "the:5.8-5.8 quick:5.8-5.8 brown:5.8-5.8 fox:5.8-5.8")
    assert kept(earlier, new, speech) == 5


def test_repeat_over_silence_is_cut():
    new = words("thank:1.0-1.3 you:1.3-1.6 thank:1.9-2.2 you:2.2-2.5")
    assert kept([], new, lambda a, b: 0.9 if b <= 1.7 else 0.05) == 2
    assert kept([], new, silence) == 2  # the first "thank you" is no repeat: not judged here


def test_a_loop_that_starts_partway_is_found_and_cut():
    assert repeated_run("please call stammer please call".split(), 3) == 2
    new = words("call:1.2-1.5 stammer.:1.5-2.0 please:2.0-2.0 call:2.0-2.0")
    assert kept(["please"], new, speech) == 2


def test_a_replay_over_audio_already_transcribed_is_cut():
    # committed "... at the train station" up to 24.0 s; the decode lays the replay over that audio
    earlier = "go meet her wednesday at the train station".split()
    new = words("today:23.2-23.3 at:23.3-23.7 the:23.7-23.9 train:23.9-24.0 station.:24.0-24.4")
    assert kept(earlier, new, speech, transcribed_until=24.0) == 1
    later = words("today:24.2-24.5 at:24.5-24.7 the:24.7-24.9 train:24.9-25.2 station.:25.2-25.6")
    assert kept(earlier, later, speech, transcribed_until=24.0) == 5  # said again: kept


def test_punctuation_is_no_repeat():
    # "surpassed" "." committed, and the next decode starts with its own "." again
    new = words(".:51.3-52.0 printing:52.5-52.8 then:52.8-53.4")
    assert kept(["surpassed", "."], new, speech, transcribed_until=52.0) == 3


def test_real_speech_after_a_dropped_replay_is_kept():
    # forced to continue from a wrong "may", the decoder replays "be considered" onto no audio,
    # then goes on with the real words: those stay
    earlier = "may justly be considered may".split()
    new = words("be:33.7-33.7 considered:33.7-33.7 as:33.7-33.9 the:33.9-34.2 invention:34.2-34.6 "
                "of:34.6-34.8 printing:34.8-35.3")
    out = supported_words(earlier, new, speech, transcribed_until=33.1)
    assert [w.text for w in out] == "as the invention of printing".split()


def test_a_run_written_onto_no_audio_then_again_onto_its_audio_keeps_the_second_copy():
    # a sentence said twice; in the second saying the decoder writes "crafts represented in the
    # exhibition" once collapsed onto an instant (all but its first word) and straight after once
    # more spread over the audio: the second copy is the speech, and the first is dropped whole
    earlier = "the arts and crafts represented in the exhibition printing in the only sense the arts and".split()
    new = words("crafts:17.39-17.83 represented:17.83-17.83 in:17.83-17.83 the:17.83-17.83 "
                "exhibition.:17.83-17.83 Crafts:17.83-18.13 represented:18.13-18.57 in:18.57-18.93 "
                "the:18.93-19.21 exhibition.:19.21-19.57")
    out = supported_words(earlier, new, speech, transcribed_until=17.39)
    assert [w.text for w in out] == "Crafts represented in the exhibition.".split()
    assert out[0].start == 17.83


def test_a_copy_after_skipped_copies_is_judged_against_the_saying_they_repeat():
    # AN4 cen7-fvap-b's final decode, recorded ("eight eight four three six four eight", 2.2 s):
    # the number once over its audio, once collapsed, once more squeezed into the last 0.2 s
    new = words("884:0.00-0.96 3648:0.96-1.94 884:1.94-1.94 3648:1.94-1.94 884:1.94-1.94 3648:1.94-2.16 8:2.16-2.18")
    assert kept([], new, speech) == 2
