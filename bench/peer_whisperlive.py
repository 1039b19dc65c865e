#!/usr/bin/env python
"""WhisperLive (PyPI `whisper-live`) as the peer: its own server and its own streaming client,
each file its own session at real-time pace. Runs in the peers' venv (`make peers`), not ours.

    python bench/peer_whisperlive.py --model DIR --files FILES.json --out OUT.json
    python bench/peer_whisperlive.py --model DIR --tracks TRACKS.json --concurrent 1,2,4 --out OUT.json

FILES.json is a list of {"key", "path"} (16 kHz mono WAV); OUT.json gets, per key, the text
(committed segments, then the last pending one, as WhisperLive's own client writes its
transcript) and, per committed segment, how long after its audio ended it arrived.
With --concurrent, N sessions at once for each N (session i sends TRACKS.json's i-th WAV, a list
of paths), as the daemon benchmark loads our server: OUT.json gets, per N, each committed
segment's delay, each partial's lag behind the audio sent, and the process's CPU (server and
clients) per second of audio.
Each file is followed by `--tail-s` of silence before END_OF_AUDIO: WhisperLive stops decoding at
END_OF_AUDIO, and without it loses the last words of a file, which would judge its text unfairly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import threading
import time

import numpy as np
import soundfile as sf

CHUNK_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_clients: int = 4) -> None:
    from whisper_live.server import TranscriptionServer

    server = TranscriptionServer()
    thread = threading.Thread(target=server.run, args=("127.0.0.1", port), daemon=True,
                              kwargs={"backend": "faster_whisper", "faster_whisper_custom_model_path": model,
                                      "single_model": True, "max_clients": max_clients})
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("WhisperLive's server did not start")


def transcribe(port: int, model: str, audio: np.ndarray, tail_s: float) -> dict:
    from whisper_live.client import StreamingTranscriptionClient

    arrivals: list[tuple[float, dict]] = []
    partials: list[tuple[float, dict]] = []
    client = StreamingTranscriptionClient("127.0.0.1", port, lang="en", model=model, ready_timeout=120,
                                          on_committed_transcript=lambda text, segs: arrivals.append(
                                              (time.monotonic(), segs[0])),
                                          on_partial_transcript=lambda text, segs: partials.append(
                                              (time.monotonic(), segs[0])))
    audio = np.concatenate([audio, np.zeros(int(tail_s * 16000), np.float32)])
    with client:
        t0 = time.monotonic()
        step = int(CHUNK_S * 16000)
        for i in range(0, len(audio), step):
            wait = t0 + i / 16000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            client.send_array(audio[i:i + step])
    texts = [seg["text"].strip() for seg in client.transcript]
    last = client.last_partial
    if last is not None and (not texts or texts[-1] != last["text"].strip()):
        texts.append(last["text"].strip())  # as WhisperLive's own client writes its transcript
    delays = [at - (t0 + float(seg["end"])) for at, seg in arrivals]
    lags = [at - (t0 + float(seg["end"])) for at, seg in partials]  # how far the newest text trails the audio
    return {"text": " ".join(t for t in texts if t), "segment_delays": delays, "partial_lags": lags}


def concurrent(port: int, model: str, tracks: list[np.ndarray], n: int, tail_s: float) -> dict:
    """N sessions at once, session i on track i, started together."""
    results: list[dict | None] = [None] * n
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            results[i] = transcribe(port, model, tracks[i % len(tracks)], tail_s)
        except Exception as exc:  # a session that failed counts as failed, the others go on
            errors.append(f"session {i}: {exc!r}")

    cpu0, t0 = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audio_s = sum(len(tracks[i % len(tracks)]) for i in range(n)) / 16000
    done = [r for r in results if r is not None]
    return {"streams": n, "errors": errors, "wall_s": time.monotonic() - t0,
            "cpu_per_audio_s": (time.process_time() - cpu0) / audio_s,
            "segment_delays": [d for r in done for d in r["segment_delays"]],
            "partial_lags": [d for r in done for d in r["partial_lags"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--files")
    p.add_argument("--tracks")
    p.add_argument("--concurrent", help="comma-separated session counts (with --tracks)")
    p.add_argument("--out", required=True)
    p.add_argument("--tail-s", type=float, default=2.0)
    a = p.parse_args()
    if bool(a.files) == bool(a.tracks and a.concurrent):
        p.error("give --files, or --tracks with --concurrent")
    logging.disable(logging.WARNING)
    port = free_port()
    if a.concurrent:
        counts = [int(n) for n in a.concurrent.split(",")]
        start_server(a.model, port, max_clients=max(counts))
        tracks = []
        for path in json.load(open(a.tracks)):
            audio, sr = sf.read(path, dtype="float32")
            assert sr == 16000 and audio.ndim == 1, path
            tracks.append(audio)
        out = {"runs": []}
        for n in counts:
            out["runs"].append(concurrent(port, a.model, tracks, n, a.tail_s))
            json.dump(out, open(a.out, "w"))
            print(f"whisper-live: {n} concurrent sessions done", flush=True)
        os._exit(0)
    files = json.load(open(a.files))
    start_server(a.model, port)
    out = {}
    for f in files:
        audio, sr = sf.read(f["path"], dtype="float32")
        assert sr == 16000 and audio.ndim == 1, f["path"]
        out[f["key"]] = transcribe(port, a.model, audio, a.tail_s)
        json.dump(out, open(a.out, "w"))
    print(f"whisper-live: {len(out)} files", flush=True)
    os._exit(0)  # the server's thread never returns; a normal exit aborts in its native code


if __name__ == "__main__":
    main()
