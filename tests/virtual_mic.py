"""A virtual microphone for tests on a machine with no sound card.

`VirtualMic` starts a private PulseAudio server in a temporary directory (its own HOME,
XDG_RUNTIME_DIR and socket) with one null sink at 16 kHz mono; the sink's monitor is the
default source. Whatever `play(path)` plays into the sink is what a PortAudio input stream
(sounddevice or PyAudio, through ALSA's pulse plugin) started with `env` captures.

PULSE_SERVER must be set before sounddevice/pyaudio is imported, so clients are run as
subprocesses with `env`. The first captured block arrives some 1.3-1.7 s after an input
stream starts and anything played before it is lost: wait for the recording stream
(`wait_for_recording`) and a little longer before playing.

Needs the `pulseaudio` and `paplay`/`pactl` binaries (apt: pulseaudio pulseaudio-utils
libasound2-plugins); without them `start()` calls pytest.skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SINK = "vmic_sink"


class VirtualMic:
    def __init__(self, sink: str = SINK, rate: int = 16000, channels: int = 1):
        self.sink = sink
        self.rate = rate
        self.channels = channels
        self.dir: Path | None = None
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> "VirtualMic":
        missing = [b for b in ("pulseaudio", "pactl", "paplay") if shutil.which(b) is None]
        if missing:
            pytest.skip(f"virtual microphone needs {', '.join(missing)} (apt: pulseaudio pulseaudio-utils)")
        self.dir = Path(tempfile.mkdtemp(prefix="vmic-"))
        try:
            home, run = self.dir / "home", self.dir / "run"
            home.mkdir()
            run.mkdir(mode=0o700)
            socket = run / "native"
            self.env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(run),
                            PULSE_SERVER=f"unix:{socket}")
            self.env.pop("PULSE_COOKIE", None)
            script = self.dir / "vmic.pa"
            script.write_text(
                f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n"
                f"load-module module-null-sink sink_name={self.sink} rate={self.rate} "
                f"channels={self.channels} format=s16le\n"
                f"set-default-sink {self.sink}\n"
                f"set-default-source {self.sink}.monitor\n")
            self._log = open(self.dir / "pulse.log", "wb")
            self._proc = subprocess.Popen(
                ["pulseaudio", "--daemonize=no", "-n", f"--file={script}", "--exit-idle-time=-1",
                 "--disallow-exit=yes", "--use-pid-file=no", "--log-target=stderr"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True)
            deadline = time.monotonic() + timeout
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"pulseaudio exited with {self._proc.returncode}:\n{self.log()}")
                if self.pactl("info", check=False).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pulseaudio did not answer within {timeout} s:\n{self.log()}")
                time.sleep(0.1)
            info = self.pactl("info").stdout
            if f"Default Source: {self.sink}.monitor" not in info:
                raise RuntimeError(f"virtual microphone is not the default source:\n{info}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "VirtualMic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- use ------------------------------------------------------------------------------
    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True,
                              timeout=30, check=check)

    def play(self, path: str | os.PathLike) -> None:
        """Play a sound file into the sink (blocks until it has been played)."""
        subprocess.run(["paplay", f"--device={self.sink}", str(path)], env=self.env, check=True,
                       capture_output=True, timeout=300)

    def recording_streams(self) -> list[str]:
        """Lines of `pactl list short source-outputs`: one per open recording stream."""
        out = self.pactl("list", "short", "source-outputs", check=False).stdout
        return [line for line in out.splitlines() if line.strip()]

    def wait_for_recording(self, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> bool:
        """Wait until some client records from the server; False if `proc` ended first or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.recording_streams():
                return True
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def log(self) -> str:
        try:
            return (self.dir / "pulse.log").read_text(errors="replace")[-4000:] if self.dir else ""
        except OSError:
            return ""
