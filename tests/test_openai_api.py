"""`POST /v1/audio/transcriptions` on a real `asr-stream serve`, called by the official `openai`
Python client over a real socket: every response format, streaming, the limits, the errors, and
the daemon serving on after each."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading

import numpy as np
import openai
import pytest
import soundfile as sf
from conftest import audioeval_clips, concat_with_gaps, demo_clip, load_16k, run_cli, wer
from daemon import Daemon, run_session

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def daemon():
    with Daemon("--denoiser", "none", "--no-warm-up", "--max-sessions", "2", "--max-upload-mb", "4",
                "--max-session-seconds", "120", env={"ASR_STREAM_TOKEN": TOKEN}) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.http}/v1", api_key=TOKEN, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def phrases(tmp_path_factory):
    """The shipped clips with pauses between them (about 20 s, several utterances), as FLAC."""
    clips = [load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]
    path = tmp_path_factory.mktemp("audio") / "phrases.flac"
    sf.write(path, concat_with_gaps(clips, gap_s=1.0), 16000)
    return path, " ".join([demo_clip()[1]] + [t for _, t in audioeval_clips()])


def _transcribe(client, path, **kwargs):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **kwargs)


def test_json_is_the_same_text_as_the_local_command(client):
    wav, ref = demo_clip()
    result = _transcribe(client, wav)
    assert wer([ref], [result.text]) < 0.15, result.text
    local = run_cli("--audio_path", str(wav), "--denoiser", "none", "--pace", "fast")
    assert local.returncode == 0
    assert result.text == " ".join(local.stdout.decode().split()), (result.text, local.stdout)
    assert result.usage.seconds == pytest.approx(sf.info(str(wav)).duration, abs=0.01)


def test_text_srt_and_vtt(client, phrases):
    path, ref = phrases
    text = _transcribe(client, path, response_format="text")
    assert isinstance(text, str) and wer([ref], [text]) < 0.2, text
    srt = _transcribe(client, path, response_format="srt")
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)\n", srt)
    assert len(cues) >= 3 and [int(c[0]) for c in cues] == list(range(1, len(cues) + 1)), srt
    assert all(start < end for _, start, end, _ in cues) and [c[1] for c in cues] == sorted(c[1] for c in cues)
    assert " ".join(c[3] for c in cues) == text.strip()
    vtt = _transcribe(client, path, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(cues)


def test_verbose_json_has_segments_and_words_within_the_audio(client, phrases):
    path, ref = phrases
    duration = sf.info(str(path)).duration
    result = _transcribe(client, path, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.duration == pytest.approx(duration, abs=0.01) and result.language == "en"
    assert len(result.segments) >= 3 and " ".join(s.text for s in result.segments) == result.text
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= duration + 0.1 for w in result.words)
    assert len(result.words) == len(result.text.split())
    for seg in result.segments:  # each segment's words lie inside it
        inside = [w for w in result.words if seg.start - 0.01 <= w.start and w.end <= seg.end + 0.01]
        assert len(inside) >= len(seg.text.split()) - 1, seg


def test_stream_sends_each_final_as_a_delta_then_the_whole_text(client, phrases):
    path, ref = phrases
    with open(path, "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 3 and len(done) == 1 and events[-1] is done[0]
    assert "".join(d.delta for d in deltas) == done[0].text
    assert wer([ref], [done[0].text]) < 0.2, done[0].text
    assert done[0].text == _transcribe(client, path).text  # the same text, streamed or not


def test_errors_have_openais_shape_and_the_daemon_serves_on(daemon, client, tmp_path):
    wav, ref = demo_clip()
    with pytest.raises(openai.AuthenticationError):
        _transcribe(openai.OpenAI(base_url=f"{daemon.http}/v1", api_key="wrong", max_retries=0), wav)
    junk = tmp_path / "notes.wav"
    junk.write_text("this is not audio")
    with pytest.raises(openai.BadRequestError) as excinfo:
        _transcribe(client, junk)
    assert "could not decode" in excinfo.value.message and excinfo.value.body["param"] == "file"
    assert "0x" not in excinfo.value.message  # no object addresses in what a user reads
    with pytest.raises(openai.BadRequestError, match="response_format"):
        _transcribe(client, wav, response_format="mp4")
    with pytest.raises(openai.BadRequestError, match="'ko'"):
        _transcribe(client, wav, language="ko")
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(16000 * 150, np.float32), 16000)  # 4.8 MB, over --max-upload-mb 4
    with pytest.raises(openai.APIStatusError) as excinfo:
        _transcribe(client, big)
    assert excinfo.value.status_code == 413
    long = tmp_path / "long.flac"  # small enough, but longer than --max-session-seconds
    sf.write(long, np.zeros(16000 * 130, np.float32), 16000)
    with pytest.raises(openai.APIStatusError) as excinfo:
        _transcribe(client, long)
    assert excinfo.value.status_code == 413 and "130.0 s" in excinfo.value.message
    import urllib.error
    import urllib.request

    broken = urllib.request.Request(f"{daemon.http}/v1/audio/transcriptions", data=b"--nope\r\nnot a form",
                                    headers={"Authorization": f"Bearer {TOKEN}",
                                             "Content-Type": "multipart/form-data; boundary=XyZ"})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(broken, timeout=30)
    assert raw.value.code == 400 and "error" in json.loads(raw.value.read())
    assert daemon.metric("asr_stream_sessions_rejected_total", reason="bad_request") >= 5
    assert wer([ref], [_transcribe(client, wav).text]) < 0.15  # still serving
    assert daemon.proc.poll() is None


def test_uploads_share_the_session_slots_with_websockets(daemon, client):
    """Two slots: two live WebSocket sessions hold them, an upload is refused with 503; once they
    end it is served."""
    wav, _ = demo_clip()
    speech = load_16k(wav)
    opened = threading.Barrier(3)

    def live():
        async def go():
            return await run_session(daemon.ws, speech, headers={"Authorization": f"Bearer {TOKEN}"},
                                     on_open=lambda ws: asyncio.to_thread(opened.wait, 60))
        return asyncio.run(go())

    results = []
    threads = [threading.Thread(target=lambda: results.append(live())) for _ in range(2)]
    for t in threads:
        t.start()
    opened.wait(60)
    with pytest.raises(openai.APIStatusError) as excinfo:
        _transcribe(client, wav)
    assert excinfo.value.status_code == 503
    for t in threads:
        t.join(120)
    assert len(results) == 2 and all(r.text for r in results)
    assert _transcribe(client, wav).text


def test_a_client_that_leaves_mid_upload_frees_its_slot(daemon):
    """A raw HTTP client sends half its form and vanishes: the daemon counts nothing in flight."""
    import socket

    wav, _ = demo_clip()
    body = open(wav, "rb").read()
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len(body) + 400}\r\n\r\n"
            f"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
    import time

    deadline = time.monotonic() + 10
    while daemon.metric("asr_stream_sessions_active") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.metric("asr_stream_sessions_active") == 0
    assert daemon.http_status("/readyz") == 200


def test_mp3_and_other_rates_decode(client, tmp_path):
    wav, ref = demo_clip()
    x = load_16k(wav)
    for name, rate, fmt in (("a.ogg", 48000, "OGG"), ("b.flac", 8000, "FLAC")):
        import julius
        import torch

        y = julius.resample_frac(torch.from_numpy(x), 16000, rate).numpy()
        path = tmp_path / name
        sf.write(path, np.stack([y, y], axis=1), rate, format=fmt)  # stereo
        assert wer([ref], [_transcribe(client, path).text]) < 0.2, name
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="MP3")
    (tmp_path / "c.mp3").write_bytes(buf.getvalue())
    assert wer([ref], [_transcribe(client, tmp_path / "c.mp3").text]) < 0.2
