"""Streamed captions say what the same model hears offline: each file its own stream, none of its
words dropped or added, on every kind of input (whole clips, short phrases between pauses, a
pause mid-sentence, speech from the first sample to the last), and the same text every run."""

import numpy as np
import pytest
import soundfile as sf

from asr_stream.recognizers import create_recognizer
from asr_stream.recognizers.whisper_grounding import key
from conftest import (SHARED_SPEECH, audioeval_clips, demo_clip, final_text, load_16k, needs_shared, normalize,
                      phrases_with_pauses, run_cli, shared_tsv, stream, word_errors)


@pytest.fixture(scope="module")
def rec():
    return create_recognizer("whisper", live=False)


def doubled_runs(text: str) -> int:
    """Runs of one to four words said twice back to back ("X. X."). Spelled-out letters are not
    words: "S -P -E -E -R" spells "speer" (AN4 spells names), its "E E" is no doubling."""
    # the words as written, lower case without punctuation: the English normaliser would expand a
    # contraction into a false doubling ("they're are" -> "they are are")
    w = [key(x) for x in text.split() if key(x)]
    letter = [len(x) == 1 and x.isalpha() for x in w]

    def spelled(a: int, b: int) -> bool:  # w[a:b] lie inside a run of three or more letters
        while a > 0 and letter[a - 1]:
            a -= 1
        while b < len(w) and letter[b]:
            b += 1
        return all(letter[a:b]) and b - a >= 3

    return sum(1 for n in range(1, 5) for i in range(n, len(w) - n + 1)
               if w[i : i + n] == w[i - n : i] and not spelled(i - n, i + n))


def compare(rec, offline, clips, phrases=False):
    """(streamed, offline) texts, each clip its own stream; with `phrases`, each clip first cut
    into short phrases with pauses between them."""
    streamed, reference = [], []
    for i, (audio, _) in enumerate(clips):
        if phrases:
            audio = phrases_with_pauses(audio, offline.words(audio), seed=i)
        streamed.append(final_text(stream(rec, audio)))
        reference.append(offline.text(audio))
    return streamed, reference


def check(refs, streamed, offline_texts, wer_factor, slack, ins_slack=None):
    s, o = word_errors(refs, streamed), word_errors(refs, offline_texts)
    # at least one mis-heard word, which can count as two errors ("form a" -> "former")
    slack = max(slack, 2.01 / sum(len(normalize(r).split()) for r in refs))
    assert s["ins"] <= o["ins"] + max(slack, ins_slack or 0), ("insertions", s, o)
    assert s["wer"] <= wer_factor * o["wer"] + slack, ("wer", s, o)
    assert sum(map(doubled_runs, streamed)) <= sum(map(doubled_runs, offline_texts)), (streamed, offline_texts)
    return s, o


def shipped_clips():
    return [(load_16k(w), t) for w, t in audioeval_clips() + [demo_clip()]]


@pytest.mark.parametrize("phrases", [False, True], ids=["whole", "phrases"])
def test_shipped_clips_streamed_like_offline(rec, offline_whisper, phrases):
    clips = shipped_clips()
    streamed, offline = compare(rec, offline_whisper, clips, phrases)
    check([t for _, t in clips], streamed, offline, 1.3, 0.02)


def _shared(name: str, limit: int):
    if name == "ljspeech-noise-5db":  # a real noise file per clip, as the benchmark mixes it
        from asr_stream.evaluation.manifest import SHARED_NOISE, dataset
        from asr_stream.evaluation.mixing import Condition, Mixer

        mixer, condition = Mixer(SHARED_NOISE), Condition.parse("any@5")
        return [(mixer.make(load_16k(u.audio), condition, u.key, i)[0], u.text)
                for i, u in enumerate(dataset("ljspeech", limit))]
    if name == "valentini-noisy":
        base = SHARED_SPEECH / "valentini"
        rows = [(base / "noisy" / p.name, t) for p, t in shared_tsv("valentini")]
    else:
        rows = shared_tsv(name) if name != "an4" else _an4()
    return [(load_16k(p), t) for p, t in rows[:limit]]


def _an4():
    from asr_stream.evaluation.manifest import dataset

    return [(u.audio, u.text) for u in dataset("an4")]


# In noise the decoder on a short window hears other words than on the whole clip, often more of
# them ("letter press" for "letterpress", "lower face leathers" for "lowercase letters"): about 2
# more per 100 words than offline on LJSpeech at 5 dB. None of them is audio transcribed twice
# (the doubled-runs check holds); BENCHMARKS.md has the measured figure against the target.
NOISY_INSERTIONS = 0.03
# Valentini's noisy recordings: six files, 86 words, half of them mis-heard either way, where one
# word heard as two ("whatever" -> "what he is") moves the rate by 1.2 points: three words of slack
VALENTINI_NOISY_INSERTIONS = 3 / 86


@needs_shared
@pytest.mark.parametrize("name,limit,phrases,factor,ins_slack,most", [
    ("ljspeech", 12, False, 1.3, None, 0.10), ("ljspeech", 12, True, 1.4, None, None),
    ("valentini", 6, False, 1.3, None, None), ("valentini-noisy", 6, False, 1.2, VALENTINI_NOISY_INSERTIONS, None),
    ("ljspeech-noise-5db", 20, False, 1.2, NOISY_INSERTIONS, None), ("an4", 30, False, 1.2, None, None)])
def test_each_file_streamed_like_offline(rec, offline_whisper, name, limit, phrases, factor, ins_slack, most):
    """`most`: a bound on the streamed WER itself, where the model is good enough to have one."""
    clips = _shared(name, limit)
    streamed, offline = compare(rec, offline_whisper, clips, phrases)
    s, _ = check([t for _, t in clips], streamed, offline, factor, 0.015, ins_slack)
    assert most is None or s["wer"] < most, s


@needs_shared
def test_a_number_is_not_committed_before_its_last_digit(rec, offline_whisper):
    """Whisper writes a spoken number as digits that grow while it is said ("9", then "9169";
    "7", then "7 1", then "7154"): a number is committed only once a word that is not a number
    follows it (or at the final), so it comes out whole, with at least as many digits as offline
    writes (which digits, the decoder may hear differently on a shorter window: an401 gives
    "71544" for offline's "7154"; before, it gave "7")."""
    import re

    def numbers(text):  # "9169", "884-3648", and "A13" (a digit heard as a letter: whole, all the same)
        return [n for n in re.findall(r"[\w-]*\d[\w-]*", text.replace(",", "")) if len(n) >= 3]

    checked = 0
    for audio, text in _shared("an4", 40):
        if not text.lower().startswith("enter"):  # the "Enter <number>" commands: one number each
            continue
        said = offline_whisper.text(audio)
        expected = [n for n in numbers(said) if n.isdigit()]
        if expected:
            checked += 1
            streamed = numbers(final_text(stream(rec, audio)))
            assert all(any(len(s) >= len(e) for s in streamed) for e in expected), (expected, streamed)
    assert checked >= 3


@needs_shared
def test_a_decode_derailed_by_its_prompt_is_redone_without_it(offline_whisper):
    """LJ001-0021 in real noise at 5 dB: the committed "The only is for" as prompt derailed every
    later decode (each wrote only "the"), and the clip lost its last 16 words. Whether the prompt
    derails depends on the CPU (CTranslate2's int8 kernels differ between AVX2 and AVX-512, and
    so do the decodes): what must hold everywhere is that the clip keeps its words."""
    from asr_stream.evaluation.manifest import SHARED_NOISE, dataset
    from asr_stream.evaluation.mixing import Condition, Mixer

    u = dataset("ljspeech")[20]
    audio = Mixer(SHARED_NOISE).make(load_16k(u.audio), Condition.parse("any@5"), u.key, 20)[0]
    rec = create_recognizer("whisper", live=False)
    streamed = normalize(final_text(stream(rec, audio))).split()
    offline = normalize(offline_whisper.text(audio)).split()
    assert len(streamed) >= 0.8 * len(offline), (streamed, offline)
    assert word_errors([u.text], [" ".join(streamed)])["del"] <= word_errors([u.text], [" ".join(offline)])["del"] + 0.1


@pytest.fixture(scope="module")
def librispeech_texts(rec, offline_whisper):
    files = sorted((SHARED_SPEECH / "librispeech_unlabeled").glob("*.flac"))[:12]
    return compare(rec, offline_whisper, [(load_16k(f), None) for f in files])


@needs_shared
def test_unlabeled_librispeech_streamed_like_offline(librispeech_texts):
    """No transcript needed: each utterance streamed against the same model offline."""
    streamed, offline = librispeech_texts
    disagreement = word_errors(offline, streamed)
    assert disagreement["wer"] <= 0.12 and disagreement["ins"] <= 0.02, disagreement


@needs_shared
def test_unlabeled_librispeech_no_doubled_words(librispeech_texts):
    streamed, offline = librispeech_texts
    assert sum(map(doubled_runs, streamed)) <= sum(map(doubled_runs, offline))


@needs_shared
@pytest.mark.parametrize("utterance", ["librispeech_unlabeled/125-121124-0000.flac",
                                       "librispeech_unlabeled/150-126107-0000.flac", "ljspeech/LJ001-0021.wav"])
def test_a_word_committed_at_a_buffer_end_is_committed_once(rec, offline_whisper, utterance):
    """Utterances where one decode aligned a word short at its buffer's end ("in her." over 20 ms,
    "winding" cut short by a collapsed "sheet.") or the next decode aligned it 90 ms later ("which
    are an" / "an exact"), so that its two alignments barely touch: the same saying, committed
    once ("fault in her her", "the winding winding sheet", "which are an an exact")."""
    audio = load_16k(SHARED_SPEECH / utterance)
    streamed, offline = final_text(stream(rec, audio)), offline_whisper.text(audio)
    assert doubled_runs(streamed) <= doubled_runs(offline), (streamed, offline)


def test_a_word_after_a_committed_word_said_again_is_new_speech(rec):
    """Recorded from LJ001-0005 ("in the middle of the 15th century"): the decode that committed
    "the" aligned it over 320 ms, into the next word; the next decode said the committed words
    again, "the" on its own 160 ms, then "15th", which overlaps the stretched "the" by 200 ms. That
    "the" was already said again by the word before, so "15th" is new speech, not committed audio
    (it was lost: "in the middle of the century")."""
    from asr_stream.recognizers.whisper import WhisperStreamingRecognizer
    from asr_stream.recognizers.whisper_decoder import AlignedWord

    s = WhisperStreamingRecognizer(decoder=rec.decoder)  # a fresh stream on the loaded model
    committed = [("in", 2.02, 2.40), ("the", 2.40, 2.44), ("middle", 2.44, 2.62), ("of", 2.62, 2.84),
                 ("the", 2.84, 3.16)]
    s._covered.extend((a, b, key(t)) for t, a, b in committed)
    s._floor = 3.16
    decode = [AlignedWord(t, a, b, 0.9) for t, a, b in [
        ("in", 1.88, 2.26), ("the", 2.26, 2.40), ("middle", 2.40, 2.60), ("of", 2.60, 2.80), ("the", 2.80, 2.96),
        ("15th", 2.96, 3.60), ("century.", 3.60, 3.86)]]
    # the same decode without its own "the": "15th" is then a re-transcription of "the"'s audio
    assert [w.text for w in s._uncovered(decode[:4] + decode[5:])] == ["century."]
    new = s._uncovered(decode)
    assert [w.text for w in new] == ["15th", "century."]
    assert s._covered[-1] == (2.84, 2.96, key("the"))  # the committed "the" is where it was said again
    assert [w.text for w in s._commit(new)] == ["15th", "century."]  # the invariant agrees when committing


@needs_shared
def test_a_number_after_a_stretched_committed_word_is_kept(rec, offline_whisper):
    audio = load_16k(SHARED_SPEECH / "ljspeech" / "LJ001-0005.wav")
    streamed, offline = normalize(final_text(stream(rec, audio))), normalize(offline_whisper.text(audio))
    assert "15th" in offline.split() and "15th" in streamed.split(), (streamed, offline)


def _speech_span(audio: np.ndarray) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
    return int(loud[0]), int(loud[-1]) + 1


def test_speech_from_the_first_sample_to_the_last_keeps_its_edges(rec, offline_whisper):
    """The clip cut to its speech: it starts at its first word's first sample and stops right
    after its last word. The stream keeps the first and last words and adds none after them."""
    for audio, _ in shipped_clips():
        a, b = _speech_span(audio)
        cut = audio[a:b]
        streamed = normalize(final_text(stream(rec, cut))).split()
        offline = normalize(offline_whisper.text(cut)).split()
        assert streamed and key(streamed[0]) == key(offline[0]), (streamed, offline)
        assert key(streamed[-1]) == key(offline[-1]), (streamed, offline)
        assert len(streamed) <= len(offline) + 1, (streamed, offline)


def test_a_pause_mid_sentence_does_not_transcribe_the_words_before_it_again(rec, offline_whisper):
    """A sentence, 0.6 s of quiet, then its continuation: the words before the pause come once."""
    wav, ref = demo_clip()
    audio = load_16k(wav)
    words = offline_whisper.words(audio)
    gaps = [(nxt.start - w.end, (w.end + nxt.start) / 2) for w, nxt in zip(words[2:-3], words[3:-2])]
    cut = int(max(gaps)[1] * 16000)
    paused = np.concatenate([audio[:cut], np.zeros(9600, np.float32), audio[cut:]])
    streamed = final_text(stream(rec, paused))
    s, o = word_errors([ref], [streamed]), word_errors([ref], [offline_whisper.text(paused)])
    assert s["ins"] <= o["ins"] and s["wer"] <= o["wer"] + 0.05, (streamed, s, o)
    assert doubled_runs(streamed) == 0


def test_the_same_file_gives_the_same_text_every_run(tmp_path):
    """The default chain (denoiser, gate, Whisper) at --pace fast: identical output, run to run,
    on short phrases between pauses (many utterance ends)."""
    wav, _ = demo_clip()
    audio = load_16k(wav)
    rng = np.random.default_rng(3)
    pieces = np.array_split(audio, 6)
    phrases = np.concatenate([np.concatenate([p, np.zeros(int(rng.uniform(0.4, 1.2) * 16000), np.float32)])
                              for p in pieces])
    path = tmp_path / "phrases.wav"
    sf.write(path, phrases, 16000)
    runs = [run_cli("--audio_path", str(path), "--pace", "fast", "--timestamps") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr.decode()[-2000:]
    assert runs[0].stdout and runs[0].stdout == runs[1].stdout
