"""Two daemons behind nginx (Debian's package), the shipped deploy/nginx/asr-stream.conf with
its ports moved to free ones: sessions spread over both; a draining daemon takes no new ones."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter

import numpy as np
import pytest
from conftest import REPO, audioeval_clips, load_16k, normalize
from daemon import Daemon, run_session

NGINX = shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make install brings it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, prefix, listen: int, upstreams: list[int]):
        site = (REPO / "deploy" / "nginx" / "asr-stream.conf").read_text()
        ports = iter(upstreams)
        site = re.sub(r"server 127\.0\.0\.1:\d+", lambda m: f"server 127.0.0.1:{next(ports)}", site)
        site = re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", site)
        (prefix / "logs").mkdir(parents=True)
        (prefix / "asr-stream.conf").write_text(site)
        (prefix / "nginx.conf").write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    include {prefix}/asr-stream.conf;
}}
""")
        self.prefix, self.listen = prefix, listen

    def __enter__(self):
        self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                      "-g", "daemon off; master_process on;"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.listen), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.proc.stderr.read()}")
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_two_daemons_behind_nginx(tmp_path):
    clips = {p.stem: load_16k(p) for p, _ in audioeval_clips()}
    hello = np.concatenate([clips["hello_world"], np.zeros(8000, np.float32)])
    args = ("--denoiser", "none", "--no-warm-up", "--drain-seconds", "10")
    with Daemon(*args, "--instance", "a") as a, Daemon(*args, "--instance", "b") as b:
        listen = _free_port()
        with Nginx(tmp_path / "nginx", listen, [a.port, b.port]):
            url = f"ws://127.0.0.1:{listen}"

            async def spread_then_drain():
                release = asyncio.Event()

                async def hold(ws):
                    await release.wait()

                held = [asyncio.create_task(run_session(url, hello, realtime=False, query={"pace": "fast"},
                                                        on_open=hold)) for _ in range(4)]
                while a.metric("asr_stream_sessions_active") + b.metric("asr_stream_sessions_active") < 4:
                    await asyncio.sleep(0.05)
                spread = (a.metric("asr_stream_sessions_active"), b.metric("asr_stream_sessions_active"))
                a.signal(signal.SIGTERM)  # a drains: its held sessions finish; new ones must go to b
                while await asyncio.to_thread(a.http_status, "/readyz") == 200:
                    await asyncio.sleep(0.02)
                later = await asyncio.gather(*[run_session(url, hello, realtime=False, query={"pace": "fast"})
                                               for _ in range(4)])
                release.set()
                return spread, await asyncio.gather(*held), later

            spread, held, later = asyncio.run(spread_then_drain())
            assert spread == (2, 2)  # least_conn: the four open sessions share the two daemons
            on_a = [h for h in held if h.ready["instance"] == "a"]
            assert len(on_a) == 2 and all(h.close_code == 1001 and h.last("end")["reason"] == "draining" for h in on_a), \
                ([(h.close_code, h.messages) for h in on_a], a.log)
            assert Counter(r.ready["instance"] for r in later) == {"b": 4}
            assert all(r.close_code == 1000 and "hello world" in normalize(r.text) for r in later)
            # the caption page served through nginx opens its session with nginx's origin
            page = asyncio.run(run_session(url, hello, realtime=False, query={"pace": "fast"},
                                           headers={"Origin": f"http://127.0.0.1:{listen}"}))
            assert page.close_code == 1000 and page.ready["instance"] == "b"
            assert a.wait(30) == 0
            after = asyncio.run(run_session(url, hello, realtime=False, query={"pace": "fast"}))
            assert after.ready["instance"] == "b" and after.close_code == 1000  # a is gone: b serves alone
