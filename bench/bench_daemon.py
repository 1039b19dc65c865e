"""The daemon in BENCHMARKS.md: how many live sessions one `asr-stream serve` holds, latency
against sessions, and a soak with RSS over time.

For each chain (the default on clean speech and on the same speech mixed with babble at 5 dB,
where the gate starts the denoiser; Whisper without a denoiser; the project's AN4 NeMo model on ONNX,
a FastConformer small of random weights on ONNX: a model of the size users fine-tune) a daemon is started and `asr-stream loadtest --server` searches for the largest N of real-time
WebSocket sessions with final p95 <= 1.5 s (as the clients see it) and no dropped audio. The
baseline, in the same run: the same search in one process with no sockets (`asr-stream
loadtest`), for the default chain. Then the soak: sessions of the default chain back to back
(a new connection each minute) for --soak-min minutes, the daemon's RSS read from /metrics every
10 s. Targets (sessions held): default chain >= 4 (clean and in babble), Whisper >= 6, AN4 >= 20, FastConformer small >= 16.
The peer, in the same run where `make peers` built it: WhisperLive with the same tiny.en model,
its own server and client, 1, 2, 4 and 8 sessions at once of the same speech.

    python bench/bench_daemon.py --out BENCHMARKS.md [--soak-min 30] [--keep-soak] [--rerun an4,small-onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from bench_streams import speech_files  # noqa: E402
from common import cpu_and_cores, save_plot, write_section  # noqa: E402

BEGIN, END = "<!-- daemon:begin -->", "<!-- daemon:end -->"
DOCS = ROOT / "docs" / "bench" / "daemon"
FINAL_P95 = 1.5
PARTIAL_P95 = 1.0  # the partial bound (the peer is judged by it too)
SESSION_S = 20.0
SOAK_SESSION_S = 60.0
MAX_STREAMS = 32
SHARED = ROOT.parent / "shared" / "data"
BABBLE_TALKERS = 16  # LibriSpeech utterances (other speakers than the sessions') the babble is made of
PEER_PY = ROOT / ".venv-peers" / "bin" / "python"
PEER_COUNTS = (1, 2, 4, 8)


def chains() -> list[dict]:
    from bench_nemo import model_file

    nemo80 = ["--denoiser", "none", "--asr", "nemo", "--lookahead-ms", "80"]
    return [
        dict(label="default chain (DeepFilterNet3 gated + Whisper tiny.en)", key="default", args=[], target=4),
        dict(label="default chain, the speech mixed with babble at 5 dB (the denoiser on)", key="default-babble",
             args=[], target=4, babble_snr=5.0),
        dict(label="Whisper tiny.en, no denoiser", key="whisper", args=["--denoiser", "none"], target=6),
        dict(label="AN4 NeMo model (cache-aware 80 ms, ONNX), no denoiser", key="an4",
             args=[*nemo80, "--model", "an4_fastconformer_ctc", "--runtime", "onnx"], target=20),
        dict(label="FastConformer small, random weights (cache-aware 80 ms, ONNX), no denoiser", key="small-onnx",
             args=[*nemo80, "--model", str(model_file("small")), "--runtime", "onnx"], target=16),
    ]


class Daemon:
    def __init__(self, exe: Path, args: list[str], capacity: str = "off"):
        # the search measures what the box holds: no limit of the daemon's own in the way
        self.cmd = [str(exe), "serve", "--port", "0", "--max-sessions", "64", "--capacity", capacity, *args]
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            m = re.search(r"listening on http://[^:\s]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if self.port and "engines loaded" in line:
                break
        if self.port is None or self.proc.poll() is not None:
            raise SystemExit(f"asr-stream serve did not start: {' '.join(self.cmd)}")
        self.url = f"ws://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def readyz(self) -> dict:
        from asr_stream.serve.loadtest import readyz

        return readyz(self.url)

    @property
    def shown(self) -> str:
        return " ".join(shlex.quote(a) for a in ["asr-stream", *self.cmd[1:]])


def loadtest(exe: Path, files: list[str], out: Path, server: str | None, chain_args: list[str]) -> tuple[str, dict]:
    args = [str(exe), *_loadtest_args(files, out, server, chain_args)]
    shown = _shown(args, files, out, server)
    print(f"$ {shown}", flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    print(proc.stdout + proc.stderr, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"loadtest failed: {proc.stderr.strip()}")
    report = json.loads(out.read_text())
    report["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # for a later --rerun's note
    return shown, report


def _loadtest_args(files: list[str], out: Path, server: str | None, chain_args: list[str]) -> list[str]:
    args = ["loadtest", "--seconds", f"{SESSION_S:g}", "--stagger-s", "2", "--max-streams", str(MAX_STREAMS),
            "--final-p95", str(FINAL_P95), "--json", str(out), "--audio", *files]
    return args + (["--server", server] if server else chain_args)


def babble_files(files: list[str], snr: float, folder: Path) -> list[str]:
    """The speech files mixed with babble (four other talkers summed, from the unlabelled
    LibriSpeech utterances, or from the other speech files without ../shared) at `snr` dB,
    seeded per file, written to `folder`."""
    import soundfile as sf

    from asr_stream.evaluation.mixing import Condition, Mixer
    from asr_stream.io.audio_files import load_16k

    talkers = sorted((SHARED / "speech" / "librispeech_unlabeled").glob("*.flac"))[:BABBLE_TALKERS]
    speech = [load_16k(f) for f in files]
    sources = [load_16k(f) for f in talkers] if talkers else speech
    mixer = Mixer(SHARED / "noise", babble_sources=sources)
    out = []
    for i, (f, audio) in enumerate(zip(files, speech)):
        mixed, _ = mixer.make(audio, Condition("babble", snr), Path(f).stem, index=None if talkers else i)
        path = folder / f"{Path(f).stem}_babble{snr:g}dB.wav"
        sf.write(path, mixed, 16000, subtype="PCM_16")
        out.append(str(path))
    return out


def run_peer(files: list[str], folder: Path) -> dict | None:
    """WhisperLive's server with the same tiny.en model, N sessions at once of the tracks our
    loadtest sends (session i starts at clip i), for each N in PEER_COUNTS."""
    if not PEER_PY.exists():
        return None
    import soundfile as sf

    from asr_stream.recognizers import whisper_models
    from asr_stream.serve.loadtest import speech_tracks

    paths = []
    for i, track in enumerate(speech_tracks(files, max(PEER_COUNTS), SESSION_S)):
        paths.append(str(folder / f"peer_track{i}.wav"))
        sf.write(paths[-1], track, 16000, subtype="PCM_16")
    (folder / "peer_tracks.json").write_text(json.dumps(paths))
    out = folder / "peer_load.json"
    args = [str(PEER_PY), str(ROOT / "bench" / "peer_whisperlive.py"), "--model", whisper_models.resolve("tiny.en"),
            "--tracks", str(folder / "peer_tracks.json"), "--concurrent", ",".join(map(str, PEER_COUNTS)),
            "--out", str(out)]
    print("$ " + " ".join(args), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if not out.exists():
        raise SystemExit(f"WhisperLive's load run failed: {proc.stderr.strip()[-2000:]}")
    runs = json.loads(out.read_text())["runs"]
    import numpy as np

    def pct(values, q):
        return float(np.percentile(values, q)) if values else None

    return {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": (".venv-peers/bin/python bench/peer_whisperlive.py --model <bundled tiny.en> --tracks "
                        f"<{max(PEER_COUNTS)} tracks of {SESSION_S:g} s: the loadtest's> --concurrent "
                        f"{','.join(map(str, PEER_COUNTS))} --out peer_load.json"),
            "runs": [{"streams": r["streams"], "failed": len(r["errors"]), "cpu_per_audio_s": r["cpu_per_audio_s"],
                      "partial_p50_s": pct(r["partial_lags"], 50), "partial_p95_s": pct(r["partial_lags"], 95),
                      "final_p50_s": pct(r["segment_delays"], 50), "final_p95_s": pct(r["segment_delays"], 95),
                      "segments": len(r["segment_delays"])} for r in runs]}


def _shown(args: list[str], files: list[str], out: Path, server: str | None) -> str:
    shown = " ".join(shlex.quote(a) for a in ["asr-stream", *args[1:]])
    mixed = "_babble" in files[0]
    shown = shown.replace(" ".join(shlex.quote(f) for f in files),
                          f"<{len(files)} speech files{' mixed with babble' if mixed else ''}>")
    shown = shown.replace(shlex.quote(str(out)), out.name)
    return shown.replace(server, "ws://127.0.0.1:PORT") if server else shown


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the daemon `pid` and its worker processes, by group of threads (the
    threads the project starts carry their names at the OS level; the rest are the runtimes')."""
    tick = os.sysconf("SC_CLK_TCK")
    workers = [int(c) for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()]
    groups = dict.fromkeys(THREAD_GROUPS.values(), 0.0)
    for proc in [pid, *workers]:
        for task in Path(f"/proc/{proc}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick
            if proc == pid:
                group = "daemon"
            elif name.startswith("stream-worker"):
                group = "scheduler"
            elif int(task.name) == proc or name in ("progress",) or name.startswith("stream-opener"):
                group = "upkeep"
            else:
                group = "runtime"
            groups[THREAD_GROUPS[group]] += seconds
    return groups


THREAD_GROUPS = {  # what each group of threads does
    "daemon": "daemon process (HTTP, WebSockets, pipes)",
    "scheduler": "worker scheduler threads (denoiser, VAD, gate; ONNX models run here too)",
    "runtime": "worker runtime threads (CTranslate2's Whisper replicas, other native pools)",
    "upkeep": "worker upkeep (opening sessions: per-session model states; progress)",
}


def cpu_split(exe: Path, files: list[str], server: str, pid: int, seconds: float) -> tuple[str, dict]:
    """One live session, and where its CPU went: seconds per audio second by thread group."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one.json"
        args = [str(exe), "loadtest", "--streams", "1", "--seconds", f"{seconds:g}", "--stagger-s", "0",
                "--json", str(out), "--audio", *files, "--server", server]
        before = thread_cpu(pid)
        proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
        after = thread_cpu(pid)
        if proc.returncode != 0:
            raise SystemExit(f"loadtest failed: {proc.stderr.strip()}")
        result = json.loads(out.read_text())["results"][0]
    split = {k: (after[k] - before[k]) / seconds for k in after}
    return _shown(args, files, out, server), {"groups": split, "stages": result.get("stage_s_per_stream"),
                                               "cpu_per_stream": result["cpu_per_stream"]}


def soak(server: str, files: list[str], sessions: int, minutes: float) -> dict:
    """`sessions` clients, each running real-time sessions of SOAK_SESSION_S back to back."""
    import aiohttp

    from asr_stream.serve.loadtest import daemon_usage, remote_session, speech_tracks
    from asr_stream.output.stats import RollingLatency

    tracks = speech_tracks(files, max(sessions * 4, 8), SOAK_SESSION_S)
    end_at = time.monotonic() + minutes * 60
    rss, final, done, errors, dropped = [], RollingLatency(), [0], [], [0]

    async def client(i: int):
        k = i
        async with aiohttp.ClientSession() as http:
            while time.monotonic() + SOAK_SESSION_S < end_at:
                r = await remote_session(http, server, tracks[k % len(tracks)], 0.0, None)
                k += sessions
                final.merge(r["latency"].final)
                done[0] += 1
                if r["error"]:
                    errors.append(r["error"])
                if r["summary"]:
                    dropped[0] += r["summary"]["dropped_samples"]

    async def sample():
        t0 = time.monotonic()
        while time.monotonic() < end_at:
            _, resident = await asyncio.to_thread(daemon_usage, server)  # the daemon and its workers
            rss.append((time.monotonic() - t0, resident / 2**20))
            await asyncio.sleep(10.0)

    async def main():
        await asyncio.gather(sample(), *[client(i) for i in range(sessions)])

    asyncio.run(main())
    return {"sessions": sessions, "minutes": minutes, "rss": rss, "final_p95_s": final.percentile(95),
            "final_p50_s": final.percentile(50), "completed": done[0], "errors": errors,
            "dropped_seconds": dropped[0] / 16000}


def plot_latency(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, (chain, report) in results.items():
        rows = sorted(report["results"], key=lambda r: r["streams"])
        n = [r["streams"] for r in rows]
        line, = ax.plot(n, [r["final_p95_s"] for r in rows], "o-", label=f"{key}: final p95")
        ax.plot(n, [r["final_p50_s"] for r in rows], "x--", color=line.get_color(), label=f"{key}: final p50")
    ax.axhline(FINAL_P95, color="grey", lw=0.8, ls=":", label="target p95")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent live sessions on one daemon")
    ax.set_ylabel("final latency, s (as the clients see it)")
    ax.set_title("asr-stream serve: latency against sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save_plot(fig, path)


def plot_soak(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = [x / 60 for x, _ in report["rss"]]
    ax.plot(t, [y for _, y in report["rss"]], "-")
    ax.set_xlabel("minutes")
    ax.set_ylabel("daemon RSS, MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Soak: {report['sessions']} live sessions back to back, {report['completed']} sessions in all")
    ax.grid(True, alpha=0.3)
    save_plot(fig, path)


def _peer_lines(peer: dict | None, results: dict) -> list[str]:
    L = ["### The peer: WhisperLive with the same model, sessions at once", ""]
    if peer is None:
        return L + ["WhisperLive (PyPI `whisper-live`): not installed here (`make peers` builds `.venv-peers`).", ""]
    held = max([r["streams"] for r in peer["runs"] if not r["failed"] and r["final_p95_s"] is not None
                and r["final_p95_s"] <= FINAL_P95] or [0])
    by_partials = max([r["streams"] for r in peer["runs"] if not r["failed"] and r["partial_p95_s"] is not None
                       and r["partial_p95_s"] <= PARTIAL_P95] or [0])
    L += [f"WhisperLive 0.10 (faster_whisper backend, its VAD on, one shared model: `single_model`) with our bundled "
          f"tiny.en, its own server and `StreamingTranscriptionClient` in one process, N sessions at once of the same "
          f"{SESSION_S:g} s tracks as our loadtest's, 0.1 s chunks at wall-clock pace, then 2 s of silence; measured "
          f"{peer['measured']}. Committed = a completed segment, from its audio's end to its arrival (our final); "
          "partial lag = at each pending-segment update, from the end of its audio to its arrival (our partial). "
          "CPU is the whole process's (server and clients) per second of audio: WhisperLive decodes its pending "
          "audio again as soon as a decode ends, so one session keeps more than a core busy. By the rule of our "
          f"table (final p95 <= {FINAL_P95:g} s, no session failed) it holds **{held}**, by its partials alone "
          f"(partial p95 <= {PARTIAL_P95:g} s) {by_partials}; Whisper tiny.en without a denoiser on our daemon "
          f"holds {results['whisper'][1]['capacity'] if 'whisper' in results else 'n/a'} (above). "
          f"`{peer['command']}`", "",
          "| N | partial lag p50 / p95 ms | committed p50 / p95 ms | segments | CPU per audio s | failed |",
          "|---|---|---|---|---|---|"]
    for r in peer["runs"]:
        L.append(f"| {r['streams']} | {_ms(r['partial_p50_s'])} / {_ms(r['partial_p95_s'])} | "
                 f"{_ms(r['final_p50_s'])} / {_ms(r['final_p95_s'])} | {r['segments']} | "
                 f"{r['cpu_per_audio_s']:.2f} | {r['failed']} |")
    return L + [""]


def _stages(r: dict) -> str:
    """Seconds spent in the denoiser and the recogniser per second of one session's audio (wall
    time of the worker thread in each stage: what a profile of the stages would split)."""
    st = r.get("stage_s_per_stream") or r.get("stages") or {}
    return f"{st['denoiser']:.3f} / {st['recognizer']:.3f}" if st else "n/a"


def _ms(v) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f}"


def _f3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--soak-min", type=float, default=30.0, help="soak length in minutes (default 30)")
    p.add_argument("--quick", action="store_true", help="a check of the script: 8 s sessions, N up to 2")
    p.add_argument("--soak-only", action="store_true",
                   help="run the soak again but keep the last full run's sessions tables (docs/bench/daemon/results.json)")
    p.add_argument("--keep-soak", action="store_true",
                   help="measure the sessions again but keep the last full run's soak (docs/bench/daemon/results.json)")
    p.add_argument("--rerun", help="comma-separated chain keys (default, default-babble, whisper, an4, small-onnx, baseline, peer) to "
                                   "measure again; the other chains, the baseline and the soak are kept from "
                                   "docs/bench/daemon/results.json")
    args = p.parse_args(argv)
    rerun = set(args.rerun.split(",")) if args.rerun else None
    if rerun is not None:
        unknown = rerun - {c["key"] for c in chains()} - {"baseline", "peer"}
        if unknown:
            p.error(f"--rerun: unknown chain(s) {', '.join(sorted(unknown))}")
        args.keep_soak = True
    global SESSION_S, MAX_STREAMS
    if args.quick:
        SESSION_S, MAX_STREAMS = 8.0, 2
    exe = Path(sys.executable).parent / "asr-stream"
    cpu, cores = cpu_and_cores()
    cmd = os.environ.get("BENCH_DAEMON_CMD", "python bench/bench_daemon.py")
    files = speech_files(40)
    started = time.monotonic()
    results, commands, estimates, splits = {}, {}, {}, {}
    kept = DOCS / "results.json"
    previous = json.loads(kept.read_text()) if kept.is_file() else None
    sessions_note = ""
    if args.soak_only and previous:
        written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(kept.stat().st_mtime))
        dates = "; ".join(f"{k} measured {r.get('measured', 'before ' + written)}" for k, r in previous["chains"].items())
        sessions_note = (" The sessions tables are kept from earlier runs of this script (docs/bench/daemon/results.json: "
                         f"{dates}); only the soak was measured again.")
    kept_keys = []
    baseline_when = "measured in this run"
    if rerun is not None and previous:
        kept_keys = [c["key"] for c in chains() if c["key"] not in rerun and c["key"] in previous["chains"]]
        if kept_keys or "baseline" not in rerun:
            written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(kept.stat().st_mtime))
            dates = "; ".join(f"{k} measured {previous['chains'][k].get('measured', 'before ' + written)}"
                              for k in kept_keys)
            sessions_note = (f" Measured again in this run: {', '.join(sorted(rerun))}; the other rows are kept from "
                             f"earlier runs of this script (docs/bench/daemon/results.json: {dates}).")
    with tempfile.TemporaryDirectory() as tmp:
        for key in kept_keys:
            results[key] = (next(c for c in chains() if c["key"] == key), previous["chains"][key])
            commands[key] = tuple(previous["commands"][key])
            if key in previous.get("estimates", {}):
                estimates[key] = previous["estimates"][key]
            if key in previous.get("splits", {}):
                splits[key] = previous["splits"][key]
        for chain in (chains() if not (args.soak_only and previous) else []):
            if chain["key"] in kept_keys:
                continue
            audio = babble_files(files, chain["babble_snr"], Path(tmp)) if chain.get("babble_snr") is not None else files
            with Daemon(exe, chain["args"], capacity="auto") as d:  # the limit it would set itself
                auto = d.readyz()
                # one live session on the fresh daemon: where its CPU goes, and the limit the
                # daemon sets once it has read what a session of this audio costs
                splits[chain["key"]] = cpu_split(exe, audio, d.url, d.proc.pid, SESSION_S)
                time.sleep(1.5)  # the daemon reads its sessions' cost once a second
                after = d.readyz()
                estimates[chain["key"]] = {"sessions": auto["max_sessions"], "source": auto["capacity"],
                                           "after_session": after["max_sessions"],
                                           "cost_now": after.get("session_cost_now")}
            with Daemon(exe, chain["args"]) as d:
                shown, report = loadtest(exe, audio, Path(tmp) / f"{chain['key']}.json", d.url, [])
            results[chain["key"]] = (chain, report)
            commands[chain["key"]] = (d.shown.replace("--port 0", "--port PORT"), shown)
        if args.soak_only and previous:
            results = {k: (next(c for c in chains() if c["key"] == k), r) for k, r in previous["chains"].items()}
            splits = previous.get("splits", {})
            estimates = previous.get("estimates", {})
            commands = {k: tuple(v) for k, v in previous.get("commands", {}).items()}  # the runs that measured them
            out = Path(tmp) / "default-in-process.json"
            base_cmd = _shown(["asr-stream", *_loadtest_args(files, out, None, [])], files, out, None)
            baseline = previous["baseline"]
            baseline_when = "kept from an earlier run"
        elif rerun is not None and "baseline" not in rerun and previous:
            base_cmd, baseline = previous["baseline_command"], previous["baseline"]
            baseline_when = "kept from an earlier run" + (f" (measured {baseline['measured']})" if baseline.get("measured") else "")
        else:
            base_cmd, baseline = loadtest(exe, files, Path(tmp) / "default-in-process.json", None, [])
        if previous and (args.soak_only or rerun is not None and "peer" not in rerun):
            peer = previous.get("peer")
        else:
            peer = run_peer(files, Path(tmp))
        soak_note = ""
        if args.keep_soak and previous:
            soaked = previous["soak"]
            soak_cmd = soaked.get("command", "asr-stream serve --port PORT --max-sessions 64")
            when = f", measured {soaked['measured']}" if soaked.get("measured") else ""
            soak_note = f" (kept from an earlier full run of this script{when}; not measured again)"
        else:
            soak_sessions = max(2, min(4, results["default"][1]["capacity"]))
            with Daemon(exe, []) as d:
                print(f"soak: {soak_sessions} sessions for {args.soak_min:g} min against {d.shown}", flush=True)
                soaked = soak(d.url, files, soak_sessions, args.soak_min)
                soak_cmd = d.shown.replace("--port 0", "--port PORT")
            soaked["command"] = soak_cmd
            soaked["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "results.json").write_text(json.dumps({"chains": {k: r for k, (_, r) in results.items()},
                                                   "commands": commands, "estimates": estimates, "splits": splits,
                                                   "baseline": baseline,
                                                   "baseline_command": base_cmd, "soak": soaked, "peer": peer},
                                                  indent=1) + "\n")
    plot_latency(results, DOCS / "latency_vs_sessions.png")
    plot_soak(soaked, DOCS / "soak_rss.png")
    rss = soaked["rss"]
    settled = [y for x, y in rss if x >= 300] or [y for _, y in rss]
    later = [(x, y) for x, y in rss if x >= 300]
    slope = None
    if len(later) >= 3:
        import numpy as np

        xs, ys = np.array([x for x, _ in later]), np.array([y for _, y in later])
        slope = float(np.polyfit(xs, ys, 1)[0] * 600)  # MB per 10 minutes
    took = (time.monotonic() - started) / 60
    default_cap = results["default"][1]["capacity"]
    L = [BEGIN, "## The daemon (asr-stream serve)", "",
         f"Made by `{cmd}` on {cpu} ({cores} cores) in {took:.0f} min. Each chain runs in its own `asr-stream "
         "serve` on 127.0.0.1; `asr-stream loadtest --server` opens N WebSocket sessions of "
         f"{SESSION_S:g} s of continuous read speech ({len(files)} clips joined end to end, each session starting "
         "at another clip, starts spread over 2 s), sent as 16-bit PCM in 20 ms frames at wall-clock pace. "
         "Latency is the clients': a word's last audio frame sent to the message that commits it, sockets and "
         f"all. A run holds when final p95 <= {FINAL_P95:g} s, no audio was dropped and no session failed; N "
         "doubles from 1 until a run misses, then the gap is halved. CPU and RSS are the daemon's own, from "
         "its /metrics; the client runs on the same cores, and its own CPU per session is in the tables "
         "(a deployment's clients are elsewhere). The baseline is the same search in one process with no "
         "sockets and no client process (`asr-stream loadtest`), " + baseline_when + "." + sessions_note, "",
         "| chain | sessions held by the daemon | target | | limit `--capacity auto` sets | its measurement | "
         "the limit after one live session of the chain's audio |",
         "|---|---|---|---|---|---|---|"]
    for chain in [c for c in chains() if c["key"] in results]:
        cap = results[chain["key"]][1]["capacity"]
        target = chain["target"]
        verdict = "" if target is None else ("met" if cap >= target else f"**missed** ({cap} of {target})")
        est = estimates.get(chain["key"])
        est_cells = f"{est['sessions']} | {est['source']}" if est else "not measured in this run | "
        if est and est.get("after_session") is not None:
            cost = f" (sessions read {est['cost_now']:.2f} CPU s per audio s)" if est.get("cost_now") else ""
            est_cells += f" | {est['after_session']}{cost}"
        else:
            est_cells += " | not measured"
        L.append(f"| {chain['label']} | {cap} | {'>= ' + str(target) if target else '-'} | {verdict} | {est_cells} |")
    ratio = f"{default_cap / baseline['capacity']:.2f}" if baseline["capacity"] else "n/a"
    L += ["", f"Baseline, the default chain in one process without sockets: {baseline['capacity']} streams held "
          f"(daemon / in-process = {ratio}); `{base_cmd}`.", "",
          "![final latency against sessions](docs/bench/daemon/latency_vs_sessions.png)", ""]
    L += _peer_lines(peer, results)
    if splits:
        groups = list(THREAD_GROUPS.values())
        L += ["### Where one session's CPU goes", "",
              "One live session on a fresh daemon of each chain (`--capacity auto`: the one whose limits are in "
              "the table above), CPU seconds per second of audio by group of threads, read from /proc around the session (the project names its threads at the OS level); "
              "the stage columns are the scheduler's wall time inside each stage, as in the tables below.", "",
              "| chain | " + " | ".join(groups) + " | total | denoiser / recognizer s per audio s | command |",
              "|---|" + "---|" * (len(groups) + 3)]
        for chain in chains():
            if chain["key"] not in splits:
                continue
            shown, split = splits[chain["key"]]
            cells = " | ".join(f"{split['groups'][g]:.3f}" for g in groups)
            L.append(f"| {chain['label']} | {cells} | {sum(split['groups'].values()):.3f} | {_stages(split)} | "
                     f"`{shown}` |")
        L.append("")
    for chain in [c for c in chains() if c["key"] in results]:
        report = results[chain["key"]][1]
        daemon_cmd, load_cmd = commands[chain["key"]]
        L += [f"### {chain['label']}", "", f"`{daemon_cmd}`, then `{load_cmd}`", "",
              "| N | partial p50 / p95 ms | final p50 / p95 ms | daemon CPU per session | client CPU per session | "
              "cores busy (daemon) | denoiser / recognizer s per audio s | RSS MB | dropped s | skipped partials | holds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(report["results"], key=lambda r: r["streams"]):
            failed = f" ({len(r['errors'])} failed)" if r["errors"] else ""
            L.append(f"| {r['streams']} | {_ms(r['partial_p50_s'])} / {_ms(r['partial_p95_s'])} | "
                     f"{_ms(r['final_p50_s'])} / {_ms(r['final_p95_s'])} | {r['cpu_per_stream']:.3f} | "
                     f"{_f3(r.get('client_cpu_per_stream'))} | "
                     f"{r['cores_used']:.2f} | {_stages(r)} | {r['rss_mb']:.0f} | {r['dropped_seconds']:.1f} | "
                     f"{r['skipped_partials']} | {'yes' if r['holds'] else 'no'}{failed} |")
        L.append("")
    flat = "n/a" if slope is None else f"{slope:+.1f} MB per 10 min after the first 5 min"
    L += [f"### Soak{soak_note}", "",
          f"`{soak_cmd}`, then {soaked['sessions']} clients each opening live sessions of {SOAK_SESSION_S:g} s of "
          f"speech back to back (a new connection each time) for {soaked['minutes']:g} min; the daemon's RSS read "
          "from its /metrics every 10 s.", "",
          "| sessions completed | failed | dropped s | final p50 / p95 ms | RSS at 5 min | RSS at the end | "
          "largest | trend |", "|---|---|---|---|---|---|---|---|",
          f"| {soaked['completed']} | {len(soaked['errors'])} | {soaked['dropped_seconds']:.1f} | "
          f"{_ms(soaked['final_p50_s'])} / {_ms(soaked['final_p95_s'])} | {settled[0]:.0f} MB | {rss[-1][1]:.0f} MB | "
          f"{max(y for _, y in rss):.0f} MB | {flat} |", "",
          "![daemon RSS during the soak](docs/bench/daemon/soak_rss.png)", "", END]
    write_section(args.out, "\n".join(L) + "\n", BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
