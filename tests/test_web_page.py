"""The caption page in a real browser: headless Chromium with a fake microphone playing real
speech, through the AudioWorklet and the WebSocket to a real daemon; a file captioned through the
upload; the transcript's downloads; the page reconnecting after the daemon restarts."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import numpy as np
import pytest
import soundfile as sf
from browser import CHROMIUM, Browser
from conftest import audioeval_clips, concat_with_gaps, demo_clip, load_16k, normalize
from daemon import Daemon

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make install brings it)")

PAGE_TEXT = "JSON.stringify({finals: document.getElementById('finals').innerText, " \
            "partial: document.getElementById('partial').innerText, " \
            "status: document.getElementById('status').textContent, " \
            "chain: document.getElementById('chain').textContent, " \
            "progress: document.getElementById('progress').value, counters: window.asrStream})"
SRT_CUE = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)\n")


def _covered(reference: str, shown: str) -> float:
    words = set(normalize(reference).split())
    return len(words & set(normalize(shown).split())) / len(words)


def test_the_page_captions_the_microphone(tmp_path):
    wav, reference = demo_clip()
    with Daemon("--token", "s3cret") as d:
        async def run():
            async with Browser(tmp_path / "profile", wav) as b:
                await b.open(f"{d.http}/?token=s3cret")
                chain = await b.wait_for("document.getElementById('chain').textContent.includes('whisper')", 10)
                await b.eval("document.getElementById('start').click(), true")
                seen_partial = False
                for _ in range(240):  # the clip is 9.7 s; its final follows the silence after it
                    state = json.loads(await b.eval(PAGE_TEXT))
                    seen_partial |= bool(state["partial"].strip())
                    if "exhibition" in state["finals"]:
                        break
                    await asyncio.sleep(0.25)
                await b.screenshot(tmp_path / "page.png")
                srt = await b.eval("window.asrStream.transcript('srt')")
                await b.eval("document.getElementById('start').click(), true")  # Stop: the end message
                ended = await b.wait_for("document.getElementById('status').textContent.startsWith('ended')", 20)
                return chain, state, seen_partial, ended, srt

        chain, state, seen_partial, ended, srt = asyncio.run(run())
        assert chain, "the page shows the daemon's chain"
        assert "printing" in normalize(state["finals"]) and "exhibition" in state["finals"], state
        assert _covered(reference, state["finals"]) > 0.8, state
        assert seen_partial and ended, state
        assert state["counters"]["framesSent"] > 90  # 100 ms blocks: the whole clip went out
        assert state["counters"]["maxLevel"] > 0.05  # the level meter saw the speech
        cues = SRT_CUE.findall(srt)
        assert cues and cues[0][0] == "1" and "exhibition" in cues[-1][3], srt
        assert (tmp_path / "page.png").stat().st_size > 5000
        assert d.metric("asr_stream_sessions_ended_total", reason="end") == 1


def test_a_file_captioned_through_the_page(tmp_path):
    """Upload with progress, finals as they are recognised, then the transcript as VTT and text."""
    clips = [load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]
    reference = " ".join([demo_clip()[1]] + [t for _, t in audioeval_clips()])
    path = tmp_path / "meeting.flac"
    sf.write(path, concat_with_gaps(clips, gap_s=1.0), 16000)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000, np.float32), 16000)
    with Daemon("--denoiser", "none", "--no-warm-up") as d:
        async def run():
            async with Browser(tmp_path / "profile", silence) as b:
                await b.open(d.http + "/")
                await b.set_file("#file", path)
                done = await b.wait_for("window.asrStream.uploads === 1", 120)
                state = json.loads(await b.eval(PAGE_TEXT))
                vtt = await b.eval("window.asrStream.transcript('vtt')")
                txt = await b.eval("window.asrStream.transcript('txt')")
                await b.screenshot(tmp_path / "upload.png")
                return done, state, vtt, txt

        done, state, vtt, txt = asyncio.run(run())
    assert done and state["progress"] == 1 and state["status"].startswith("captioned meeting.flac"), state
    assert _covered(reference, state["finals"]) > 0.8, state
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)\n(.+)\n", vtt)
    assert vtt.startswith("WEBVTT") and len(cues) >= 3, vtt
    assert [c[0] for c in cues] == sorted(c[0] for c in cues) and all(a < b for a, b, _ in cues), vtt
    assert " ".join(c[2] for c in cues) == " ".join(txt.split())


def test_the_page_reconnects_when_the_daemon_restarts(tmp_path):
    """The microphone keeps playing while the daemon drains and comes back on the same port: the
    page opens a new session by itself and the words after the restart show too."""
    # about 80 s of speech: the fake microphone plays it once, and it must still be speaking after
    # the restart however long the two daemons take to load on a busy machine
    clips = ([load_16k(demo_clip()[0])] + [load_16k(p) for p, _ in audioeval_clips()]) * 5
    speech = tmp_path / "long.wav"
    sf.write(speech, concat_with_gaps(clips, gap_s=1.0), 16000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("--denoiser", "none", "--no-warm-up", "--workers", "0", "--drain-seconds", "2", "--port", str(port))

    async def run():
        async with Browser(tmp_path / "profile", speech) as b:
            with Daemon(*args) as first:
                await b.open(first.http + "/")
                await b.eval("document.getElementById('start').click(), true")
                before = await b.wait_for("document.getElementById('finals').innerText.length > 20", 60)
                first.signal()
                assert first.wait(30) == 0
            shown_before = json.loads(await b.eval(PAGE_TEXT))["finals"]
            await asyncio.sleep(1.0)
            with Daemon(*args):
                back = await b.wait_for("window.asrStream.reconnects >= 1", 60)
                more = await b.wait_for(f"document.getElementById('finals').innerText.length > "
                                        f"{len(shown_before) + 20}", 60)
                state = json.loads(await b.eval(PAGE_TEXT))
            return before, back, more, shown_before, state

    before, back, more, shown_before, state = asyncio.run(run())
    assert before and back and more, state
    assert state["finals"].startswith(shown_before.strip()[:20]), "the transcript carries on"
