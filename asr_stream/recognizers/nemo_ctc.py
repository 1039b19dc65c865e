"""NeMo Conformer-CTC models (`.nemo`) as a streaming recogniser.

Cache-aware streaming (models trained with limited right context, `att_context_size`): the
encoder runs one chunk at a time and carries its attention and convolution caches, so each step
costs the same however long the session is. Log-mel features are computed chunk by chunk from
the live signal (equal to the offline preprocessor's, see `StreamingFeatures`), the CTC head's
frames are decoded greedily as they come (`CtcGreedyDecoder`: state is the last token, nothing
is ever re-decoded), and a run of blanks ends an utterance.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError
from asr_stream.stages import Hypothesis, Word

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


@contextlib.contextmanager
def _quiet_nemo():
    """NeMo logs config dumps and warnings on every restore; users need none of it."""
    from nemo.utils import logging as nemo_logging

    level = nemo_logging.getEffectiveLevel()
    nemo_logging.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nemo_logging.setLevel(level)


def resolve_model_path(spec: str | None) -> str:
    """`spec` is a `.nemo` path, a name in checkpoints/ (with or without `.nemo`), or a NeMo
    pretrained name (downloaded by NeMo into its cache)."""
    if not spec:
        found = sorted(CHECKPOINTS.glob("*.nemo"))
        if len(found) == 1:
            return str(found[0])
        raise UserError("--asr nemo needs --model PATH.nemo (or one .nemo in checkpoints/); "
                        f"found {len(found)} in {CHECKPOINTS}")
    for candidate in (Path(spec), CHECKPOINTS / spec, CHECKPOINTS / f"{spec}.nemo"):
        if candidate.is_file():
            return str(candidate)
    if spec.endswith(".nemo") or os.sep in spec:
        raise UserError(f"NeMo model {spec} does not exist")
    return spec  # a pretrained name


def load_nemo_model(spec: str | None, device: str = "cpu"):
    """Restore a NeMo ASR model; every way this can fail is a one-line UserError."""
    path = resolve_model_path(spec)
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)  # telemetry chatter on import
    try:
        from nemo.collections.asr.models import ASRModel
    except ImportError:
        raise UserError("--asr nemo needs NeMo: pip install -c constraints.txt 'nemo_toolkit[asr]==3.0.0' "
                        "(make install does this)") from None
    with _quiet_nemo():
        if Path(path).is_file():
            if not tarfile.is_tarfile(path):
                raise UserError(f"{path} is not a .nemo file (a .nemo is a tar archive)")
            with tarfile.open(path) as tar:
                if not any(Path(n).name == "model_config.yaml" for n in tar.getnames()):
                    raise UserError(f"{path} has no model_config.yaml: not a NeMo model")
            try:
                model = ASRModel.restore_from(path, map_location=device)
            except Exception as exc:  # NeMo raises anything from hydra/omegaconf/torch here
                raise UserError(f"cannot load NeMo model {path}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        else:
            try:
                model = ASRModel.from_pretrained(path, map_location=device)
            except Exception as exc:
                raise UserError(f"cannot get NeMo pretrained model '{path}' (offline? put the .nemo in "
                                f"checkpoints/): {type(exc).__name__}") from None
    model.eval()
    if ctc_head(model) is None:
        raise UserError(f"{path}: {type(model).__name__} has no CTC head (use a CTC or hybrid RNNT-CTC model)")
    return model


def ctc_head(model):
    """The CTC decoder of a CTC model, or of a hybrid RNNT-CTC model; None otherwise."""
    head = getattr(model, "ctc_decoder", None)
    if head is not None:
        return head
    from nemo.collections.asr.modules import ConvASRDecoder

    return model.decoder if isinstance(getattr(model, "decoder", None), ConvASRDecoder) else None


class StreamingFeatures:
    """The model's own log-mel preprocessor, run on short windows of the live signal.

    The preprocessor centres each frame on a multiple of the hop (zero padding at the ends)
    and pre-emphasises from the first sample, so a window starting `left` samples before a
    frame (a hop multiple covering half the FFT plus one sample) gives exactly the frames the
    whole-file pass gives there. Per-utterance normalisation cannot be streamed: models that
    use it are refused here.
    """

    def __init__(self, preprocessor):
        feat = preprocessor.featurizer
        if feat.normalize not in (None, "NA", "none", False):
            raise UserError(f"the model normalises features per utterance ('{feat.normalize}'): "
                            "cache-aware streaming needs a model trained with normalize: NA")
        self.pre = preprocessor
        self.hop = feat.hop_length
        self.half = feat.n_fft // 2
        self.left = self.hop * -(-(self.half + 1) // self.hop)
        self.reset()

    def reset(self) -> None:
        self.audio = np.zeros(self.left, np.float32)  # zeros before the start, as the offline pass pads
        self.audio_start = -self.left  # absolute index of self.audio[0]
        self.n_samples = 0
        self.next_frame = 0

    def push(self, samples: np.ndarray) -> torch.Tensor:
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
        self.n_samples += len(samples)
        ready = (self.n_samples - self.half) // self.hop + 1  # frames whose window has fully arrived
        return self._frames(ready)

    def finish(self) -> torch.Tensor:
        """The last frames, over the zero padding the offline pass adds at the end."""
        self.audio = np.concatenate([self.audio, np.zeros(self.half, np.float32)])
        return self._frames(self.n_samples // self.hop)

    def _frames(self, end: int) -> torch.Tensor:
        k0 = self.next_frame
        if end <= k0:
            return torch.zeros(self.pre.featurizer.nfilt, 0)
        lo = k0 * self.hop - self.left - self.audio_start
        hi = (end - 1) * self.hop + self.half - self.audio_start
        window = torch.from_numpy(self.audio[lo:hi])[None]
        with torch.inference_mode():
            feats, _ = self.pre(input_signal=window, length=torch.tensor([window.shape[1]]))
        first = self.left // self.hop
        out = feats[0, :, first:first + end - k0].float()
        self.next_frame = end
        keep = end * self.hop - self.left - self.audio_start
        self.audio = self.audio[keep:]
        self.audio_start += keep
        return out


class CtcGreedyDecoder:
    """Greedy CTC over frames as they arrive: a token is emitted when the best label changes
    to a non-blank one. The state is the previous label, so a step costs the same at any point
    of the session."""

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


class CacheAwareCtcRecognizer:
    """A cache-aware streaming NeMo CTC model behind the Recognizer interface."""

    name = "nemo"

    def __init__(self, model, lookahead_ms: float | None = None, endpoint_s: float = 0.8,
                 max_utterance_s: float = 20.0, threads: int | None = None, keep_log_probs: bool = False):
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.keep_log_probs = keep_log_probs  # for tests: every step's CTC log-probs
        enc = model.encoder
        if not hasattr(enc, "cache_aware_stream_step") or getattr(enc, "att_context_style", None) not in (
                "chunked_limited", "regular"):
            raise UserError("this NeMo model is not a cache-aware streaming model (no limited "
                            "attention context); buffered streaming for full-context models is not done yet")
        self.frame_s = enc.subsampling_factor * model.preprocessor.featurizer.hop_length / SAMPLE_RATE
        contexts = [list(c) for c in getattr(enc, "att_context_size_all", [enc.att_context_size])]
        self.lookaheads_ms = {round(c[1] * self.frame_s * 1000): c for c in contexts}
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
        self.lookahead_ms = round(context[1] * self.frame_s * 1000)
        self.head = ctc_head(model)
        vocabulary = list(self.head.vocabulary)
        self.decoder = CtcGreedyDecoder(blank=len(vocabulary))
        self.tokenizer = getattr(model, "tokenizer", None)
        if self.tokenizer is not None:
            pieces = self.tokenizer.ids_to_tokens(list(range(len(vocabulary))))
            self.starts_word = [p.startswith("▁") for p in pieces]
        else:
            self.vocabulary = vocabulary
        self.endpoint_frames = max(1, round(endpoint_s / self.frame_s))
        # speech without a pause must not grow the open utterance (each partial rebuilds its
        # words): past this length it is closed at a word boundary
        self.max_utterance_frames = max(1, round(max_utterance_s / self.frame_s))
        self.features = StreamingFeatures(model.preprocessor)
        self.reset()

    def reset(self) -> None:
        self.features.reset()
        self.decoder.reset()
        self.feats = torch.zeros(self.features.pre.featurizer.nfilt, 0)
        self.feats_start = 0  # absolute feature frame of self.feats[:, 0]
        self.consumed = 0  # feature frames the encoder has taken
        self.out_frames = 0  # encoder frames produced
        self.caches = self.model.encoder.get_initial_cache_state(1)
        self.utterance = 0
        self.tokens: list[tuple[int, int]] = []  # (token, encoder frame) of the open utterance
        self.step_times: list[float] = []
        self.log_probs: list[torch.Tensor] | None = [] if self.keep_log_probs else None

    def accept_waveform(self, samples: np.ndarray) -> None:
        self._add_features(self.features.push(samples))

    def _add_features(self, frames: torch.Tensor) -> None:
        if frames.shape[1]:
            self.feats = torch.cat([self.feats, frames], 1)

    def decode(self) -> list[Hypothesis]:
        out = []
        while True:
            size = self.cfg.chunk_size[0] if self.consumed == 0 else self.cfg.chunk_size[1]
            if self.feats_start + self.feats.shape[1] < self.consumed + size:
                return out
            out += self._step(size, last=False)

    def finish(self) -> list[Hypothesis]:
        self._add_features(self.features.finish())
        out = []
        while self.feats_start + self.feats.shape[1] > self.consumed:
            size = self.cfg.chunk_size[0] if self.consumed == 0 else self.cfg.chunk_size[1]
            last = self.feats_start + self.feats.shape[1] <= self.consumed + size
            out += self._step(size, last=last)
        out += self._close()
        self.features.reset()
        self.feats = torch.zeros(self.features.pre.featurizer.nfilt, 0)
        self.feats_start = self.consumed = 0
        return out

    def _step(self, size: int, last: bool) -> list[Hypothesis]:
        started = time.perf_counter()
        enc = self.model.encoder
        if self.consumed == 0:
            lo, drop = 0, 0
        else:
            lo, drop = self.consumed - self.cfg.pre_encode_cache_size[1], self.cfg.drop_extra_pre_encoded
        chunk = self._feature_window(lo, self.consumed + size)
        with torch.inference_mode():
            encoded, lengths, *caches = enc.cache_aware_stream_step(
                processed_signal=chunk[None], processed_signal_length=torch.tensor([chunk.shape[1]]),
                cache_last_channel=self.caches[0], cache_last_time=self.caches[1],
                cache_last_channel_len=self.caches[2], keep_all_outputs=last, drop_extra_pre_encoded=drop)
            log_probs = self.head(encoder_output=encoded[..., :int(lengths[0])])[0]
        self.caches = caches
        self.consumed += size
        keep = self.consumed - self.cfg.pre_encode_cache_size[1] - self.feats_start
        if keep > 0:
            self.feats = self.feats[:, keep:]
            self.feats_start += keep
        first = self.out_frames
        self.out_frames += log_probs.shape[0]
        new = self.decoder.step(log_probs, first)
        if self.log_probs is not None:
            self.log_probs.append(log_probs)
        self.step_times.append(time.perf_counter() - started)
        self.tokens += new
        if self.tokens and self.decoder.blank_run >= self.endpoint_frames:
            return self._close()
        if self.tokens and self.tokens[-1][1] - self.tokens[0][1] >= self.max_utterance_frames:
            return self._close(keep_last_word=True)
        return [self._hypothesis(final=False)] if new else []

    def _feature_window(self, lo: int, hi: int) -> torch.Tensor:
        """Feature frames [lo, hi), zeros before the stream's start."""
        hi = min(hi, self.feats_start + self.feats.shape[1])
        pad = max(0, -lo)
        window = self.feats[:, max(lo, 0) - self.feats_start:hi - self.feats_start]
        if pad:
            window = torch.cat([window.new_zeros(window.shape[0], pad), window], 1)
        return window

    def _close(self, keep_last_word: bool = False) -> list[Hypothesis]:
        """Finalise the open utterance; with keep_last_word, the last (maybe unfinished) word
        starts the next one."""
        carry = []
        if keep_last_word:
            starts = [i for i, (token, _) in enumerate(self.tokens) if self._starts_word(token)]
            if starts and starts[-1] > 0:
                carry = self.tokens[starts[-1]:]
                self.tokens = self.tokens[:starts[-1]]
        if not self.tokens:
            self.tokens = carry
            return []
        hyp = self._hypothesis(final=True)
        self.tokens = carry
        self.utterance += 1
        return [hyp]

    def _starts_word(self, token: int) -> bool:
        if self.tokenizer is not None:
            return self.starts_word[token]
        return self.vocabulary[token] == " "

    def _hypothesis(self, final: bool) -> Hypothesis:
        words = self._words()
        stable = len(words) if final else max(len(words) - 1, 0)  # the last word may still grow
        return Hypothesis(self.utterance, tuple(words), stable, final, time.monotonic())

    def _words(self) -> list[Word]:
        groups: list[list[tuple[int, int]]] = []
        for token, frame in self.tokens:
            if self.tokenizer is not None:
                new_word = self.starts_word[token] or not groups
            else:
                if self.vocabulary[token] == " ":
                    groups.append([])
                    continue
                new_word = not groups
            if new_word:
                groups.append([])
            groups[-1].append((token, frame))
        words = []
        for group in groups:
            if not group:
                continue
            ids = [t for t, _ in group]
            text = (self.tokenizer.ids_to_text(ids) if self.tokenizer is not None
                    else "".join(self.vocabulary[t] for t in ids)).strip()
            if text:
                words.append(Word(text, group[0][1] * self.frame_s, (group[-1][1] + 1) * self.frame_s))
        return words
