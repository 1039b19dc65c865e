"""`asr-stream serve --wyoming`: the Wyoming STT protocol over a real TCP socket on 127.0.0.1,
spoken by the `wyoming` library's own client as Home Assistant speaks it (describe; transcribe,
audio-start, 16-bit chunks, audio-stop; transcript), with streamed transcript chunks."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import audioeval_clips, concat_with_gaps, demo_clip, load_16k, run_cli, wer
from daemon import Daemon, run_session
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

CHUNK_S = 0.064  # Home Assistant sends 1024-sample chunks at 16 kHz


@pytest.fixture(scope="module")
def daemon():
    with Daemon("--denoiser", "none", "--no-warm-up", "--max-sessions", "2", "--wyoming", "tcp://127.0.0.1:0") as d:
        assert d.wyoming_port, d.log
        yield d


def _pcm16(x: np.ndarray, channels: int = 1) -> bytes:
    y = (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2")
    return np.repeat(y, channels).tobytes() if channels > 1 else y.tobytes()


async def _transcribe(port: int, audio: np.ndarray, rate: int = 16000, channels: int = 1, realtime: bool = False,
                      language: str | None = "en", client: AsyncTcpClient | None = None) -> list:
    """Every event the server sends back for one transcription, up to its transcript (and
    transcript-stop when it streamed)."""
    own = client is None
    client = client or AsyncTcpClient("127.0.0.1", port)
    if own:
        await client.connect()
    try:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        step = int(rate * CHUNK_S)
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(audio), step)):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + k * CHUNK_S - time.monotonic()))
            await client.write_event(AudioChunk(rate=rate, width=2, channels=channels,
                                                audio=_pcm16(audio[i : i + step], channels)).event())
        await client.write_event(AudioStop().event())
        events = []
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            assert event is not None, events
            events.append(event)
            if Error.is_type(event.type):
                return events
            if Transcript.is_type(event.type) and not any(TranscriptStart.is_type(e.type) for e in events):
                return events
            if TranscriptStop.is_type(event.type):
                return events
    finally:
        if own:
            await client.disconnect()


def _text(events) -> str:
    return next(Transcript.from_event(e).text for e in events if Transcript.is_type(e.type))


def test_describe_says_what_the_chain_is(daemon):
    async def go():
        async with AsyncTcpClient("127.0.0.1", daemon.wyoming_port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await asyncio.wait_for(client.read_event(), 10))

    info = asyncio.run(go())
    program = info.asr[0]
    assert program.installed and program.supports_transcript_streaming
    assert program.models[0].languages == ["en"] and "whisper" in program.models[0].name.lower()


def test_transcript_is_the_local_commands_text_and_streams_each_final(daemon, tmp_path):
    """The same text as the local command on the same samples: Wyoming carries 16-bit PCM, so the
    local command reads the clip as the 16-bit 16 kHz file that was sent."""
    wav, ref = demo_clip()
    speech = load_16k(wav)
    events = asyncio.run(_transcribe(daemon.wyoming_port, speech))
    text = _text(events)
    sent = tmp_path / "sent.wav"
    sf.write(sent, np.frombuffer(_pcm16(speech), "<i2"), 16000, subtype="PCM_16")
    local = run_cli("--audio_path", str(sent), "--denoiser", "none", "--pace", "fast")
    assert text == " ".join(local.stdout.decode().split()), (text, local.stdout)
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"], kinds
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    assert "".join(chunks) == text and wer([ref], [text]) < 0.15


def test_phrases_at_real_time_over_one_connection_twice_48k_stereo(daemon):
    """Live pace as a satellite sends it, several utterances, chunks arriving before audio-stop;
    then a second transcription on the same connection at another rate and channel count."""
    clips = [load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]
    ref = " ".join([demo_clip()[1]] + [t for _, t in audioeval_clips()])
    speech = concat_with_gaps(clips, gap_s=1.0)

    async def go():
        async with AsyncTcpClient("127.0.0.1", daemon.wyoming_port) as client:
            first = await _transcribe(daemon.wyoming_port, speech, realtime=True, client=client)
            import julius
            import torch

            x48 = julius.resample_frac(torch.from_numpy(load_16k(demo_clip()[0])), 16000, 48000).numpy()
            second = await _transcribe(daemon.wyoming_port, x48, rate=48000, channels=2, client=client)
            return first, second

    first, second = asyncio.run(go())
    chunks = [e for e in first if TranscriptChunk.is_type(e.type)]
    assert len(chunks) >= 3 and wer([ref], [_text(first)]) < 0.2, _text(first)
    assert wer([demo_clip()[1]], [_text(second)]) < 0.15, _text(second)
    assert daemon.metric("asr_stream_sessions_active") == 0


def test_errors_are_error_events_and_the_server_serves_on(daemon):
    wav, ref = demo_clip()
    speech = load_16k(wav)

    async def go():
        async with AsyncTcpClient("127.0.0.1", daemon.wyoming_port) as client:
            await client.write_event(AudioStart(rate=16000, width=4, channels=1).event())
            bad_width = await asyncio.wait_for(client.read_event(), 10)
            await client.write_event(Transcribe(language="ko").event())
            bad_language = await asyncio.wait_for(client.read_event(), 10)
            return bad_width, bad_language

    bad_width, bad_language = asyncio.run(go())
    assert Error.is_type(bad_width.type) and "16-bit" in Error.from_event(bad_width).text
    assert Error.is_type(bad_language.type) and "'ko'" in Error.from_event(bad_language).text
    assert wer([ref], [_text(asyncio.run(_transcribe(daemon.wyoming_port, speech)))]) < 0.15


def test_slots_are_shared_with_websockets_and_a_vanished_client_frees_its_own(daemon):
    wav, _ = demo_clip()
    speech = load_16k(wav)

    async def go():
        # a Wyoming client that sends half its audio and vanishes
        client = AsyncTcpClient("127.0.0.1", daemon.wyoming_port)
        await client.connect()
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=_pcm16(speech[:32000])).event())
        await asyncio.sleep(0.5)
        held = daemon.metric("asr_stream_sessions_active")
        await client.disconnect()
        # two WebSocket sessions fill both slots: a Wyoming transcription is refused meanwhile
        started = asyncio.Event()

        async def on_open(ws):
            started.set()

        sessions = [asyncio.create_task(run_session(daemon.ws, speech, on_open=on_open)) for _ in range(2)]
        await started.wait()
        await asyncio.sleep(1.0)
        refused = await _transcribe(daemon.wyoming_port, speech[:16000])
        results = await asyncio.gather(*sessions)
        return held, refused, results

    held, refused, results = asyncio.run(go())
    assert held == 1
    assert Error.is_type(refused[0].type) and "full" in Error.from_event(refused[0]).text
    assert all(r.text for r in results)
    deadline = time.monotonic() + 10
    while daemon.metric("asr_stream_sessions_active") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.metric("asr_stream_sessions_active") == 0
    assert daemon.metric("asr_stream_sessions_ended_total", reason="gone") >= 1


def test_sigterm_drain_sends_the_transcript_of_what_was_heard():
    speech = load_16k(demo_clip()[0])
    with Daemon("--denoiser", "none", "--no-warm-up", "--wyoming", "tcp://127.0.0.1:0") as d:
        async def go():
            async with AsyncTcpClient("127.0.0.1", d.wyoming_port) as client:
                await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                step = int(16000 * CHUNK_S)
                for i in range(0, 16000 * 5, step):  # five seconds at real time, then the drain
                    await client.write_event(AudioChunk(rate=16000, width=2, channels=1,
                                                        audio=_pcm16(speech[i : i + step])).event())
                    await asyncio.sleep(CHUNK_S)
                d.signal()
                events = []
                while (event := await asyncio.wait_for(client.read_event(), 30)) is not None:
                    events.append(event)
                    if Transcript.is_type(event.type):
                        break
                return events

        events = asyncio.run(go())
        assert d.wait(30) == 0
    text = _text(events)
    assert len(text.split()) >= 5 and wer([" ".join(demo_clip()[1].split()[: len(text.split())])], [text]) < 0.3


def test_a_bad_wyoming_address_is_a_one_line_error():
    out = run_cli("serve", "--wyoming", "http://127.0.0.1:10300", "--no-warm-up")
    err = out.stderr.decode()
    assert out.returncode == 2 and "tcp://HOST:PORT" in err and len(err.strip().splitlines()) == 1, err
