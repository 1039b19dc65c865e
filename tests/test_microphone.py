"""End-to-end microphone tests through a real PortAudio stream, on a virtual microphone.

A private PulseAudio server (tests/virtual_mic.py) provides a null sink whose monitor is the
default source; `asr-stream --mode microphone` runs as a separate process against it, and real
speech is played into the sink with `paplay` once the process is recording. No mocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHARED, wer
from virtual_mic import VirtualMic

pytestmark = pytest.mark.microphone

SR = 16000
FIRST_BLOCK_WAIT_S = 2.5  # first captured block comes 1.3-1.7 s after the stream opens; earlier audio is lost
LEAD_SILENCE_S = 0.5
GAP_S = 1.0
MAX_WER = 0.35
HANG_TIMEOUT_S = 180  # only to avoid hangs; not a timing assertion


def shipped_clips() -> dict[str, tuple[Path, str]]:
    """English clips with transcripts shipped by pytest-audioeval (a namespace package: no __file__)."""
    from importlib.resources import files

    try:
        folder = files("pytest_audioeval") / "samples" / "audio" / "en"
    except ModuleNotFoundError:
        pytest.skip("pytest-audioeval is not installed")
    return {Path(str(wav)).stem: (Path(str(wav)), Path(str(wav)).with_suffix(".txt").read_text().strip())
            for wav in folder.iterdir() if wav.name.endswith(".wav")}


def asr_stream_cmd() -> list[str]:
    script = Path(sys.executable).with_name("asr-stream")
    return [str(script)] if script.exists() else [sys.executable, "-m", "asr_stream"]


@pytest.fixture
def vmic():
    with VirtualMic() as mic:
        yield mic


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, str, float]:
    """Two shipped clips with a 1 s gap (and a short silent lead-in) in one 16 kHz mono wav.
    (Not `counting`: EnglishTextNormalizer turns its spoken "one two three ..." into "12345678910".)"""
    clips = shipped_clips()
    chosen = [clips[name] for name in ("quick_brown_fox", "hello_world") if name in clips]
    if not chosen:
        pytest.skip("pytest-audioeval ships no English speech clips")
    parts = [np.zeros(int(LEAD_SILENCE_S * SR), np.float32)]
    for wav, _ in chosen:
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        assert sr == SR, f"{wav} is {sr} Hz"
        parts += [x.mean(axis=1), np.zeros(int(GAP_S * SR), np.float32)]
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    sf.write(str(path), audio, SR, subtype="PCM_16")
    return path, " ".join(text for _, text in chosen), len(audio) / SR


def transcribe_live(vmic: VirtualMic, speech, tmp_path: Path, *extra: str) -> tuple[str, dict]:
    """Run asr-stream on the virtual microphone while the speech plays; returns (stdout, summary)."""
    wav, _, duration = speech
    stats = tmp_path / "stats.json"
    max_seconds = FIRST_BLOCK_WAIT_S + duration + 6.0
    proc = subprocess.Popen(
        [*asr_stream_cmd(), "--mode", "microphone", "--max-seconds", f"{max_seconds:.1f}",
         "--stats-json", str(stats), *extra],
        env=vmic.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        recording = vmic.wait_for_recording(timeout=HANG_TIMEOUT_S, proc=proc)
        if recording:
            time.sleep(FIRST_BLOCK_WAIT_S)
            vmic.play(wav)
        out, err = proc.communicate(timeout=HANG_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert recording, f"asr-stream never opened a recording stream (rc {proc.returncode}):\n{err}"
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{err}"
    assert "Traceback" not in err, err
    return out, json.loads(stats.read_text())


def check_transcript(out: str, summary: dict, reference: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    hypothesis = " ".join(lines)
    score = wer([reference], [hypothesis])
    assert score < MAX_WER, f"WER {score:.2f}\nref: {reference}\nhyp: {hypothesis}\nsummary: {summary}"
    assert summary["dropped_frames"] == 0, summary
    assert summary["audio_seconds"] > 0, summary


def test_microphone_sounddevice(vmic, speech, tmp_path):
    out, summary = transcribe_live(vmic, speech, tmp_path, "--denoiser", "none")
    check_transcript(out, summary, speech[1])


def test_microphone_pyaudio(vmic, speech, tmp_path):
    out, summary = transcribe_live(vmic, speech, tmp_path, "--denoiser", "none", "--audio-backend", "pyaudio")
    check_transcript(out, summary, speech[1])


def test_microphone_default_denoiser(vmic, speech, tmp_path):
    out, summary = transcribe_live(vmic, speech, tmp_path)
    assert summary["denoiser"] != "none", summary
    check_transcript(out, summary, speech[1])


DEMUCS_CHECKPOINT = SHARED / "data" / "models" / "demucs_valentini_light32.th"


@pytest.mark.skipif(not DEMUCS_CHECKPOINT.is_file(), reason="../shared Demucs checkpoint is absent")
def test_microphone_demucs(vmic, speech, tmp_path):
    """The real trained Demucs as the live denoiser, 16 ms hops, on the live microphone."""
    out, summary = transcribe_live(vmic, speech, tmp_path, "--denoiser", str(DEMUCS_CHECKPOINT))
    assert summary["denoiser"] == DEMUCS_CHECKPOINT.stem, summary
    check_transcript(out, summary, speech[1])


def test_list_devices_and_unknown_device(vmic):
    listed = subprocess.run([*asr_stream_cmd(), "--list-devices"], env=vmic.env, cwd=REPO,
                            capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert listed.returncode == 0, listed.stderr
    devices = [line for line in listed.stdout.splitlines() if line.strip()]
    assert devices and "no input devices" not in listed.stdout, listed.stdout
    assert all(line.split()[0].isdigit() for line in devices), listed.stdout

    bad = subprocess.run([*asr_stream_cmd(), "--mode", "microphone", "--denoiser", "none",
                          "--input-device", "no-such-device-xyz"],
                         env=vmic.env, cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert bad.returncode == 2, bad.stderr
    err = bad.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asr-stream: error:"), bad.stderr
    assert "no-such-device-xyz" in err[0]
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_no_microphone(tmp_path, backend):
    """No sound server and no sound card: a one-line error and exit code 2."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(tmp_path), PULSE_SERVER=f"unix:{tmp_path}/no-such-socket")
    if Path("/proc/asound/cards").exists() and "no soundcards" not in Path("/proc/asound/cards").read_text():
        pytest.skip("this machine has an ALSA sound card, so there is a microphone after all")
    result = subprocess.run([*asr_stream_cmd(), "--mode", "microphone", "--denoiser", "none",
                             "--audio-backend", backend, "--max-seconds", "5"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT_S)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asr-stream: error:"), result.stderr
    assert "microphone" in err[0] or "input device" in err[0], err[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
