"""The caption page in a real browser: headless Chromium with a fake microphone playing real
speech, through the AudioWorklet and the WebSocket to a real daemon; the words must show."""

from __future__ import annotations

import asyncio

import pytest
from browser import CHROMIUM, Browser
from conftest import demo_clip, normalize
from daemon import Daemon

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make install brings it)")

PAGE_TEXT = "JSON.stringify({finals: document.getElementById('finals').innerText, " \
            "partial: document.getElementById('partial').innerText, " \
            "status: document.getElementById('status').textContent, counters: window.asrStream})"


def test_the_page_captions_the_microphone(tmp_path):
    import json

    wav, reference = demo_clip()
    with Daemon("--token", "s3cret") as d:
        async def run():
            async with Browser(tmp_path / "profile", wav) as b:
                await b.open(f"{d.http}/?token=s3cret")
                await b.eval("document.getElementById('start').click(), true")
                seen_partial = False
                for _ in range(240):  # the clip is 9.7 s; its final follows the silence after it
                    state = json.loads(await b.eval(PAGE_TEXT))
                    seen_partial |= bool(state["partial"].strip())
                    if "exhibition" in state["finals"]:
                        break
                    await asyncio.sleep(0.25)
                await b.screenshot(tmp_path / "page.png")
                await b.eval("document.getElementById('start').click(), true")  # Stop: the end message
                ended = await b.wait_for("document.getElementById('status').textContent.startsWith('ended')", 20)
                return state, seen_partial, ended

        state, seen_partial, ended = asyncio.run(run())
        assert "printing" in normalize(state["finals"]) and "exhibition" in state["finals"], state
        words = set(normalize(reference).split())
        shown = set(normalize(state["finals"]).split())
        assert len(words & shown) / len(words) > 0.8, state
        assert seen_partial and ended, state
        assert state["counters"]["framesSent"] > 90  # 100 ms blocks: the whole clip went out
        assert (tmp_path / "page.png").stat().st_size > 5000
        assert d.metric("asr_stream_sessions_ended_total", reason="end") == 1
