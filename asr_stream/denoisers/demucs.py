"""Demucs, the causal waveform denoiser of Défossez, Synnaeve & Adi (Interspeech 2020), and its
streamer.

The network: the input is divided by its standard deviation, up-sampled by 2 or 4 with a
half-band sinc filter, passed through `depth` strided conv blocks (conv K/S, ReLU, 1x1 conv,
GLU), an LSTM over the deepest frames, and `depth` mirrored blocks (1x1 conv, GLU, transposed
conv K/S, ReLU) each fed the matching encoder output as a skip, then down-sampled back.
Constructor arguments are exactly the hyper-parameters a checkpoint carries, and parameter
names follow the published checkpoints so their state dicts load as they are.

`DemucsStreamer` runs the same network on a live stream without recomputing anything: each
conv keeps the few input samples its next window needs, each transposed conv keeps the
overlapping tail of its last output, the LSTM keeps (h, c). See `StreamingDemucs` below for
the latency and normalisation choices.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asr_stream import SAMPLE_RATE
from asr_stream.errors import UserError

SINC_ZEROS = 56  # zero crossings each side of the half-band interpolation kernel


@functools.lru_cache(maxsize=4)
def halfband_kernel(zeros: int = SINC_ZEROS) -> torch.Tensor:
    """Hann-windowed sinc sampled half-way between input samples: the interpolation filter
    that doubles or halves the rate. Shape (2*zeros,)."""
    window = torch.hann_window(4 * zeros + 1, periodic=False, dtype=torch.float64)[1::2]
    t = (torch.arange(2 * zeros, dtype=torch.float64) - zeros + 0.5) * math.pi
    return (torch.sin(t) / t * window).float()


def _halfway(x: torch.Tensor, zeros: int, later: bool = True) -> torch.Tensor:
    """x interpolated half a sample later (y[m] between x[m] and x[m+1]) or earlier (between
    x[m-1] and x[m]), zeros outside x. A matmul over unfolded windows: several times faster
    than conv1d for one channel."""
    kernel = halfband_kernel(zeros).to(x)
    pad = (zeros - 1, zeros) if later else (zeros, zeros - 1)
    return F.pad(x, pad).unfold(-1, 2 * zeros, 1) @ kernel


def upsample2(x: torch.Tensor, zeros: int = SINC_ZEROS) -> torch.Tensor:
    """Double the rate of (..., time): even outputs are the input, odd ones are interpolated
    half-way (zero beyond both ends)."""
    return torch.stack([x, _halfway(x, zeros)], dim=-1).flatten(-2)


def downsample2(x: torch.Tensor, zeros: int = SINC_ZEROS) -> torch.Tensor:
    """Halve the rate of (..., time): average the even samples with the odd samples
    interpolated onto them."""
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    return 0.5 * (x[..., 0::2] + _halfway(x[..., 1::2], zeros, later=False))


class Bottleneck(nn.Module):
    """Two-layer LSTM over the deepest frames; bidirectional (plus a projection) when the
    model is not causal."""

    def __init__(self, dim: int, bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=2, bidirectional=bidirectional)
        self.linear = nn.Linear(2 * dim, dim) if bidirectional else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (time, batch, dim)
        x, _ = self.lstm(x)
        return self.linear(x) if self.linear is not None else x


class Demucs(nn.Module):
    """The Demucs denoiser; offline `forward` on (batch, chin, time) or (batch, time)."""

    def __init__(self, chin: int = 1, chout: int = 1, hidden: int = 48, depth: int = 5,
                 kernel_size: int = 8, stride: int = 4, causal: bool = True, resample: int = 4,
                 growth: float = 2, max_hidden: int = 10_000, normalize: bool = True,
                 glu: bool = True, rescale: float = 0.1, floor: float = 1e-3,
                 sample_rate: int = 16_000):
        super().__init__()
        if resample not in (1, 2, 4):
            raise ValueError(f"resample must be 1, 2 or 4, not {resample}")
        if kernel_size < stride or stride < 1 or depth < 1:
            raise ValueError(f"need depth >= 1 and kernel_size >= stride >= 1 "
                             f"(got depth {depth}, kernel_size {kernel_size}, stride {stride})")
        self.hparams = dict(chin=chin, chout=chout, hidden=hidden, depth=depth,
                            kernel_size=kernel_size, stride=stride, causal=causal,
                            resample=resample, growth=growth, max_hidden=max_hidden,
                            normalize=normalize, glu=glu, rescale=rescale, floor=floor,
                            sample_rate=sample_rate)
        self.chin, self.chout = chin, chout
        self.depth, self.kernel_size, self.stride = depth, kernel_size, stride
        self.causal, self.resample, self.glu = causal, resample, glu
        self.normalize, self.floor, self.sample_rate = normalize, floor, sample_rate

        widen = 2 if glu else 1
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        ch_in, ch_out, width = chin, chout, hidden
        for level in range(depth):
            self.encoder.append(nn.Sequential(
                nn.Conv1d(ch_in, width, kernel_size, stride), nn.ReLU(),
                nn.Conv1d(width, width * widen, 1), nn.GLU(1) if glu else nn.ReLU()))
            up = [nn.Conv1d(width, width * widen, 1), nn.GLU(1) if glu else nn.ReLU(),
                  nn.ConvTranspose1d(width, ch_out, kernel_size, stride)]
            if level > 0:
                up.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*up))  # decoder[0] is the deepest block
            ch_in = ch_out = width
            width = min(int(growth * width), max_hidden)
        self.lstm = Bottleneck(ch_in, bidirectional=not causal)
        if rescale:
            self._rescale_init(rescale)

    def _rescale_init(self, reference: float) -> None:
        """Scale each conv's initial weights towards std `reference` (arXiv:1911.13254);
        only matters for training from scratch."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                    scale = (m.weight.std() / reference) ** 0.5
                    m.weight /= scale
                    if m.bias is not None:
                        m.bias /= scale

    @property
    def total_stride(self) -> int:
        """Input samples per deepest frame."""
        return self.stride ** self.depth // self.resample

    def valid_length(self, length: int) -> int:
        """Smallest length >= `length` that the conv stack covers without leftovers."""
        n = math.ceil(length * self.resample)
        for _ in range(self.depth):
            n = max(math.ceil((n - self.kernel_size) / self.stride) + 1, 1)
        for _ in range(self.depth):
            n = (n - 1) * self.stride + self.kernel_size
        return int(math.ceil(n / self.resample))

    def input_scale(self, mix: torch.Tensor) -> torch.Tensor:
        """What the input is divided by: the std of its mono mix (per item), plus `floor`."""
        return mix.mean(dim=1, keepdim=True).std(dim=-1, keepdim=True)

    def forward(self, mix: torch.Tensor, std: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoise (batch, chin, time) offline. `std` overrides the normalisation scale
        (the streamer's tests use it to compare like with like)."""
        if mix.dim() == 2:
            mix = mix.unsqueeze(1)
        if not self.normalize:
            std = 1.0
        elif std is None:
            std = self.input_scale(mix)
        x = mix / (self.floor + std) if self.normalize else mix
        length = x.shape[-1]
        x = F.pad(x, (0, self.valid_length(length) - length))
        for _ in range(self.resample // 2):
            x = upsample2(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.lstm(x.permute(2, 0, 1)).permute(1, 2, 0)
        for block in self.decoder:
            skip = skips.pop()
            x = block(x + skip[..., :x.shape[-1]])
        for _ in range(self.resample // 2):
            x = downsample2(x)
        return std * x[..., :length]


def _downsample_reach(resample: int, zeros: int = SINC_ZEROS) -> int:
    """How many network-rate samples past r*n the down-sampler reads to make output sample n."""
    reach = 0
    for _ in range(resample // 2):
        reach = 2 * reach + 2 * zeros - 1
    return reach


def _upsample_needs(p: int, resample: int, zeros: int = SINC_ZEROS) -> int:
    """Index of the last input sample the up-sampler reads to make network-rate sample p."""
    for _ in range(resample // 2):
        p = p // 2 + zeros
    return p


def _window(buf: torch.Tensor, buf_start: int, lo: int, hi: int) -> torch.Tensor:
    """signal[lo:hi] from `buf` holding signal[buf_start:buf_start+len]; zeros elsewhere."""
    out = buf.new_zeros(buf.shape[0], hi - lo)
    a, b = max(lo, buf_start), min(hi, buf_start + buf.shape[1])
    if b > a:
        out[:, a - lo:b - lo] = buf[:, a - buf_start:b - buf_start]
    return out


class RunningScale:
    """Streaming stand-in for the offline normalisation (the input's std).

    The offline pass divides by the std of the whole file, which a live stream does not have
    yet. The reference streamer averages the power seen so far from nothing, so during the
    first, often silent, stretch it divides by a tiny number and the network hears the
    start of speech far louder than it was trained on (PESQ 1.71 streamed against 1.86
    offline on the Valentini pairs). Here the running RMS is blended, in the std domain, with
    a prior level `prior_std` worth `prior_s` seconds: the estimate starts at a typical
    speech level and is the stream's own after a few seconds, whatever its gain (a power-
    domain prior would dominate a quiet stream for minutes). Past `memory_s` the average
    forgets old audio, so a long live session follows a change of speaker or gain.
    """

    def __init__(self, sample_rate: int, prior_std: float = 0.05, prior_s: float = 0.5,
                 memory_s: float = 60.0):
        self.prior_std = prior_std
        self.prior_weight = prior_s * sample_rate
        self.memory = memory_s * sample_rate
        self.reset()

    def reset(self) -> None:
        self.power_sum = 0.0
        self.count = 0

    def update(self, mono: torch.Tensor) -> float:
        self.power_sum += float(torch.sum(mono.double() ** 2))
        self.count += mono.numel()
        if self.count > self.memory:
            self.power_sum *= self.memory / self.count
            self.count = self.memory
        if not self.count:
            return self.prior_std
        rms = math.sqrt(self.power_sum / self.count)
        return (self.prior_weight * self.prior_std + self.count * rms) / (self.prior_weight + self.count)


class Matmul:
    """y = x @ W.T + b on (rows, in) activations, with W held the way the hot loop wants it:
    fp32 (in, out), or int8 per-channel with activations quantised on the fly (fbgemm)
    once `quantize()` is called. A single deep frame reads each weight once, so these
    matmuls are bound by memory bandwidth: int8 reads a quarter of the bytes."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight.detach().contiguous()  # (out, in), kept for quantize()
        self.wt = self.weight.t().contiguous()
        self.bias = None if bias is None else bias.detach().contiguous()
        self.packed = None

    @property
    def size(self) -> int:
        return self.weight.numel()

    def quantize(self) -> None:
        with warnings.catch_warnings():  # torch marks quantised tensors deprecated; fbgemm stays
            warnings.simplefilter("ignore")
            scale = (self.weight.abs().amax(1) / 127).clamp_min(1e-12).double()
            qweight = torch.quantize_per_channel(self.weight, scale, torch.zeros_like(scale, dtype=torch.long),
                                                 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, self.bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        if self.bias is None:
            return torch.mm(x, self.wt)
        return torch.addmm(self.bias, x, self.wt)


class DemucsWeights:
    """A Demucs's weights as plain matmuls, made once per loaded model and shared by its
    streams: the per-hop work is a few dozen small matmuls, and torch's own small-conv kernels
    are several times slower here."""

    def __init__(self, model: Demucs):
        m = model
        self.enc = []
        for block in m.encoder:
            conv, pointwise = block[0], block[2]
            self.enc.append((Matmul(conv.weight.flatten(1), conv.bias),
                             Matmul(pointwise.weight[..., 0], pointwise.bias)))
        self.taps = -(-m.kernel_size // m.stride)  # output blocks of S samples each frame touches
        self.dec = []  # self.dec[i-1] is the block that turns level i into level i-1
        for block in reversed(m.decoder):
            pointwise, tconv = block[0], block[2]
            w = F.pad(tconv.weight.detach(), (0, self.taps * m.stride - m.kernel_size))  # (in, out, taps*S)
            w = w.permute(0, 2, 1).reshape(w.shape[0], -1)  # (in, [tap, s, out])
            self.dec.append((Matmul(pointwise.weight[..., 0], pointwise.bias), Matmul(w.t()),
                             tconv.bias.detach()))
        lstm = m.lstm.lstm
        self.lstm_w = []
        for layer in range(lstm.num_layers):
            bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            self.lstm_w.append((Matmul(getattr(lstm, f"weight_ih_l{layer}"), bias),
                                Matmul(getattr(lstm, f"weight_hh_l{layer}"))))

    def matmuls(self) -> list[Matmul]:
        return ([mm for pair in self.enc for mm in pair] + [mm for *pair, _ in self.dec for mm in pair]
                + [mm for pair in self.lstm_w for mm in pair])

    def quantize(self, min_size: int = 1 << 16) -> None:
        """int8 weights for every matmul of at least `min_size` weights (the deep layers and
        the LSTM); the small shallow ones stay fp32, where int8 would buy nothing."""
        for mm in self.matmuls():
            if mm.size >= min_size:
                mm.quantize()


class DemucsStreamer:
    """Stateful streaming Demucs: feed any number of samples, get back every output sample
    that is ready, aligned with the input (output sample n is the denoised input sample n).

    Nothing is computed twice: each encoder conv keeps the input its next window needs,
    each decoder's transposed conv keeps its overlapping tail, the LSTM keeps (h, c), and
    the half-band resamplers read short windows of history. Activations are time-major
    (frames, channels): the skinny matmuls of the deep layers run about twice as fast
    that way on CPU.

    Latency: the deepest frame t reads network-rate samples up to S**depth*t + R, R the
    conv stack's reach (597 input samples for dns48). The sinc resamplers want more: the
    up-sampler reads 84 input samples further and the down-sampler 83 further still.
    `lookahead=None` waits for all of that, and the output then equals the offline pass
    (to float rounding) at 47.8 ms for dns48. The default, `lookahead=64`, is the reference
    streamer's budget (41.3 ms for dns48): the up-sampler's last taps see zeros instead of
    the 20 samples that have not arrived, and the down-sampler reads the decoder's partial
    sums (every frame but the next one's contribution) past the finished output.
    """

    def __init__(self, model: Demucs, dry: float = 0.0, lookahead: int | None = 64,
                 scale: float | None = None, prior_std: float = 0.05, prior_s: float = 0.5,
                 weights: "DemucsWeights | None" = None):
        if not model.causal:
            raise ValueError("this Demucs has a bidirectional LSTM (causal=False): it cannot stream")
        if model.stride ** model.depth % model.resample:
            raise ValueError("stride**depth must be a multiple of resample to stream")
        if not 0.0 <= dry <= 1.0:
            raise ValueError(f"dry must be between 0 and 1, not {dry}")
        if dry and model.chin != model.chout:
            raise ValueError("dry mixing needs as many output channels as input channels")
        if lookahead is not None and lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, not {lookahead}")
        self.model = model.eval()
        self.dry = float(dry)
        self.lookahead = lookahead
        self.fixed_scale = scale
        self.scale = RunningScale(model.sample_rate, prior_std, prior_s)
        m = model
        self.r, self.S, self.K, self.depth = m.resample, m.stride, m.kernel_size, m.depth
        self.frame_step = m.stride ** m.depth  # network-rate samples per deepest frame
        reach = 1
        for _ in range(m.depth):
            reach = (reach - 1) * m.stride + m.kernel_size
        self.reach = reach
        self.down_reach = _downsample_reach(self.r)
        self.scale_block = max(1, self.frame_step // self.r)  # input samples per scale update
        self.margin = 90 if self.r > 1 else 0  # input-rate history the resampler windows read
        frame_length = math.ceil(reach / self.r)  # == model.valid_length(1)
        if lookahead is None:
            last = _upsample_needs(reach - 1, self.r) + 1
            self.latency_samples = last + math.ceil(self.down_reach / self.r)
        else:
            self.latency_samples = frame_length + int(lookahead)
        self.weights = weights or DemucsWeights(model)  # shared between streams; never written by one
        self.enc, self.dec, self.lstm_w, self.taps = self.weights.enc, self.weights.dec, self.weights.lstm_w, self.weights.taps
        self.reset()

    def matmuls(self) -> list["Matmul"]:
        return self.weights.matmuls()

    def quantize(self, min_size: int = 1 << 16) -> None:
        self.weights.quantize(min_size)

    def reset(self) -> None:
        """Forget the stream: a new session starts from silence."""
        m = self.model
        widths = [conv.weight.shape[0] for conv, _ in self.enc]
        self.n_in = 0
        self.emitted = 0
        self.frames = 0  # deepest frames computed
        self.next_p = 0  # next network-rate input sample to compute
        self.x_raw = torch.zeros(m.chin, 0)
        self.x_norm = torch.zeros(m.chin, 0)
        self.x_start = 0  # absolute index of x_norm[:, 0]
        self.enc_in = [torch.zeros(0, m.chin)] + [torch.zeros(0, w) for w in widths[:-1]]
        self.skip = [torch.zeros(0, w) for w in widths]  # skip[i-1]: level i from the decoder's position
        outs = [m.chout] + widths[:-1]
        self.tails = [torch.zeros(self.K - self.S, c) for c in outs]  # tails[i-1]: level i-1 partial sums
        self.d0 = torch.zeros(0, m.chout)
        self.d0_start = 0
        hidden = m.lstm.lstm.hidden_size
        self.h = [torch.zeros(1, hidden) for _ in self.lstm_w]
        self.c = [torch.zeros(1, hidden) for _ in self.lstm_w]
        self.scale.reset()
        self.current_scale = self.scale.prior_std  # the running scale, updated once per block
        self._block = torch.zeros(0)  # this block's samples so far
        self.out_scale = torch.zeros(0)  # the scale each not yet emitted sample was divided by

    # -- the stream -------------------------------------------------------------------------
    @torch.inference_mode()
    def feed(self, samples: torch.Tensor) -> torch.Tensor:
        """Take (chin, n) input samples; return (chout, k) output samples, k >= 0."""
        samples = torch.as_tensor(samples, dtype=torch.float32)
        if samples.dim() == 1:
            samples = samples[None]
        if samples.shape[0] != self.model.chin:
            raise ValueError(f"expected {self.model.chin} channel(s), got {samples.shape[0]}")
        self._take_input(samples)
        ready = self._frames_ready()
        if ready > self.frames:
            self._run_frames(ready - self.frames)
        finished = self.d0_start + self.d0.shape[0]
        if self.lookahead is None:
            return self._emit(min((finished - 1 - self.down_reach) // self.r + 1, self.n_in), extras=False)
        return self._emit(min(finished // self.r, self.n_in), extras=True)

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """End of stream: finish as the offline pass would on the whole input (zeros past
        its end) and return the rest of the output."""
        if self.n_in == 0:
            return torch.zeros(self.model.chout, 0)
        valid = self.model.valid_length(self.n_in) * self.r
        total = (valid - self.reach) // self.frame_step + 1
        if total > self.frames:
            self._run_frames(total - self.frames, valid // self.r)
        return self._emit(self.n_in, extras=True, final=True)

    def _take_input(self, samples: torch.Tensor) -> None:
        """Normalise by the running scale as it stood at the start of each block of the stream,
        and keep that scale for the output samples: the same input gives the same output
        however it is cut into calls."""
        if not self.model.normalize:
            divisors = torch.ones(samples.shape[1])
        elif self.fixed_scale is not None:
            divisors = torch.full((samples.shape[1],), self.fixed_scale)
        else:
            mono, parts, start = samples.mean(0), [], 0
            while start < mono.shape[0]:
                end = min(mono.shape[0], start + self.scale_block - self._block.shape[0])
                self._block = torch.cat([self._block, mono[start:end]])
                parts.append(torch.full((end - start,), self.current_scale))
                if self._block.shape[0] == self.scale_block:
                    self.current_scale = self.scale.update(self._block)
                    self._block = self._block[:0]
                start = end
            divisors = torch.cat(parts) if parts else torch.zeros(0)
        self.x_raw = torch.cat([self.x_raw, samples], 1)
        self.out_scale = torch.cat([self.out_scale, divisors])
        floor = self.model.floor if self.model.normalize else 0.0
        self.x_norm = torch.cat([self.x_norm, samples / (floor + divisors)], 1)
        self.n_in += samples.shape[1]

    def _frames_ready(self) -> int:
        """How many deepest frames the input received so far allows."""
        if self.lookahead is None:
            # frame t is exact once the up-sampler has every input its last sample reads
            t = (self.n_in * self.r - self.reach) // self.frame_step + 1
            while t > 0 and _upsample_needs(self.frame_step * (t - 1) + self.reach - 1, self.r) >= self.n_in:
                t -= 1
            return max(t, 0)
        usable = (self.n_in - self.lookahead) * self.r
        return max((usable - self.reach) // self.frame_step + 1, 0) if usable >= self.reach else 0

    def _run_frames(self, n: int, valid: int | None = None) -> None:
        end = self.frame_step * (self.frames + n - 1) + self.reach
        x = self._upsampled(self.next_p, end, valid).t()
        self.next_p = end
        self.frames += n
        S, K = self.S, self.K
        for i, (conv, pointwise) in enumerate(self.enc):
            buf = torch.cat([self.enc_in[i], x], 0)
            count = (buf.shape[0] - K) // S + 1
            cols = buf.unfold(0, K, S).reshape(count, -1)  # (frames, [in, K])
            x = _glu_or_relu(pointwise(conv(cols).relu_()), self.model.glu)
            self.enc_in[i] = buf[count * S:]
            self.skip[i] = torch.cat([self.skip[i], x], 0)
        x = self._lstm(x)
        for level in range(self.depth, 0, -1):
            x = self._decode(level, x, self.skip[level - 1][:x.shape[0]], commit=True)
        self.d0 = torch.cat([self.d0, x], 0)

    def _decode(self, level: int, x: torch.Tensor, skip: torch.Tensor, commit: bool) -> torch.Tensor:
        """Decoder block `level` on frames x (+ skip) from its finished position; returns
        level-1 samples from that position. commit=True advances the stream; False only
        looks ahead (the partial sums past the finished output)."""
        pointwise, tconv, tb = self.dec[level - 1]
        n, S = x.shape[0], self.S
        tail = self.tails[level - 1]
        if n:
            y = _glu_or_relu(pointwise(x + skip), self.model.glu)
            cols = tconv(y).view(n, self.taps, S, -1)  # each frame's output, in S-blocks
            out = cols.new_zeros(n + self.taps - 1, S, cols.shape[-1])
            for j in range(self.taps):  # overlap-add
                out[j:j + n] += cols[:, j]
            out = out.view((n + self.taps - 1) * S, -1)[:(n - 1) * S + self.K]
            out[:tail.shape[0]] += tail
            out += tb
        else:
            out = tail + tb
        if commit:
            done = n * S
            self.tails[level - 1] = out[done:] - tb
            self.skip[level - 1] = self.skip[level - 1][n:]
            out = out[:done]
        return out.relu() if level > 1 else out

    def _lstm(self, x: torch.Tensor) -> torch.Tensor:
        """Two LSTM layers over (frames, dim); per-step matmuls, not oneDNN's slow single
        steps. Each layer projects all its inputs at once, then steps the recurrence."""
        for layer, (w_ih, w_hh) in enumerate(self.lstm_w):
            gates_in = w_ih(x)
            h, c = self.h[layer], self.c[layer]
            outs = []
            for t in range(x.shape[0]):
                gates = w_hh(h) + gates_in[t:t + 1]
                i, f, g, o = gates.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            self.h[layer], self.c[layer] = h, c
            x = torch.cat(outs, 0) if len(outs) > 1 else outs[0]
        return x

    def _upsampled(self, lo: int, hi: int, valid: int | None = None) -> torch.Tensor:
        """Network-rate input samples [lo, hi) as (chin, n), zeros past what has arrived.
        `valid` is the padded input length once the stream has ended."""
        if self.r == 1:
            out = _window(self.x_norm, self.x_start, lo, hi)
        else:
            a, b = lo // self.r - self.margin, -(-hi // self.r) + self.margin
            x = upsample2(_window(self.x_norm, self.x_start, a, b))
            if self.r == 4:  # the offline pass sees zeros outside the 2x signal: so must we
                x = upsample2(_zero_outside(x, 2 * a, 0, 2 * valid if valid else None))
            out = x[:, lo - a * self.r:hi - a * self.r]
        keep = hi // self.r - self.margin  # drop history no later window reads
        if keep > self.x_start:
            self.x_norm = self.x_norm[:, keep - self.x_start:]
            self.x_start = keep
        return out

    def _extras(self, final: bool) -> torch.Tensor:
        """The decoder's output past its finished position, from the partial sums every
        level holds (exact at the end of the stream, when no more frames will come)."""
        need = [None] * (self.depth + 1)
        if not final:  # only as much as the down-sampler will read
            want = self.down_reach + self.r
            for level in range(1, self.depth + 1):
                want = max(0, -(-(want - (self.K - self.S)) // self.S))
                need[level] = want
        x = None
        for level in range(self.depth, 0, -1):
            if x is None:
                x = self.tails[level - 1] + self.dec[level - 1][2]
                x = x.relu() if level > 1 else x
                continue
            skip = self.skip[level - 1]
            n = min(x.shape[0], skip.shape[0])
            if need[level] is not None:
                n = min(n, need[level])
            x = self._decode(level, x[:n], skip[:n], commit=False)
        return x

    def _emit(self, end: int, extras: bool, final: bool = False) -> torch.Tensor:
        start = self.emitted
        if end <= start:
            return torch.zeros(self.model.chout, 0)
        d0 = self.d0
        if extras:
            d0 = torch.cat([d0, self._extras(final)], 0)
        d0 = d0.t()
        if self.r == 1:
            y = _window(d0, self.d0_start, start, end)
        else:
            m = self.margin
            y = downsample2(_window(d0, self.d0_start, (start - m) * self.r, (end + m) * self.r))
            if self.r == 4:
                limit = 2 * self.model.valid_length(self.n_in) if final else None
                y = downsample2(_zero_outside(y, (start - m) * 2, 0, limit))
            y = y[:, m:m + end - start]
        if self.model.normalize:
            y = y * self.out_scale[:end - start]
        self.out_scale = self.out_scale[end - start:]
        if self.dry:
            y = self.dry * self.x_raw[:, :end - start] + (1 - self.dry) * y
        self.x_raw = self.x_raw[:, end - start:]
        self.emitted = end
        keep = (end - self.margin) * self.r
        if keep > self.d0_start:
            self.d0 = self.d0[keep - self.d0_start:]
            self.d0_start = keep
        return y


def _zero_outside(x: torch.Tensor, x_start: int, lo: int, hi: int | None) -> torch.Tensor:
    """Zero the samples of (channels, time) x, x[:, 0] being sample x_start, outside [lo, hi)."""
    if x_start < lo:
        x[:, :min(lo - x_start, x.shape[1])] = 0
    if hi is not None and x_start + x.shape[1] > hi:
        x[:, max(hi - x_start, 0):] = 0
    return x


def _glu_or_relu(x: torch.Tensor, glu: bool) -> torch.Tensor:
    """The block activation on (frames, channels)."""
    if glu:
        a, b = x.chunk(2, 1)
        return a * torch.sigmoid(b)
    return x.relu_()


class DemucsEngine:
    """A loaded, streamable Demucs and its stage settings: the checks and the matmul weights
    (int8 if asked) are made once, and every stream (`create_stream()`) shares them."""

    def __init__(self, model: Demucs, name: str = "demucs", hop: int | None = None, dry: float = 0.0,
                 exact: bool = False, int8: bool = False):
        if model.sample_rate != SAMPLE_RATE:
            raise UserError(f"{name}: the model was trained at {model.sample_rate} Hz; the chain runs at "
                            f"{SAMPLE_RATE} Hz")
        if not model.causal:
            raise UserError(f"{name}: a non-causal Demucs (bidirectional LSTM) cannot stream; "
                            f"use a causal checkpoint")
        if model.chin != 1 or model.chout != 1:
            raise UserError(f"{name}: the chain is mono; this model has {model.chin} input and "
                            f"{model.chout} output channels")
        if not 0.0 <= dry <= 1.0:
            raise UserError(f"--dry must be between 0 and 1, got {dry}")
        try:
            weights = DemucsWeights(model)
            DemucsStreamer(model, weights=weights)  # its checks: can this shape stream?
        except ValueError as exc:  # a checkpoint whose shape cannot stream
            raise UserError(f"{name}: {exc}") from None
        step = model.total_stride
        hop = step if hop is None else int(hop)
        if hop < step or hop % step:
            raise UserError(f"--denoise-hop must be a multiple of {step} samples for this model "
                            f"({1000 * step / SAMPLE_RATE:g} ms), got {hop}")
        self.model, self.name, self.hop_size, self.dry, self.exact = model.eval(), name, hop, dry, exact
        self.weights = weights
        if int8:
            self.weights.quantize()

    def create_stream(self) -> "DemucsDenoiser":
        return DemucsDenoiser(engine=self)


class DemucsDenoiser:
    """The pipeline's Demucs stage (see `stages.Denoiser`): numpy hops in and out, one
    `DemucsStreamer` per stream over the engine's shared weights, so separate streams never
    share state."""

    def __init__(self, model: Demucs | None = None, name: str = "demucs", hop: int | None = None, dry: float = 0.0,
                 exact: bool = False, int8: bool = False, engine: DemucsEngine | None = None):
        engine = engine or DemucsEngine(model, name=name, hop=hop, dry=dry, exact=exact, int8=int8)
        self.engine = engine
        self.name, self.hop_size = engine.name, engine.hop_size
        self._model = engine.model
        self.streamer = DemucsStreamer(engine.model, dry=engine.dry, lookahead=None if engine.exact else 64,
                                       weights=engine.weights)
        # a sample may wait for a whole hop before its frame can run
        self.latency_s = (self.streamer.latency_samples + self.hop_size - self.total_stride) / SAMPLE_RATE

    @property
    def total_stride(self) -> int:
        return self._model.total_stride

    @property
    def normalizes(self) -> bool:
        """Whether the model divides its input by the input's std (most checkpoints do)."""
        return bool(self._model.normalize)

    def fix_scale(self, std: float) -> None:
        """Denoise a whole file as the offline pass does: divide by that file's `std` (measured
        beforehand) instead of a running estimate, and wait for the full look-ahead. The output
        then equals the reference implementation's offline output, still hop by hop."""
        self.streamer = DemucsStreamer(self._model, dry=self.engine.dry, lookahead=None, scale=float(std),
                                       weights=self.engine.weights)
        self.latency_s = (self.streamer.latency_samples + self.hop_size - self.total_stride) / SAMPLE_RATE

    def process(self, hop: np.ndarray) -> np.ndarray:
        return self.streamer.feed(torch.from_numpy(np.ascontiguousarray(hop, np.float32))[None])[0].numpy()

    def flush(self) -> np.ndarray:
        return self.streamer.flush()[0].numpy()

    def reset(self) -> None:
        self.streamer.reset()
