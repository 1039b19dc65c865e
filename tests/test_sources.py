"""File and stdin sources: any rate, channel count and sample format becomes 16 kHz mono."""

import io

import numpy as np
import pytest
import soundfile as sf

from asr_stream.errors import UserError
from asr_stream.io.framer import Framer
from asr_stream.io.ring_buffer import RingBuffer
from asr_stream.io.sources import FileSource, RawStdinSource


def _capture(source) -> np.ndarray:
    ring = RingBuffer(source.sample_rate * 2)
    framer = Framer(ring, source.sample_rate, 160)
    source.start(ring)
    hops = []
    while not framer.finished:
        hops += framer.hops(timeout=0.05)
    source.join(1)
    assert source.error is None
    return np.concatenate([h.samples for h in hops])


def _tone(sr, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("sr,channels,subtype,fmt", [
    (8000, 1, "PCM_16", "WAV"), (44100, 2, "PCM_24", "WAV"), (48000, 6, "FLOAT", "WAV"),
    (16000, 1, "PCM_16", "FLAC"), (22050, 2, "VORBIS", "OGG")])
def test_file_source_gives_16k_mono(tmp_path, sr, channels, subtype, fmt):
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, _tone(sr, 1.0, channels), sr, subtype=subtype, format=fmt)
    y = _capture(FileSource(path))
    assert abs(len(y) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(y[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 300) < 5


def test_file_source_reads_in_blocks_not_whole(tmp_path):
    # a long file is streamed: the ring buffer (2 s) is far smaller than the file (30 s)
    path = tmp_path / "long.wav"
    sf.write(path, _tone(16000, 30.0), 16000)
    y = _capture(FileSource(path))
    assert len(y) == 30 * 16000


@pytest.mark.parametrize("fmt,dtype,scale", [("s16le", "<i2", 32767), ("f32le", "<f4", 1.0)])
def test_raw_stdin_source(fmt, dtype, scale):
    x = _tone(16000, 0.5, channels=2)
    raw = (x * scale).astype(dtype).tobytes()
    y = _capture(RawStdinSource(16000, fmt, channels=2, stream=io.BytesIO(raw)))
    assert len(y) == 8000
    assert np.abs(y - x[:, 0]).max() < 1e-3


def _file(folder, name, content: bytes):
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.wav", "not found"),
    (lambda d: d, "directory"),
    (lambda d: _file(d, "empty.wav", b""), "unsupported or corrupt"),
    (lambda d: _file(d, "notes.txt", b"hello, this is text"), "unsupported or corrupt"),
    (lambda d: _file(d, "garbage.wav", b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), "unsupported or corrupt"),
])
def test_bad_files_are_user_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        FileSource(make(tmp_path))


def test_zero_length_wav_is_empty_error(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="no audio"):
        FileSource(path)


def test_real_speech_survives_resampling(tmp_path):
    # the shipped LJSpeech clip is 22.05 kHz: the stream equals an offline resample
    from conftest import demo_clip

    wav, _ = demo_clip()
    y = _capture(FileSource(wav))
    import julius
    import torch

    x, sr = sf.read(str(wav), dtype="float32")
    ref = julius.resample_frac(torch.from_numpy(x), sr, 16000, full=True).numpy()
    assert len(y) == len(ref)
    assert np.abs(y[500:-500] - ref[500:-500]).max() < 1e-4
