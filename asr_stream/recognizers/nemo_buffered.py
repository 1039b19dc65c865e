"""Buffered streaming for full-context NeMo CTC models.

A full-context model cannot carry state from one step to the next, so each step runs it on a
window: `left` context + the chunk + `right` context, cut from the live signal and turned into
features on its own. Only the frames of the chunk's own span are kept: every encoder frame of
the stream is produced by exactly one window, so nothing is duplicated or dropped at chunk
borders, and the greedy CTC decoder, which carries its last label across chunks, merges a token
that straddles a border into one.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from asr_stream import SAMPLE_RATE
from asr_stream.runtime.batching import Batcher
from asr_stream.errors import UserError
from asr_stream.recognizers.ctc_decoding import CtcTranscript, Vocabulary
from asr_stream.recognizers.nemo_cache_aware import RUNTIMES, STEP_TIMES_KEPT
from asr_stream.recognizers.nemo_features import module_device, window_features
from asr_stream.recognizers.nemo_model import ctc_head
from asr_stream.stages import Hypothesis


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk k owns encoder frames [k*chunk, (k+1)*chunk); its window adds `left` frames
    before (fewer at the start) and `right` after (fewer at the end)."""

    chunk: int
    left: int
    right: int

    def window(self, k: int, end: int | None = None) -> tuple[int, int]:
        """Frames [lo, hi) of chunk k's window; `end` is the stream's last frame once known."""
        lo = max(0, k * self.chunk - self.left)
        hi = (k + 1) * self.chunk + self.right
        return lo, hi if end is None else min(hi, end)

    def own(self, k: int, window_lo: int, window_frames: int, last: bool) -> slice:
        """Which of a window's frames chunk k owns (the last chunk owns everything after it)."""
        start = k * self.chunk - window_lo
        return slice(start, window_frames if last else start + self.chunk)


class BufferedEngine:
    """A loaded full-context model and the chunk plan: read-only, shared by every stream
    (`create_stream()`). Concurrent streams' windows of the same length run as one batch."""

    name = "nemo"

    def __init__(self, model, chunk_s: float = 2.0, left_s: float = 1.0, right_s: float = 0.6,
                 runtime: str = "torch", endpoint_s: float = 0.8, max_utterance_s: float = 20.0,
                 threads: int | None = None, batch: bool = True, concurrency: int = 1):
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime {runtime}: use one of {', '.join(RUNTIMES)}")
        self.model = model
        self.head = ctc_head(model)
        self.device = module_device(model.encoder)
        self.unit = model.encoder.subsampling_factor * model.preprocessor.featurizer.hop_length  # samples per frame
        self.frame_s = self.unit / SAMPLE_RATE
        frames = {name: round(value / self.frame_s) for name, value in
                  (("chunk", chunk_s), ("left", left_s), ("right", right_s))}
        if frames["chunk"] < 1 or frames["left"] < 0 or frames["right"] < 0:
            raise UserError(f"buffered streaming needs a chunk of at least {self.frame_s * 1000:g} ms "
                            "and non-negative left/right context")
        self.plan = ChunkPlan(**frames)
        self.latency_s = (self.plan.chunk + self.plan.right) * self.frame_s
        self.runtime = runtime
        self.endpoint_s, self.max_utterance_s = endpoint_s, max_utterance_s
        self.onnx = None
        if runtime.startswith("onnx"):
            from asr_stream.recognizers.nemo_onnx import OnnxOfflineModel

            self.onnx = OnnxOfflineModel(model, threads=threads or 1, int8=runtime == "onnx-int8")
        self.vocabulary = Vocabulary(list(self.head.vocabulary), getattr(model, "tokenizer", None))
        self.batcher = Batcher(self._log_probs_batch, enabled=batch, concurrency=concurrency)

    def create_stream(self, **options) -> "BufferedCtcRecognizer":
        return BufferedCtcRecognizer(self.model, engine=self, **options)

    def log_probs(self, window: np.ndarray) -> torch.Tensor:
        """CTC log-probs (frames, labels) of one window of audio."""
        feats = window_features(self.model.preprocessor, window)
        return self.batcher.call(feats.shape[1], feats)

    def _log_probs_batch(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.onnx is not None:
            return [torch.from_numpy(self.onnx(f.cpu().numpy())) for f in feats]
        with torch.inference_mode():
            encoded, lengths = self.model.encoder(
                audio_signal=torch.stack(feats).to(self.device),
                length=torch.full((len(feats),), feats[0].shape[1], device=self.device))
            log_probs = self.head(encoder_output=encoded)
        return [log_probs[b, : int(lengths[b])].float().cpu() for b in range(len(feats))]


class BufferedCtcRecognizer:
    """A full-context NeMo CTC model run on overlapping windows, behind the Recognizer interface:
    one stream's audio and transcript over a `BufferedEngine`."""

    name = "nemo"

    def __init__(self, model, chunk_s: float = 2.0, left_s: float = 1.0, right_s: float = 0.6,
                 runtime: str = "torch", endpoint_s: float = 0.8, max_utterance_s: float = 20.0,
                 threads: int | None = None, keep_log_probs: bool = False, engine: BufferedEngine | None = None):
        engine = engine or BufferedEngine(model, chunk_s=chunk_s, left_s=left_s, right_s=right_s, runtime=runtime,
                                          endpoint_s=endpoint_s, max_utterance_s=max_utterance_s, threads=threads)
        self.engine = engine
        self.model = engine.model
        self.unit, self.frame_s, self.plan = engine.unit, engine.frame_s, engine.plan
        self.latency_s, self.runtime = engine.latency_s, engine.runtime
        self.keep_log_probs = keep_log_probs
        self.transcript = CtcTranscript(engine.vocabulary, self.frame_s, endpoint_s=engine.endpoint_s,
                                        max_utterance_s=engine.max_utterance_s)
        self.step_times: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.reset()

    def reset(self) -> None:
        self.transcript.reset()
        self._clear_audio()
        self.step_times.clear()
        self.log_probs: list[torch.Tensor] | None = [] if self.keep_log_probs else None

    def _clear_audio(self) -> None:
        self.audio = np.zeros(0, np.float32)
        self.audio_start = 0  # absolute sample of self.audio[0]
        self.chunk_index = 0

    def state_size(self) -> dict[str, int]:
        """Per-stream state that could grow with the session (tests check it stays bounded)."""
        return {"audio_samples": len(self.audio), "utterance_tokens": len(self.transcript.tokens)}

    def accept_waveform(self, samples: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])

    def decode(self) -> list[Hypothesis]:
        out = []
        while True:
            lo, hi = self.plan.window(self.chunk_index)
            if self.audio_start + len(self.audio) < hi * self.unit:
                return out
            out += self._step(lo, hi, last=False)

    def finish(self) -> list[Hypothesis]:
        out = []
        end = self.audio_start + len(self.audio)
        if end > self.chunk_index * self.plan.chunk * self.unit:
            lo, _ = self.plan.window(self.chunk_index)
            out += self._step(lo, None, last=True)
        out += self.transcript.close()
        self._clear_audio()
        return out

    def _step(self, lo: int, hi: int | None, last: bool) -> list[Hypothesis]:
        started = time.perf_counter()
        a = lo * self.unit - self.audio_start
        window = self.audio[a:] if hi is None else self.audio[a:hi * self.unit - self.audio_start]
        window_log_probs = self.engine.log_probs(window)
        log_probs = window_log_probs[self.plan.own(self.chunk_index, lo, window_log_probs.shape[0], last)]
        self.chunk_index += 1
        next_lo, _ = self.plan.window(self.chunk_index)
        drop = next_lo * self.unit - self.audio_start
        if drop > 0:
            self.audio = self.audio[drop:]
            self.audio_start += drop
        if self.log_probs is not None:
            self.log_probs.append(log_probs)
        out = self.transcript.add(log_probs)
        self.step_times.append(time.perf_counter() - started)
        return out
