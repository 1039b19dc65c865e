"""A real `asr-stream serve` process on 127.0.0.1 for tests, and a small protocol client.

`Daemon(...)` starts the server on a free port (`--port 0`, read back from its log), waits for
`/readyz`, and stops it with a signal; `run_session` plays audio over a real WebSocket and
collects every message the server sends."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


class Daemon:
    def __init__(self, *args: str, env: dict | None = None, ready_timeout: float = 180.0, wait_ready: bool = True,
                 program: list[str] | None = None, cwd: Path = REPO):
        """`program`: the command that starts asr-stream (default: this checkout's package; an
        installed console script runs with the environment as given, no checkout on its path)."""
        self.args = ["--port", "0", *args]
        self.program = program or [sys.executable, "-m", "asr_stream"]
        self.cwd = cwd
        base = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{TESTS}") if program is None else dict(os.environ)
        self.env = dict(base, **(env or {}))
        self.ready_timeout = ready_timeout
        self.wait_ready = wait_ready
        self.lines: list[str] = []
        self.port: int | None = None
        self.wyoming_port: int | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Daemon":
        self.proc = subprocess.Popen([*self.program, "serve", *self.args], cwd=self.cwd,
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.ready_timeout
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("asr-stream serve did not start:\n" + self.log)
            time.sleep(0.05)
        while self.wait_ready and self.http_status("/readyz") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("asr-stream serve did not become ready:\n" + self.log)
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on http://[^:\s]+:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
            m = re.search(r"wyoming on tcp://[^:\s]+:(\d+)", line)
            if m:
                self.wyoming_port = int(m.group(1))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http_status(self, path: str) -> int | None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.http + path, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def get(self, path: str) -> str:
        """The body, whatever the status (/readyz answers 503 with its reasons)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.http + path, timeout=10) as r:
                return r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.read().decode()

    def metric(self, name: str, **labels) -> float:
        """One sample's value from /metrics (0 when absent)."""
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in self.get("/metrics").splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class SessionResult:
    ready: dict | None = None
    messages: list[dict] = field(default_factory=list)
    close_code: int | None = None
    status: int | None = None  # the handshake's HTTP status when it was refused

    @property
    def finals(self) -> list[dict]:
        return [m for m in self.messages if m["type"] == "final"]

    @property
    def partials(self) -> list[dict]:
        return [m for m in self.messages if m["type"] == "partial"]

    @property
    def text(self) -> str:
        return " ".join(m["text"] for m in self.finals)

    def last(self, kind: str) -> dict | None:
        found = [m for m in self.messages if m["type"] == kind]
        return found[-1] if found else None


def pcm(samples: np.ndarray, encoding: str = "s16le", channels: int = 1) -> bytes:
    x = np.asarray(samples, np.float32)
    if channels > 1:
        x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if encoding == "s16le":
        return (np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


async def run_session(url: str, audio: np.ndarray | None, rate: int = 16000, query: dict | None = None,
                      realtime: bool = True, frame_s: float = 0.02, headers: dict | None = None,
                      send_end: bool = True, encoding: str = "s16le", channels: int = 1,
                      on_open=None, timeout: float = 300.0) -> SessionResult:
    """One session: send `audio` (at `rate`, in `frame_s` frames, at wall-clock pace when
    `realtime`), then {"type": "end"}; collect every message until the server closes.
    `on_open(ws)`, if given, runs before the audio is sent, while the client reads on."""
    q = {"sample_rate": str(rate), "encoding": encoding, "channels": str(channels), **(query or {})}
    result = SessionResult()
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(f"{url}/v1/stream?{urlencode(q)}", headers=headers or {}, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            result.status = exc.status
            return result

        async def send():
            if audio is None:
                return
            step = int(rate * frame_s)
            t0 = time.monotonic()
            for k, i in enumerate(range(0, len(audio), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + k * frame_s - time.monotonic()))
                if ws.closed:
                    return
                await ws.send_bytes(pcm(audio[i : i + step], encoding, channels))
            if send_end and not ws.closed:
                await ws.send_str(json.dumps({"type": "end"}))

        async def opened_then_send():  # while this waits, the client goes on reading
            if on_open is not None:
                await on_open(ws)
            await send()

        sender = None

        async def receive():
            nonlocal sender
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data["type"] == "ready":
                    result.ready = data
                    sender = asyncio.create_task(opened_then_send())
                else:
                    result.messages.append(data)

        try:
            await asyncio.wait_for(receive(), timeout)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
        result.close_code = ws.close_code
    return result


def session(url: str, audio, **kw) -> SessionResult:
    return asyncio.run(run_session(url, audio, **kw))
