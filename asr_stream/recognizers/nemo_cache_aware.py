"""Cache-aware streaming for NeMo models trained with limited right context (`att_context_size`).

The encoder runs one chunk at a time and carries its attention and convolution caches, so each
step costs the same however long the session is. Log-mel features come chunk by chunk from the
live signal (`StreamingFeatures`, equal to the offline preprocessor's), and each step's CTC
frames go straight to the incremental greedy decoder (`CtcTranscript`).
"""

from __future__ import annotations

import copy
import time
from collections import deque

import numpy as np
import torch

from asr_stream import SAMPLE_RATE
from asr_stream.runtime.batching import Batcher, SharedExclusive
from asr_stream.errors import UserError
from asr_stream.recognizers.ctc_decoding import CtcTranscript, Vocabulary
from asr_stream.recognizers.nemo_features import StreamingFeatures, module_device
from asr_stream.recognizers.nemo_model import ctc_head
from asr_stream.stages import Hypothesis

RUNTIMES = ("torch", "onnx", "onnx-int8")
STEP_TIMES_KEPT = 2000
LINGER_CHUNKS = 0.5  # how long a step waits for other streams' steps to batch with, in chunks  # the latest steps' wall times (for benchmarks); older ones are forgotten


def is_cache_aware(model) -> bool:
    """Trained with limited attention context, so it can stream with caches."""
    enc = model.encoder
    return hasattr(enc, "cache_aware_stream_step") and getattr(enc, "att_context_style", None) in (
        "chunked_limited", "regular") and any(c[1] >= 0 for c in _contexts(enc))


def _contexts(enc) -> list[list[int]]:
    return [list(c) for c in getattr(enc, "att_context_size_all", None) or [enc.att_context_size]]


class CacheAwareEngine:
    """A loaded cache-aware model with its attention context set: read-only from here on, shared
    by every stream (`create_stream()`). Each stream keeps its own caches and hands them in with
    each step, so concurrent streams' steps of the same shape run as one batched encoder call."""

    name = "nemo"

    def __init__(self, model, lookahead_ms: float | None = None, runtime: str = "torch", endpoint_s: float = 0.8,
                 max_utterance_s: float = 20.0, threads: int | None = None, batch: bool = True,
                 concurrency: int = 1):
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime {runtime}: use one of {', '.join(RUNTIMES)}")
        if not is_cache_aware(model):
            raise UserError("this NeMo model has full attention context: it streams in buffered mode "
                            "(--streaming buffered), not cache-aware")
        self.model = model
        self.endpoint_s, self.max_utterance_s = endpoint_s, max_utterance_s
        enc = model.encoder
        self.frame_s = enc.subsampling_factor * model.preprocessor.featurizer.hop_length / SAMPLE_RATE
        self.lookaheads_ms = {round(c[1] * self.frame_s * 1000): c for c in _contexts(enc)}
        if lookahead_ms is None:
            context = list(enc.att_context_size)
        else:
            context = self.lookaheads_ms.get(round(lookahead_ms))
            if context is None:
                raise UserError(f"--lookahead-ms {lookahead_ms:g}: this model supports "
                                f"{', '.join(str(k) for k in sorted(self.lookaheads_ms))} ms")
        # set once, here: the engine owns the model, so no stream can change another's context
        enc.set_default_att_context_size(context)
        enc.setup_streaming_params()
        # a copy: NeMo's step rewrites the live config's drop_extra_pre_encoded while it runs, and
        # another stream reading it meanwhile would take a first step's value for its own
        self.cfg = copy.deepcopy(enc.streaming_cfg)
        self.context = context
        self.lookahead_ms = round(context[1] * self.frame_s * 1000)
        # algorithmic latency: a chunk's first frame waits for the whole chunk (its own frames and
        # the look-ahead), and the chunk's last feature frame for half an FFT window of audio
        featurizer = model.preprocessor.featurizer
        self.latency_s = (self.cfg.chunk_size[1] * featurizer.hop_length + featurizer.n_fft // 2) / SAMPLE_RATE
        self.runtime = runtime
        self.head = ctc_head(model)
        self.device = module_device(enc)
        self.vocabulary = Vocabulary(list(self.head.vocabulary), getattr(model, "tokenizer", None))
        # streams' steps come a chunk apart, at different phases: waiting up to a quarter of a chunk
        # for the other streams' steps to arrive turns one-stream calls into batches
        chunk_s = self.cfg.chunk_size[1] * featurizer.hop_length / SAMPLE_RATE
        linger = LINGER_CHUNKS * chunk_s
        # PyTorch steps run one at a time: NeMo's modules spend much of a small step in Python, so
        # two side by side only contend for the interpreter; batching is what makes them cheaper
        self.batcher = Batcher(self._step_batch, enabled=batch, linger_s=linger)
        # NeMo's step rewrites the encoder's drop_extra_pre_encoded while it runs when asked for
        # another value (a stream's first step): such steps run alone, the others side by side
        self._model_lock = SharedExclusive()
        self.onnx_session = self.onnx_batcher = None
        if runtime.startswith("onnx"):
            from asr_stream.recognizers.nemo_onnx import ensure_export, session

            self.onnx_session = session(ensure_export(model, f"cache-aware-{context[0]}-{context[1]}", context,
                                                      runtime == "onnx-int8"), threads or 1)
            # ONNX Runtime leaves the interpreter while it runs: batches run side by side, a core each
            self.onnx_batcher = Batcher(self._onnx_batch, enabled=batch, concurrency=concurrency, linger_s=linger)

    def create_stream(self, **options) -> "CacheAwareCtcRecognizer":
        return CacheAwareCtcRecognizer(self.model, engine=self, **options)

    def initial_caches(self) -> list[torch.Tensor]:
        return list(self.model.encoder.get_initial_cache_state(1, device=self.device))

    def step(self, chunk: torch.Tensor, drop: int, last: bool, caches: list) -> tuple[torch.Tensor, list]:
        """CTC log-probs (frames, labels) of one chunk of features (bands, frames), and the new
        caches. Streams whose steps agree in shape (chunk frames, frames dropped, last or not) are
        batched; their caches may be filled to different lengths (NeMo masks each one's own)."""
        key = (chunk.shape[1], drop, last)
        return self.batcher.call(key, (chunk, drop, last, caches))

    def onnx_step(self, chunk: np.ndarray, caches: list[np.ndarray]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """A steady-state step through the ONNX export (batch-first caches), batched like `step`."""
        return self.onnx_batcher.call(chunk.shape[1], (chunk, caches))

    def _onnx_batch(self, requests: list) -> list:
        n = len(requests)
        log_probs, lengths, *new = self.onnx_session.run(None, {
            "audio_signal": np.stack([c for c, _ in requests]),
            "length": np.full(n, requests[0][0].shape[1], np.int64),
            "cache_last_channel": np.concatenate([k[0] for _, k in requests]),
            "cache_last_time": np.concatenate([k[1] for _, k in requests]),
            "cache_last_channel_len": np.concatenate([k[2] for _, k in requests])})
        return [(torch.from_numpy(log_probs[b, : int(lengths[b])].copy()), [x[b : b + 1].copy() for x in new])
                for b in range(n)]

    def _step_batch(self, requests: list) -> list:
        _, drop, last, _ = requests[0]
        steady = drop == self.cfg.drop_extra_pre_encoded
        with (self._model_lock.shared() if steady else self._model_lock.exclusive()), torch.inference_mode():
            chunks = torch.stack([r[0] for r in requests]).to(self.device)
            caches = [torch.cat([r[3][i] for r in requests], dim) for i, dim in ((0, 1), (1, 1), (2, 0))]
            encoded, lengths, *new = self.model.encoder.cache_aware_stream_step(
                processed_signal=chunks,
                processed_signal_length=torch.full((len(requests),), chunks.shape[2], device=self.device),
                cache_last_channel=caches[0], cache_last_time=caches[1], cache_last_channel_len=caches[2],
                keep_all_outputs=last, drop_extra_pre_encoded=None if steady else drop)
            log_probs = self.head(encoder_output=encoded)
        out = []
        for b in range(len(requests)):
            step_caches = [new[0][:, b : b + 1].clone(), new[1][:, b : b + 1].clone(), new[2][b : b + 1].clone()]
            out.append((log_probs[b, : int(lengths[b])].float().cpu(), step_caches))
        return out


class TorchCacheAwareSteps:
    """One stream's encoder caches, stepped through the shared engine (PyTorch)."""

    def __init__(self, engine: CacheAwareEngine):
        self.engine = engine
        self.reset()

    def reset(self) -> None:
        self.caches = self.engine.initial_caches()

    def step(self, chunk: torch.Tensor, drop: int, last: bool) -> torch.Tensor:
        log_probs, self.caches = self.engine.step(chunk, drop, last, self.caches)
        return log_probs


class CacheAwareCtcRecognizer:
    """A cache-aware streaming NeMo CTC model behind the Recognizer interface: one stream's state
    (features, caches, transcript) over a `CacheAwareEngine`."""

    name = "nemo"

    def __init__(self, model, lookahead_ms: float | None = None, runtime: str = "torch", endpoint_s: float = 0.8,
                 max_utterance_s: float = 20.0, threads: int | None = None, keep_log_probs: bool = False,
                 restart_at_endpoints: bool = True, engine: CacheAwareEngine | None = None):
        engine = engine or CacheAwareEngine(model, lookahead_ms=lookahead_ms, runtime=runtime, endpoint_s=endpoint_s,
                                            max_utterance_s=max_utterance_s, threads=threads)
        self.engine = engine
        self.model = engine.model
        self.keep_log_probs = keep_log_probs  # for tests: every step's CTC log-probs
        # Models are trained on single utterances, each starting from empty caches; carrying
        # one utterance's context into the next after a pause is out of their training (on a
        # stream of 40 AN4 test clips the AN4 model's WER was 41 % without restarts, 31 % with
        # them, 30 % clip by clip). So the encoder starts afresh at each endpoint.
        self.restart_at_endpoints = restart_at_endpoints
        self.frame_s, self.lookaheads_ms = engine.frame_s, engine.lookaheads_ms
        self.cfg, self.context, self.lookahead_ms = engine.cfg, engine.context, engine.lookahead_ms
        self.latency_s, self.runtime = engine.latency_s, engine.runtime
        self.steps = TorchCacheAwareSteps(engine)
        if engine.onnx_session is not None:
            from asr_stream.recognizers.nemo_onnx import OnnxCacheAwareSteps

            self.steps = OnnxCacheAwareSteps(engine.onnx_step, self.steps)
        self.transcript = CtcTranscript(engine.vocabulary, self.frame_s, endpoint_s=engine.endpoint_s,
                                        max_utterance_s=engine.max_utterance_s)
        self.features = StreamingFeatures(self.model.preprocessor)
        self.step_times: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.reset()

    def reset(self) -> None:
        self.features.reset()
        self.transcript.reset()
        self.steps.reset()
        self._clear_features()
        self.step_times.clear()
        self.log_probs: list[torch.Tensor] | None = [] if self.keep_log_probs else None

    def _clear_features(self) -> None:
        self.feats = torch.zeros(self.features.pre.featurizer.nfilt, 0)
        self.feats_start = 0  # absolute feature frame of self.feats[:, 0]
        self.consumed = 0  # feature frames the encoder has taken
        self.fresh = True  # the next step is an encoder's first (no caches yet)

    def accept_waveform(self, samples: np.ndarray) -> None:
        self.features.push(samples)

    def state_size(self) -> dict[str, int]:
        """Per-stream state that could grow with the session (tests check it stays bounded);
        `step_times` is a fixed-size window of the latest steps."""
        return {"feature_frames": int(self.feats.shape[1]), "feature_audio_samples": self.features.held_samples(),
                "utterance_tokens": len(self.transcript.tokens)}

    def _add_features(self, frames: torch.Tensor) -> None:
        if frames.shape[1]:
            self.feats = torch.cat([self.feats, frames], 1)

    def _chunk_size(self) -> int:
        return self.cfg.chunk_size[0] if self.fresh else self.cfg.chunk_size[1]

    def decode(self) -> list[Hypothesis]:
        if self.features.available() >= self.consumed + self._chunk_size() > self.feats_start + self.feats.shape[1]:
            self._add_features(self.features.frames())  # only when a step can run: one preprocessor call per step
        out = []
        while self.feats_start + self.feats.shape[1] >= self.consumed + self._chunk_size():
            out += self._step(self._chunk_size(), last=False)
        return out

    def finish(self) -> list[Hypothesis]:
        self._add_features(self.features.finish())
        out = []
        while self.feats_start + self.feats.shape[1] > self.consumed:
            size = self._chunk_size()
            out += self._step(size, last=self.feats_start + self.feats.shape[1] <= self.consumed + size)
        out += self.transcript.close()
        self.features.reset()
        self.steps.reset()
        self._clear_features()
        return out

    def _step(self, size: int, last: bool) -> list[Hypothesis]:
        started = time.perf_counter()
        if self.fresh:
            lo, drop = self.consumed, 0
        else:
            lo, drop = self.consumed - self.cfg.pre_encode_cache_size[1], self.cfg.drop_extra_pre_encoded
        log_probs = self.steps.step(self._feature_window(lo, self.consumed + size), drop, last)
        self.consumed += size
        self.fresh = False
        keep = self.consumed - self.cfg.pre_encode_cache_size[1] - self.feats_start
        if keep > 0:
            self.feats = self.feats[:, keep:]
            self.feats_start += keep
        if self.log_probs is not None:
            self.log_probs.append(log_probs)
        out = self.transcript.add(log_probs)
        endpoint = self.transcript.decoder.blank_run >= self.transcript.endpoint_frames
        if self.restart_at_endpoints and endpoint and any(h.final for h in out) and not last:
            self._restart_encoder()
        self.step_times.append(time.perf_counter() - started)
        return out

    def _restart_encoder(self) -> None:
        """Empty caches, as at the start of a stream. A first chunk is shorter than the others
        (chunk_size[0] < chunk_size[1]) yet yields as many frames, so the pause's next few
        feature frames are skipped: encoder frames stay on the same time grid."""
        self.steps.reset()
        self.consumed += self.cfg.chunk_size[1] - self.cfg.chunk_size[0]
        self.fresh = True

    def _feature_window(self, lo: int, hi: int) -> torch.Tensor:
        """Feature frames [lo, hi), zeros before the stream's start."""
        hi = min(hi, self.feats_start + self.feats.shape[1])
        pad = max(0, -lo)
        window = self.feats[:, max(lo, 0) - self.feats_start:hi - self.feats_start]
        if pad:
            window = torch.cat([window.new_zeros(window.shape[0], pad), window], 1)
        return window
