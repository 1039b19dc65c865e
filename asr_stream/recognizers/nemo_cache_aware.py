"""Cache-aware streaming for NeMo models trained with limited right context (`att_context_size`).

The encoder runs one chunk at a time and carries its attention and convolution caches, so each
step costs the same however long the session is. Log-mel features come chunk by chunk from the
live signal (`StreamingFeatures`, equal to the offline preprocessor's), and each step's CTC
frames go straight to the incremental greedy decoder (`CtcTranscript`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.recognizers.ctc_decoding import CtcTranscript, Vocabulary
from asr_stream.recognizers.nemo_features import StreamingFeatures, module_device
from asr_stream.recognizers.nemo_model import ctc_head
from asr_stream.stages import Hypothesis

RUNTIMES = ("torch", "onnx", "onnx-int8")


def is_cache_aware(model) -> bool:
    """Trained with limited attention context, so it can stream with caches."""
    enc = model.encoder
    return hasattr(enc, "cache_aware_stream_step") and getattr(enc, "att_context_style", None) in (
        "chunked_limited", "regular") and any(c[1] >= 0 for c in _contexts(enc))


def _contexts(enc) -> list[list[int]]:
    return [list(c) for c in getattr(enc, "att_context_size_all", None) or [enc.att_context_size]]


class TorchCacheAwareSteps:
    """Encoder + CTC head steps in PyTorch, through NeMo's `cache_aware_stream_step`."""

    def __init__(self, model):
        self.model = model
        self.head = ctc_head(model)
        self.device = module_device(model.encoder)
        self.reset()

    def reset(self) -> None:
        self.caches = list(self.model.encoder.get_initial_cache_state(1, device=self.device))

    def step(self, chunk: torch.Tensor, drop: int, last: bool) -> torch.Tensor:
        """CTC log-probs (frames, labels) of one chunk of features (bands, frames)."""
        with torch.inference_mode():
            encoded, lengths, *caches = self.model.encoder.cache_aware_stream_step(
                processed_signal=chunk[None].to(self.device),
                processed_signal_length=torch.tensor([chunk.shape[1]], device=self.device),
                cache_last_channel=self.caches[0], cache_last_time=self.caches[1],
                cache_last_channel_len=self.caches[2], keep_all_outputs=last, drop_extra_pre_encoded=drop)
            log_probs = self.head(encoder_output=encoded[..., :int(lengths[0])])[0]
        self.caches = caches
        return log_probs.float().cpu()


class CacheAwareCtcRecognizer:
    """A cache-aware streaming NeMo CTC model behind the Recognizer interface."""

    name = "nemo"

    def __init__(self, model, lookahead_ms: float | None = None, runtime: str = "torch", endpoint_s: float = 0.8,
                 max_utterance_s: float = 20.0, threads: int | None = None, keep_log_probs: bool = False,
                 restart_at_endpoints: bool = True):
        if threads:
            torch.set_num_threads(threads)
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime {runtime}: use one of {', '.join(RUNTIMES)}")
        if not is_cache_aware(model):
            raise UserError("this NeMo model has full attention context: it streams in buffered mode "
                            "(--streaming buffered), not cache-aware")
        self.model = model
        self.keep_log_probs = keep_log_probs  # for tests: every step's CTC log-probs
        # Models are trained on single utterances, each starting from empty caches; carrying
        # one utterance's context into the next after a pause is out of their training (on a
        # stream of 40 AN4 test clips the AN4 model's WER was 41 % without restarts, 31 % with
        # them, 30 % clip by clip). So the encoder starts afresh at each endpoint.
        self.restart_at_endpoints = restart_at_endpoints
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
        enc.set_default_att_context_size(context)
        enc.setup_streaming_params()
        self.cfg = enc.streaming_cfg
        self.context = context
        self.lookahead_ms = round(context[1] * self.frame_s * 1000)
        # algorithmic latency: a chunk's first frame waits for the whole chunk (its own frames and
        # the look-ahead), and the chunk's last feature frame for half an FFT window of audio
        featurizer = model.preprocessor.featurizer
        self.latency_s = (self.cfg.chunk_size[1] * featurizer.hop_length + featurizer.n_fft // 2) / SAMPLE_RATE
        self.runtime = runtime
        self.steps = TorchCacheAwareSteps(model)
        if runtime.startswith("onnx"):
            from asr_stream.recognizers.nemo_onnx import OnnxCacheAwareSteps

            self.steps = OnnxCacheAwareSteps(model, context, self.steps, threads=threads or 1,
                                             int8=runtime == "onnx-int8")
        head = ctc_head(model)
        self.transcript = CtcTranscript(Vocabulary(list(head.vocabulary), getattr(model, "tokenizer", None)),
                                        self.frame_s, endpoint_s=endpoint_s, max_utterance_s=max_utterance_s)
        self.features = StreamingFeatures(model.preprocessor)
        self.reset()

    def reset(self) -> None:
        self.features.reset()
        self.transcript.reset()
        self.steps.reset()
        self._clear_features()
        self.step_times: list[float] = []
        self.log_probs: list[torch.Tensor] | None = [] if self.keep_log_probs else None

    def _clear_features(self) -> None:
        self.feats = torch.zeros(self.features.pre.featurizer.nfilt, 0)
        self.feats_start = 0  # absolute feature frame of self.feats[:, 0]
        self.consumed = 0  # feature frames the encoder has taken
        self.fresh = True  # the next step is an encoder's first (no caches yet)

    def accept_waveform(self, samples: np.ndarray) -> None:
        self._add_features(self.features.push(samples))

    def _add_features(self, frames: torch.Tensor) -> None:
        if frames.shape[1]:
            self.feats = torch.cat([self.feats, frames], 1)

    def _chunk_size(self) -> int:
        return self.cfg.chunk_size[0] if self.fresh else self.cfg.chunk_size[1]

    def decode(self) -> list[Hypothesis]:
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
