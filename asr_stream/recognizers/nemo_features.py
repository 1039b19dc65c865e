"""Log-mel features for NeMo models from the live signal, never from the whole file at once."""

from __future__ import annotations

import numpy as np
import torch

from asr_stream.errors import UserError


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
        self.device = module_device(preprocessor)
        self.hop = feat.hop_length
        self.half = feat.n_fft // 2
        self.left = self.hop * -(-(self.half + 1) // self.hop)
        self.reset()

    def reset(self) -> None:
        self.audio = np.zeros(self.left, np.float32)  # zeros before the start, as the offline pass pads
        self.audio_start = -self.left  # absolute index of self.audio[0]
        self.n_samples = 0
        self.next_frame = 0
        self._arrived: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        """Keep the samples; frames are made when asked for (`frames`), so that a caller who
        needs a chunk of them every few pushes runs the preprocessor once per chunk, not once
        per push: its fixed cost per call is what a live session's 20 ms pieces pay."""
        if len(samples):
            self._arrived.append(np.array(samples, np.float32))  # a copy: the caller may reuse its buffer
            self.n_samples += len(samples)

    def held_samples(self) -> int:
        """Audio kept for frames not made yet (bounded while the caller asks for frames)."""
        return len(self.audio) + sum(len(a) for a in self._arrived)

    def available(self) -> int:
        """Frames whose window has fully arrived (made or not)."""
        return max(0, (self.n_samples - self.half) // self.hop + 1)

    def frames(self) -> torch.Tensor:
        """The frames not yet returned whose window has fully arrived."""
        return self._frames(self.available())

    def finish(self) -> torch.Tensor:
        """The last frames, over the zero padding the offline pass adds at the end."""
        self._arrived.append(np.zeros(self.half, np.float32))
        return self._frames(self.n_samples // self.hop)

    def _frames(self, end: int) -> torch.Tensor:
        if self._arrived:
            self.audio = np.concatenate([self.audio, *self._arrived])
            self._arrived = []
        k0 = self.next_frame
        if end <= k0:
            return torch.zeros(self.pre.featurizer.nfilt, 0)
        lo = k0 * self.hop - self.left - self.audio_start
        hi = (end - 1) * self.hop + self.half - self.audio_start
        window = torch.from_numpy(self.audio[lo:hi])[None].to(self.device)
        with torch.inference_mode():
            feats, _ = self.pre(input_signal=window, length=torch.tensor([window.shape[1]], device=self.device))
        first = self.left // self.hop
        out = feats[0, :, first:first + end - k0].float().cpu()
        self.next_frame = end
        keep = end * self.hop - self.left - self.audio_start
        self.audio = self.audio[keep:]
        self.audio_start += keep
        return out


def module_device(module: torch.nn.Module) -> torch.device:
    """The device a module's weights (or, for a preprocessor, its filter bank) live on."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def window_features(preprocessor, audio: np.ndarray) -> torch.Tensor:
    """Features (bands, frames) of one window of audio, as the model's preprocessor makes them
    for a whole utterance (its own normalisation included, over this window): what buffered
    streaming feeds a full-context model."""
    device = module_device(preprocessor)
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        feats, length = preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]], device=device))
    return feats[0, :, :int(length[0])]

