import julius
import numpy as np
import pytest
import torch

from asr_stream.io.resampler import StreamingResampler


@pytest.mark.parametrize("old,new", [(8000, 16000), (22050, 16000), (44100, 16000), (48000, 16000),
                                     (16000, 48000), (16000, 16000)])
@pytest.mark.parametrize("block", [1, 160, 333, 4096])
def test_blockwise_equals_whole_signal(old, new, block):
    x = np.random.default_rng(1).standard_normal(old).astype(np.float32) * 0.1
    r = StreamingResampler(old, new)
    y = np.concatenate([r.process(x[i : i + block]) for i in range(0, len(x), block)] + [r.flush()])
    ref = julius.resample_frac(torch.from_numpy(x), old, new, full=True).numpy()
    assert len(y) == len(ref)
    edge = 200  # julius pads the ends by replication, the stream by silence
    assert np.abs(y[edge:-edge] - ref[edge:-edge]).max() < 1e-5
