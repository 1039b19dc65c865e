"""Streaming Whisper on continuous speech (no pause long enough to end an utterance), against
the same model run offline on each clip whole. Needs ../shared's recordings."""

from __future__ import annotations

import numpy as np
import pytest

from asr_stream.recognizers import create_recognizer
from conftest import SHARED_SPEECH, final_text, load_16k, needs_shared, normalize, stream

pytestmark = [needs_shared, pytest.mark.shared]


@pytest.fixture(scope="module")
def rec():
    return create_recognizer("whisper", live=False)


def _clips(names: str, limit: int | None = None):
    from asr_stream.io.audio_files import load_16k as load
    from asr_stream.evaluation.manifest import dataset

    units = [u for name in names.split("+") for u in dataset(name)[:limit]]
    return [(load(u.clean or u.audio), u.text) for u in units]  # clean speech: noise is another test's subject


def _join(clips, seed=0):
    """Clips back to back with natural gaps of 0.1-0.3 s (shorter than the endpoint silence)."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(4000, np.float32)]
    for audio, _ in clips:
        parts += [audio, np.zeros(int(rng.uniform(0.1, 0.3) * 16000), np.float32)]
    return np.concatenate(parts)


def _stream(rec, audio):
    return final_text(stream(rec, audio))


def _offline(rec, clips):
    model = rec.decoder.model  # the same loaded model, run as faster-whisper runs it: each clip whole
    texts = []
    for audio, _ in clips:
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False)
        texts.append(" ".join(s.text for s in segments))
    return " ".join(texts)


def _wer(ref, hyp):
    import jiwer

    return jiwer.wer(normalize(ref), normalize(hyp) or "<empty>")


# AN4's spelled-out letters and digits ("p i t t s b u r g h") are where streaming Whisper still
# loses most against offline: a letter said alone is decoded from too little context. Its bound is
# looser, and BENCHMARKS.md says so.
@pytest.mark.parametrize("name,limit,factor", [("ljspeech+valentini", 20, 1.1), ("an4", 24, 1.3)])
def test_continuous_speech_matches_offline(rec, name, limit, factor):
    clips = _clips(name, limit)
    ref = " ".join(t for _, t in clips)
    streamed = _wer(ref, _stream(rec, _join(clips)))
    offline = _wer(ref, _offline(rec, clips))
    # `factor` x the offline WER, plus one word in a hundred of slack for these few hundred words
    assert streamed <= factor * offline + 0.01, (streamed, offline)


def test_read_passages_said_twice_lose_no_word(rec):
    """Eight LJSpeech clips, each said twice with a pause of 0.1-0.3 s, back to back: the
    repeats are real speech, and no word of either copy is lost."""
    import jiwer

    clips = _clips("ljspeech", 8)
    audio = _join([c for c in clips for c in (c, c)], seed=1)
    ref = " ".join(t for _, t in clips for _ in range(2))
    out = jiwer.process_words(normalize(ref), normalize(_stream(rec, audio)))
    assert out.deletions <= 1, out.deletions
    assert out.wer < 0.06


def test_ten_minute_live_stream_keeps_state_bounded():
    """The LibriSpeech utterances back to back for ten minutes, as a live stream on a busy CPU
    hands them over (3 s bursts, so partials due long before the newest audio are skipped, as
    in a loaded daemon): what a step works on stays the same size and transcription goes on.
    Every partial decoded, on shorter audio: test_whisper_recognizer's long-speech test."""
    files = sorted((SHARED_SPEECH / "librispeech_unlabeled").glob("*.flac"))
    parts, total = [], 0
    for f in files:
        a = load_16k(f)
        parts += [a, np.zeros(3200, np.float32)]
        total += len(a) + 3200
        if total >= 600 * 16000:
            break
    audio = np.concatenate(parts)
    rec = create_recognizer("whisper", live=True)
    burst = 48000
    largest, finals, words = {}, 0, 0
    for i in range(0, len(audio), burst):
        rec.accept_waveform(audio[i : i + burst])
        for h in rec.decode():
            finals += h.final
            words += len(h.words) if h.final else 0
        for k, v in rec.state_size().items():
            largest[k] = max(largest.get(k, 0), v)
    rec.finish()
    assert len(audio) >= 600 * 16000
    assert rec.skipped_partials > 0  # the busy-CPU path was taken
    assert largest["buffer_samples"] <= rec.max_buffer + burst
    assert largest["utterance_words"] <= 120 and largest["prompt_words"] <= 48
    assert largest["vad_probs"] <= (rec.max_buffer + rec.preroll) // 512 + 4
    assert finals >= 20 and words >= 1200  # ten minutes of read speech: it kept transcribing


def test_words_in_babble_are_committed_while_the_speech_goes_on(rec):
    """Twelve LJSpeech clips back to back under babble (four LibriSpeech talkers summed, 5 dB):
    there Whisper often writes the committed words again and stops, decode after decode, while
    the speech goes on, until the buffer is full (10 s). No word waits more than 4.5 s of audio
    to be committed (a stalled decode is done again without the prompt)."""
    from asr_stream.evaluation.mixing import Condition, Mixer
    from asr_stream.io.audio_files import load_16k as load

    talkers = [load(f) for f in sorted((SHARED_SPEECH / "librispeech_unlabeled").glob("*.flac"))[:16]]
    mixer = Mixer(SHARED_SPEECH.parent / "noise", babble_sources=talkers)
    clips = [(mixer.make(audio, Condition("babble", 5.0), f"clip{i}")[0], text)
             for i, (audio, text) in enumerate(_clips("ljspeech", 12))]
    audio = _join(clips)
    rec.reset()
    waited, committed, step = [], {}, 1600
    for i in range(0, len(audio) + step, step):
        if i < len(audio):
            rec.accept_waveform(audio[i : i + step])
        hyps = rec.decode() if i < len(audio) else rec.finish()
        heard_s = min(i + step, len(audio)) / 16000
        for h in hyps:
            done = committed.get(h.utterance, 0)
            stable = len(h.words) if h.final else h.stable
            waited += [heard_s - w.end for w in h.words[done:stable]]
            committed[h.utterance] = max(done, stable)
    assert len(waited) >= 100  # words came out all along
    assert max(waited) <= 4.5, sorted(waited)[-5:]
