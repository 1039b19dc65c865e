"""Greedy CTC decoding of frames as they arrive, and the open utterance it builds.

Both NeMo streaming families (cache-aware and buffered) end in the same place: CTC log-probs
for new encoder frames, each frame produced exactly once. `CtcTranscript` turns them into
`Hypothesis` objects: partials while an utterance is open, a final when a run of blanks ends
it (or when it has run on too long without a pause). Nothing here looks back further than the
open utterance, so a step costs the same however long the session is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from asr_stream.stages import Hypothesis, Word


class CtcGreedyDecoder:
    """Greedy CTC over frames as they arrive: a token is emitted when the best label changes
    to a non-blank one. The state is the previous label, so a step costs the same at any point
    of the session, and frames split anywhere decode as if they came in one piece."""

    def __init__(self, blank: int):
        self.blank = blank
        self.reset()

    def reset(self) -> None:
        self.previous = self.blank
        self.blank_run = 0

    def step(self, log_probs: torch.Tensor, first_frame: int) -> list[tuple[int, int]]:
        """(token, frame) pairs for the new frames; log_probs is (frames, labels)."""
        out = []
        for i, label in enumerate(log_probs.argmax(-1).tolist()):
            if label == self.blank:
                self.blank_run += 1
            else:
                if label != self.previous:
                    out.append((label, first_frame + i))
                self.blank_run = 0
            self.previous = label
        return out


class Vocabulary:
    """Token ids to text: a SentencePiece tokenizer (word starts marked with ▁) or a list of
    characters in which " " separates words."""

    def __init__(self, labels: Sequence[str], tokenizer=None):
        self.size = len(labels)
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self.starts = [p.startswith("▁") for p in tokenizer.ids_to_tokens(list(range(self.size)))]
            self.chars = None
        else:
            self.chars = list(labels)
            self.starts = [c == " " for c in self.chars]

    def starts_word(self, token: int) -> bool:
        return self.starts[token]

    def words(self, tokens: Sequence[tuple[int, int]], frame_s: float) -> list[Word]:
        """(token, frame) pairs to words, timed from their first and last token's frames."""
        groups: list[list[tuple[int, int]]] = []
        for token, frame in tokens:
            if self.chars is not None and self.chars[token] == " ":
                groups.append([])
                continue
            if not groups or (self.tokenizer is not None and self.starts[token]):
                groups.append([])
            groups[-1].append((token, frame))
        words = []
        for group in groups:
            if not group:
                continue
            ids = [t for t, _ in group]
            text = (self.tokenizer.ids_to_text(ids) if self.tokenizer is not None
                    else "".join(self.chars[t] for t in ids)).strip()
            if text:
                words.append(Word(text, group[0][1] * frame_s, (group[-1][1] + 1) * frame_s))
        return words


class CtcTranscript:
    """The open utterance: CTC frames in, hypotheses out.

    A run of `endpoint_s` of blanks closes the utterance (final). Speech without such a pause
    is closed at a word boundary after `max_utterance_s`, so partials never rebuild an
    ever-growing utterance.
    """

    def __init__(self, vocabulary: Vocabulary, frame_s: float, endpoint_s: float = 0.8,
                 max_utterance_s: float = 20.0):
        self.vocabulary = vocabulary
        self.frame_s = frame_s
        self.decoder = CtcGreedyDecoder(blank=vocabulary.size)
        self.endpoint_frames = max(1, round(endpoint_s / frame_s))
        self.max_utterance_frames = max(1, round(max_utterance_s / frame_s))
        self.reset()

    def reset(self) -> None:
        self.decoder.reset()
        self.frames = 0  # encoder frames decoded so far
        self.utterance = 0
        self.tokens: list[tuple[int, int]] = []  # (token, encoder frame) of the open utterance

    def add(self, log_probs: torch.Tensor) -> list[Hypothesis]:
        """The next frames' log-probs (frames, labels), in order."""
        new = self.decoder.step(log_probs, self.frames)
        self.frames += log_probs.shape[0]
        self.tokens += new
        if self.tokens and self.decoder.blank_run >= self.endpoint_frames:
            return self.close()
        if self.tokens and self.tokens[-1][1] - self.tokens[0][1] >= self.max_utterance_frames:
            return self.close(keep_last_word=True)
        return [self.hypothesis(final=False)] if new else []

    def close(self, keep_last_word: bool = False) -> list[Hypothesis]:
        """Finalise the open utterance; with keep_last_word, the last (maybe unfinished) word
        starts the next one."""
        carry = []
        if keep_last_word:
            starts = [i for i, (token, _) in enumerate(self.tokens) if self.vocabulary.starts_word(token)]
            if starts and starts[-1] > 0:
                carry = self.tokens[starts[-1]:]
                self.tokens = self.tokens[:starts[-1]]
        if not self.tokens:
            self.tokens = carry
            return []
        hyp = self.hypothesis(final=True)
        self.tokens = carry
        self.utterance += 1
        return [hyp]

    def hypothesis(self, final: bool) -> Hypothesis:
        words = self.vocabulary.words(self.tokens, self.frame_s)
        stable = len(words) if final else max(len(words) - 1, 0)  # the last word may still grow
        return Hypothesis(self.utterance, tuple(words), stable, final, time.monotonic())
