"""Whisper as a streaming recogniser: the policy around a `WhisperDecoder`.

Whisper is not a streaming model; this loop makes it one without dropping words:
- Silero VAD finds utterances; audio outside them is never decoded.
- While speech goes on, the buffer is decoded every `partial_interval_s` of audio (at fixed
  audio positions, so `--pace realtime` and `--pace fast` give the same text while the chain
  keeps up). Which words are settled enough to commit is `local_agreement`'s rule
  (LocalAgreement-2 with guards for cut-off words and growing numbers, and a horizon that
  bounds commit latency). The settings are `whisper_tuning.WhisperTuning`'s.
- Committed words are never rewritten. The buffer is cut after them, keeping the last
  `keep_committed_s` of committed audio as context (cut clear of the next word's onset); the
  committed words before the buffer are the decoder's prompt (a decode the prompt derails, by
  its log-probability, or that stalls, writing nothing new while speech goes on, is done again
  without it). A decode therefore costs what the uncommitted audio costs, not a fixed window.
- The invariant: a word is committed only where no committed word covers its audio, judged
  from the decoder's own alignment. The decode re-transcribes the context audio, maybe in other
  words; those words lie on committed audio and are dropped, so one stretch of audio is never
  committed twice. (Forcing the decoder to continue from the committed words instead let it
  write them again after the prefix, and stalled it for seconds after an odd prefix.)
- The final decode of an utterance pads the buffer with `final_pad_s` of silence: on a short
  window ending right after the speech, Whisper otherwise loops over the last words.
- Decoded words are kept only where the audio supports them (`whisper_grounding`): repeated
  speech is kept, runaway repeats are cut; faster-whisper's no-speech test drops decodes of
  non-speech.
- An utterance that goes on past `max_utterance_s` is closed at a sentence end (or, later, at
  any committed word) and the speech carries on in the next one, so per-utterance state stays
  bounded over a session of any length.
- A live stream that falls behind skips partial decodes (never finals, never audio) so the next
  decode covers a longer span; skips are counted.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.recognizers import whisper_models
from asr_stream.recognizers.local_agreement import Decode, agree, settled_words
from asr_stream.recognizers.whisper_decoder import SENTENCE_END, AlignedWord, WhisperDecoder
from asr_stream.recognizers.whisper_grounding import COLLAPSED_S, SPEECH_PROB, collapsed, key, supported_words
from asr_stream.recognizers.whisper_tuning import WhisperTuning
from asr_stream.stages import Hypothesis, Word
from asr_stream.io.vad import CHUNK, SpeechDetector

PROMPT_WORDS = 48  # committed words before the buffer that condition the decoder
SAME_WORD_JITTER_S = 0.05  # how far two alignments of one word's edges may differ
SAME_WORD_SHARE = 0.25  # the same word overlapping this share of the shorter alignment is one saying
SHORT_WORD_S = 0.05  # a word aligned to no more than this has no audio of its own (collapsed, or nearly)
LOW_LOGPROB = -1.0  # a decode's mean token log-probability below this is suspect (faster-whisper's test)
STALL_S = 0.8  # speech after the last committed word that a decode writing nothing new has stalled on

def _said_again(said: list[AlignedWord], words: list[AlignedWord]) -> int:
    """How many of `words` repeat, in order, the last of `said` where those were aligned to no
    more than an instant (with no audio of their own, their time says nothing)."""
    n = min(len(said), len(words))
    return max((k for k in range(1, n + 1)
                if [key(w.text) for w in words[:k]] == [key(w.text) for w in said[-k:]]
                and all(w.end - w.start <= SHORT_WORD_S for w in said[-k:])), default=0)


def bundled_model_path() -> str:
    """The default Whisper (tiny.en), for tools that want the model outside the stream."""
    return whisper_models.tiny_en()


def load_decoder(model: str | None = None, device: str = "cpu", threads: int = 1, language: str | None = "en",
                 compute_type: str | None = None, batch: bool = True, concurrency: int = 1) -> WhisperDecoder:
    import ctranslate2

    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise UserError("--device cuda: no CUDA device is visible to CTranslate2")
    path = whisper_models.resolve(model)
    try:
        return WhisperDecoder(path, device=device, threads=threads, compute_type=compute_type, language=language,
                              batch=batch, concurrency=concurrency)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot load Whisper model from {path}: {exc}") from None


class WhisperEngine:
    """A loaded Whisper (`WhisperDecoder`, shared and batched across streams) and the streaming
    policy's settings; `create_stream()` gives one session's recogniser."""

    name = "whisper"
    paced_streams = True  # a live stream sheds partials when behind; a file's never does
    LIVE_BACKLOG_S = 0.5

    def __init__(self, decoder: WhisperDecoder, backlog_s: float | None = LIVE_BACKLOG_S,
                 tuning: WhisperTuning | None = None):
        self.decoder = decoder
        self.backlog_s = backlog_s
        self.tuning = tuning or WhisperTuning()

    def create_stream(self, live: bool | None = None) -> "WhisperStreamingRecognizer":
        backlog = self.backlog_s if live is None else (self.LIVE_BACKLOG_S if live else None)
        return WhisperStreamingRecognizer(decoder=self.decoder, backlog_s=backlog, tuning=self.tuning)


class WhisperStreamingRecognizer:
    name = "whisper"

    def __init__(self, model: str | None = None, device: str = "cpu", threads: int = 1,
                 language: str | None = "en", decoder: WhisperDecoder | None = None,
                 backlog_s: float | None = 0.5, tuning: WhisperTuning | None = None):
        self.decoder = decoder or load_decoder(model, device=device, threads=threads, language=language)
        self.model_path = self.decoder.model_path
        t = self.tuning = tuning or WhisperTuning()
        self.partial_interval = int(t.partial_interval_s * SAMPLE_RATE)
        self.keep_committed = t.keep_committed_s
        self.max_buffer = int(t.max_buffer_s * SAMPLE_RATE)
        self.max_utterance = t.max_utterance_s
        self.preroll = int(t.preroll_s * SAMPLE_RATE)
        self.lead_pad = int(t.lead_pad_s * SAMPLE_RATE)
        # live input: partials due more than `backlog_s` before the newest audio are skipped;
        # None (files at --pace fast) decodes every partial, so the text never depends on timing
        self.backlog = int(backlog_s * SAMPLE_RATE) if backlog_s is not None else None
        self.end_margin = int(0.25 * SAMPLE_RATE)  # audio kept after the VAD's end of speech for the final
        self.detector = SpeechDetector(min_silence_s=t.min_silence_s)
        self.decodes = 0
        self.decode_seconds = 0.0
        self.skipped_partials = 0
        self.horizon_commits = 0  # words committed by the horizon rule rather than by agreement
        self.ungrounded_words = 0  # decoded words cut as unsupported by the audio
        self.unrecognized_seconds = 0.0  # speech cut from a full buffer before any word was found in it
        self.final_pad = t.final_pad_s
        self.cut_margin = t.cut_margin_s
        self.context_words = 0  # decoded words that re-transcribed committed audio (expected, not errors)
        self.overlap_rejected = 0  # words after new ones that lay on committed audio: the invariant's rejects
        self.prompt_retries = 0  # decodes done again without the prompt, the first one having derailed
        self.final_fallbacks = 0  # finals that looped, whose last partial's unsettled words were kept
        self.stall_retries = 0  # decodes done again without the prompt, the first one having stalled
        self._looped = False
        self.reset()

    # -- streaming surface ------------------------------------------------------------
    def reset(self) -> None:
        self.detector.reset()
        self._unscored = np.zeros(0, np.float32)
        self._pos = 0  # samples consumed on the 16 kHz timeline
        self._recent = np.zeros(0, np.float32)  # pre-roll kept while no one speaks
        self._probs = deque(maxlen=(self.max_buffer + self.preroll) // CHUNK + 4)  # (chunk start, speech prob)
        self._utterance = -1
        self._last_end = 0
        self._in_utt = False
        self._prompt: deque[Word] = deque(maxlen=PROMPT_WORDS)
        self._floor = 0.0  # end of the last committed word: word times never go back
        self._covered: deque[tuple[float, float, str]] = deque(maxlen=64)  # committed words' decoder spans
        self._clear_buffer()

    def accept_waveform(self, samples: np.ndarray) -> None:
        self._unscored = np.concatenate([self._unscored, np.asarray(samples, np.float32)])

    def decode(self) -> list[Hypothesis]:
        out: list[Hypothesis] = []
        n = len(self._unscored) // CHUNK
        for i in range(n):
            behind = self.backlog is not None and (n - 1 - i) * CHUNK > self.backlog
            out += self._step(self._unscored[i * CHUNK : (i + 1) * CHUNK], skip_partial=behind)
        self._unscored = self._unscored[n * CHUNK :]
        return out

    def finish(self) -> list[Hypothesis]:
        out = self.decode()
        if len(self._unscored):
            # the stream's last, padded chunk: the final decode follows, so no partial is due (nor skipped)
            out += self._step(np.pad(self._unscored, (0, CHUNK - len(self._unscored))), skip_partial=None)
            self._unscored = np.zeros(0, np.float32)
        if self._in_utt:
            out += self._final()
        return out

    def state_size(self) -> dict[str, int]:
        """How much per-stream state is held (tests check it stays bounded)."""
        return {"buffer_samples": len(self._buf), "anchor_words": len(self._anchor),
                "utterance_words": len(self._committed), "tail_words": len(self._tail),
                "prompt_words": len(self._prompt), "vad_probs": len(self._probs)}

    # -- one VAD chunk ----------------------------------------------------------------
    def _step(self, chunk: np.ndarray, skip_partial: bool | None) -> list[Hypothesis]:
        events = self.detector.feed(chunk)
        self._probs.append((self._pos, self.detector.last_prob))
        recent_start = self._pos - len(self._recent)
        self._recent = np.concatenate([self._recent, chunk])[-(self.preroll + CHUNK):]
        started = any(e.kind == "start" for e in events)
        if started and not self._in_utt:
            start = max(events[0].sample - self.preroll, self._last_end, recent_start)
            old = self._recent[: len(self._recent) - CHUNK]  # the pre-roll before this chunk
            self._begin_utterance(np.concatenate([old[max(0, start - recent_start):], chunk]))
        elif self._in_utt:
            self._buf = np.concatenate([self._buf, chunk])
        self._pos += CHUNK
        ends = [e for e in events if e.kind == "end"]
        if self._in_utt and ends:
            return self._final(speech_end=ends[0].sample)
        if self._in_utt and self._pos - self._last_partial >= self.partial_interval:
            self._last_partial = self._pos
            if skip_partial:
                self.skipped_partials += 1
            elif skip_partial is not None:
                return self._partial()
        return []

    def _clear_buffer(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._buf_start = self._pos
        self._anchor: list[Word] = []  # committed words whose audio is still in the buffer (context)
        self._committed: list[Word] = []  # this utterance's committed words
        self._tail: list[AlignedWord] = []  # the last decode's uncommitted words
        self._tail_buf_end = 0.0  # where the last decode's buffer ended (stream seconds)
        self._tail_buf_s = 0.0  # ... and how long it was
        self._last_emitted: tuple = ()
        self._shown = False  # has a partial with words been emitted for this utterance

    def _begin_utterance(self, audio: np.ndarray) -> None:
        self._clear_buffer()
        self._in_utt = True
        self._utterance += 1
        self._buf = audio.astype(np.float32)
        self._buf_start = self._pos + CHUNK - len(self._buf)
        self._last_partial = self._buf_start

    @property
    def _buf_end_s(self) -> float:
        return (self._buf_start + len(self._buf)) / SAMPLE_RATE

    # -- decoding ---------------------------------------------------------------------
    def _partial(self) -> list[Hypothesis]:
        tail = self._transcribe()
        settled = agree(Decode(self._tail, self._tail_buf_end, self._tail_buf_s),
                        Decode(tail, self._buf_end_s, len(self._buf) / SAMPLE_RATE), self.tuning.agreement)
        self.horizon_commits += settled.by_horizon
        self._commit(settled_words(self._tail, tail, settled.count))
        heard, self._tail = self._tail, tail[settled.count:]
        if self._looped:
            # cut where it looped, this decode says nothing of the audio after its last word: the
            # words an earlier decode heard there still stand (the final falls back on them)
            last = max([self._floor] + [w.end for w in tail])
            self._tail += [w for w in heard if w.start >= last - SAME_WORD_JITTER_S and not self._covers(w)]
        self._tail_buf_end = self._buf_end_s
        self._tail_buf_s = len(self._buf) / SAMPLE_RATE
        out = self._split_long_utterance()
        self._trim()
        return out + self._emit(final=False)

    def _final(self, speech_end: int | None = None) -> list[Hypothesis]:
        if speech_end is not None:  # decode up to shortly after the speech, not the whole silence
            keep = speech_end + self.end_margin - self._buf_start
            if 0 < keep < len(self._buf):
                self._buf = self._buf[:keep]
        said = self._commit(self._transcribe(pad_s=self.final_pad))
        kept = [w for w in self._tail if not self._covers(w) and not collapsed(w)] if self._looped else []
        if kept:
            # the final decode ran into a loop and was cut (a short window can loop even padded):
            # the words the last partial decode heard after what it kept still stand (those on
            # audio of their own: a word collapsed onto an instant is where that decode looped),
            # less those the final decode ended with but aligned to no audio of their own (the
            # same words, put elsewhere: "in the exhibition. exhibition.")
            kept = kept[_said_again(said, kept):]
        if kept:
            self._commit(kept)
            self.final_fallbacks += 1
        self._tail = []
        self._in_utt = False
        self._last_end = self._pos
        hyps = self._emit(final=True)
        self._prompt.extend(self._anchor)
        self._clear_buffer()
        return hyps

    def _commit(self, words: list[AlignedWord]) -> list[AlignedWord]:
        """Commit words (decoder times): their spans are kept for the invariant, and their caption
        times are made monotonic (separate decodes align slightly differently). Returns those
        committed."""
        out, done = [], []
        for w in words:
            if self._covers(w):  # the invariant, whatever path the word came by
                self.overlap_rejected += 1
                continue
            self._covered.append((w.start, w.end, key(w.text)))
            start = max(w.start, self._floor)
            self._floor = max(w.end, start, self._floor)
            out.append(Word(w.text, start, self._floor, w.glued))
            done.append(w)
        self._committed += out
        self._anchor += out
        return done

    def _split_long_utterance(self) -> list[Hypothesis]:
        """Close an utterance nobody paused in: at a sentence end once it is `max_utterance_s`
        long, at any committed word once it is half as long again. The speech goes on in the next
        utterance, whose decoder still continues from the same committed words."""
        if not self._committed:
            return []
        span = self._committed[-1].end - self._committed[0].start
        sentence_end = self._committed[-1].text.endswith(tuple(SENTENCE_END))
        if span < self.max_utterance or (not sentence_end and span < 1.5 * self.max_utterance):
            return []
        hyps = self._emit(final=True, with_tail=False)
        self._utterance += 1
        self._committed = []
        self._last_emitted = ()
        self._shown = False
        return hyps

    def _trim(self) -> None:
        """Cut the buffer after committed words, keeping the last `keep_committed_s` of them."""
        cut = 0
        anchor = self._anchor
        limit = anchor[-1].end - self.keep_committed if anchor else 0.0
        k = max((i for i, w in enumerate(anchor) if w.end <= limit), default=-1)
        if k >= 0:
            # between the word and the next one, whose start the alignment knows less well
            cut_s = (anchor[k].end + anchor[k + 1].start) / 2 if k + 1 < len(anchor) else anchor[k].end
            if k + 1 < len(anchor):  # ... and never close to its onset: a clipped onset derails the decoder
                cut_s = max(anchor[k].start, min(cut_s, anchor[k + 1].start - self.cut_margin))
            cut = int(round(cut_s * SAMPLE_RATE)) - self._buf_start
            self._prompt.extend(anchor[: k + 1])
            self._anchor = anchor[k + 1 :]
        if len(self._buf) - max(cut, 0) > self.max_buffer:
            # no word found in a whole buffer of speech (noise the VAD took for speech, or a
            # language the model does not know): keep the newest audio, and count what was cut
            new_cut = len(self._buf) - self.max_buffer
            self.unrecognized_seconds += (new_cut - max(cut, 0)) / SAMPLE_RATE
            cut = new_cut
            self._prompt.extend(self._anchor)
            self._anchor = []
        cut = max(0, min(cut, len(self._buf)))
        if cut:
            self._buf = self._buf[cut:]
            self._buf_start += cut
            self._tail = [w for w in self._tail if w.end > self._buf_start / SAMPLE_RATE]

    def _speech_prob(self, start: float, end: float) -> float:
        """The voice detector's mean speech probability over [start, end] (stream seconds)."""
        a, b = int(start * SAMPLE_RATE) - CHUNK, int(end * SAMPLE_RATE)
        probs = [p for s, p in self._probs if a < s <= b]
        return float(np.mean(probs)) if probs else 0.0

    def _transcribe(self, pad_s: float | None = None) -> list[AlignedWord]:
        """Decode the buffer; returns only the new words the audio supports, with times on the
        stream's timeline."""
        t0 = time.perf_counter()
        words = self._decode_buffer(pad_s, with_prompt=True)
        if not words and self._prompt and self._stalled():
            # the decode wrote the committed words again and stopped, though speech goes on after
            # them (Whisper does, decode after decode, until the buffer is full, mostly in babble):
            # decoded once more without the prompt, it goes on with the new speech
            self.stall_retries += 1
            words = self._decode_buffer(pad_s, with_prompt=False)
        self.decodes += 1
        self.decode_seconds += time.perf_counter() - t0
        return words

    def _stalled(self) -> bool:
        """Has speech gone on for `STALL_S` after the last committed word?"""
        end = self._buf_end_s
        return bool(self._anchor) and end - self._floor >= STALL_S and \
            self._speech_prob(self._floor, end) >= SPEECH_PROB

    def _decode_buffer(self, pad_s: float | None, with_prompt: bool) -> list[AlignedWord]:
        anchor = self._anchor
        prompt = list(self._prompt) if with_prompt else []
        audio, offset = self._buf, self._buf_start / SAMPLE_RATE
        if self._buf_start == 0 and self.lead_pad:
            # speech from the stream's first sample: Whisper drops a window's first word when it
            # starts right at the window's edge ("For although" -> "Although"), so silence goes first
            audio, offset = np.concatenate([np.zeros(self.lead_pad, np.float32), audio]), offset - self.lead_pad / SAMPLE_RATE
        dec = self.decoder.decode(audio, offset, prompt, [], pad_s=pad_s)
        if prompt and dec.avg_logprob < LOW_LOGPROB:
            # an odd committed text can derail the decoder for seconds of speech ("The only is for"
            # -> "the", again and again): then the buffer is decoded once more without it
            self.prompt_retries += 1
            retry = self.decoder.decode(audio, offset, [], [], pad_s=pad_s)
            if retry.avg_logprob > dec.avg_logprob:
                dec = retry
        words = [w if w.start >= 0 else AlignedWord(w.text, 0.0, max(0.0, w.end), w.probability, w.glued)
                 for w in dec.words]
        if not anchor and dec.avg_logprob < LOW_LOGPROB and (dec.no_speech_prob > 0.6 or dec.compression_ratio > 2.4):
            words = []  # Whisper itself says this is not speech, or a loop (faster-whisper's tests)
        # loops are judged over the whole decode, its re-transcription of committed audio included
        earlier = [w.text for w in list(self._prompt)[-PROMPT_WORDS:]]
        supported = supported_words(earlier, words, self._speech_prob, self._buf_start / SAMPLE_RATE)
        self.ungrounded_words += len(words) - len(supported)
        self._looped = len(supported) < len(words)
        return self._uncovered(supported)

    def _uncovered(self, words: list[AlignedWord]) -> list[AlignedWord]:
        """The invariant: a word is new only where no committed word covers its audio (times as
        the decoder aligned them, unclamped). Words before the first new one re-transcribe
        committed audio; a word after it that is covered breaks the invariant and is counted.
        Where that re-transcription has followed the committed words in order, the next one is
        context too when it is the next committed word, on its audio or touching it (two
        alignments of "an" may start 90 ms apart): a speaker who says it twice is heard in the
        word after it. A committed word said again as itself, on a shorter span, is that shorter
        span when the decode's next word lies on the rest: one decode stretched it into the next
        word ("the" over 320 ms into "15th"), which is new speech."""
        out: list[AlignedWord] = []
        last = None  # the committed word the last context word lay on (its index in _covered)
        said = False  # ... and whether that context word was it, said again (the same word)
        said_end = 0.0  # where that saying ended
        for w in words:
            if not out:
                at = self._covering(w)
                if at is None and last is not None and last + 1 < len(self._covered):
                    a, b, committed_key = self._covered[last + 1]
                    if key(w.text) == committed_key and min(b, w.end) - max(a, w.start) > -SAME_WORD_JITTER_S:
                        at = last + 1
                if at is not None and at == last and said and key(w.text) != self._covered[at][2]:
                    # that committed word was said again by the word before, which ended sooner:
                    # its span was stretched into this word, which is new speech
                    a, b, committed_key = self._covered[at]
                    self._covered[at] = (a, max(a, min(b, said_end)), committed_key)
                    at = None
                if at is not None or w.end <= self._floor:
                    self.context_words += 1
                    said = at is not None and key(w.text) == self._covered[at][2]
                    said_end = w.end
                    last = at if at is not None else last
                    continue
            elif self._covering(w) is not None:
                self.overlap_rejected += 1
                continue
            out.append(w)
        return out

    def _covers(self, w: AlignedWord) -> bool:
        return self._covering(w) is not None

    def _covering(self, w: AlignedWord) -> int | None:
        """The committed word (its index in `_covered`) that covers `w`'s audio: half of the
        shorter of the two or more, or, for the same word said again, a quarter of the shorter
        (at most the alignment's jitter), or none at all when one of the two is too short to be a
        saying of its own and lies at the other's edge (around a pause the alignment stretches a
        word over the silence, so a re-transcription can land half off it, or past its end; where
        a loop starts, or at a buffer's end, a word collapses onto an instant). A word whose edge
        only touches a committed word squeezed shorter than the touch (by the jitter, and less
        than half of itself) is the word after it ("they" aligned to 40 ms, "act" starting 20 ms
        before its end)."""
        k = key(w.text)
        found = None
        for i in range(len(self._covered) - 1, -1, -1):
            a, b, committed_key = self._covered[i]
            if b <= w.start - SAME_WORD_JITTER_S:
                break
            overlap = min(b, w.end) - max(a, w.start)
            shorter = min(b - a, w.end - w.start)
            same = bool(k) and k == committed_key
            touching = overlap <= SAME_WORD_JITTER_S and overlap < 0.5 * (w.end - w.start)
            if (overlap >= 0.5 * max(COLLAPSED_S, shorter) - 1e-6 and not touching) or (  # times: to the ms
                    same and (overlap > min(SAME_WORD_JITTER_S, SAME_WORD_SHARE * shorter)
                              or (shorter <= SHORT_WORD_S and overlap > -SAME_WORD_JITTER_S))):
                if same:
                    return i  # the same word: the one it re-transcribes
                found = i if found is None else found
        return found

    def _emit(self, final: bool, with_tail: bool = True) -> list[Hypothesis]:
        tail = [w.word() for w in self._tail] if with_tail else []
        words = tuple(self._committed + tail)
        k = (words, len(self._committed), final)
        if not final and k == self._last_emitted:
            return []
        self._last_emitted = k
        if final and not words and not self._shown:
            return []  # a noise blip nobody saw: no empty caption
        self._shown = self._shown or bool(words)
        stable = len(words) if final else len(self._committed)
        return [Hypothesis(self._utterance, words, stable, final, emitted_at=time.monotonic())]
