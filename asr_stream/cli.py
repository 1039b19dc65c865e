"""`asr-stream`: live captions from a file, stdin or a microphone. A thin argparse layer over
`asr_stream.chain.pipeline`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from asr_stream import __version__
from asr_stream.errors import StageError, UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asr-stream",
        description="Real-time streaming speech recognition with live captions. "
                    "To denoise a file into another file instead: asr-stream denoise IN -o OUT.wav "
                    "(see asr-stream denoise --help).",
        epilog="Default chain: DeepFilterNet3 denoiser + Whisper tiny.en (both ship inside pip packages). "
               "Subcommands: serve (the captioning daemon: WebSocket sessions, a browser page, probes and metrics; "
               "see asr-stream serve --help), denoise (file to file, no recognition), loadtest (how many real-time streams this "
               "machine holds), eval (WER, latency, RTF and quality "
               "of chains over a dataset under noise; see asr-stream eval --help).")
    src = p.add_argument_group("input")
    src.add_argument("--audio_path", "--audio-path", dest="audio_path",
                     help="audio file (wav, flac, ogg, mp3, ...; any rate and channels), or - for raw PCM on stdin")
    src.add_argument("--mode", choices=["file", "microphone"], help="file (default) or microphone")
    src.add_argument("--pace", choices=["realtime", "fast"],
                     help="files: feed at wall-clock rate like a live stream, or as fast as the chain goes (default)")
    src.add_argument("--raw-rate", type=int, help="stdin: sample rate (default 16000)")
    src.add_argument("--raw-format", choices=["s16le", "f32le"], help="stdin: sample format (default s16le)")
    src.add_argument("--raw-channels", type=int, help="stdin: channels (default 1)")
    src.add_argument("--audio-backend", choices=["sounddevice", "pyaudio"], help="microphone library (default sounddevice)")
    src.add_argument("--input-device", help="microphone: device index or name (default: the system default input)")
    src.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    src.add_argument("--max-seconds", type=float, help="stop after this many seconds of audio")
    add_chain_args(p.add_argument_group("chain"))
    remote = p.add_argument_group("daemon client")
    remote.add_argument("--server", metavar="URL",
                        help="caption through a running 'asr-stream serve' at ws://HOST:PORT instead of a local "
                             "chain (the server's chain is used; input and output flags work as they do locally)")
    remote.add_argument("--token", help="the server's token (default: $ASR_STREAM_TOKEN)")
    out = p.add_argument_group("output")
    out.add_argument("--timestamps", action="store_true", help="prefix each caption with its start and end time")
    out.add_argument("--output", help="write finals to FILE (.jsonl, .srt, .vtt or .txt)")
    out.add_argument("--stats-json", help="write the run's summary to this JSON file")
    out.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    p.add_argument("--version", action="version", version=f"asr-stream {__version__}")
    return p


CHAIN_DESTS: list[str] = []  # filled by add_chain_args: the flags that choose the chain


def add_chain_args(chain) -> None:
    """The chain's flags: the captioning command's and the daemon's are the same."""
    chain.add_argument("--config", help="a preset: a bundled name (default, no-denoiser, nemo, ...), one of yours in $ASR_STREAM_HOME/configs, or a YAML path; flags override it")
    chain.add_argument("--denoiser", help="none | deepfilternet | gtcrn | rnnoise | dns48 | dns64 | master64 | FILE.th | NAME "
                       "(NAME.th in the checkpoint folders) | demucs (the one .th there) | module:factory "
                       "(default deepfilternet)")
    chain.add_argument("--no-gate", dest="gate", action="store_false", default=None,
                       help="hear the denoiser's output as it is, instead of mixing it with the input by "
                            "estimated SNR (bypassed on clean speech; see README)")
    chain.add_argument("--no-gate-sleep", dest="gate_sleep", action="store_false", default=None,
                       help="keep the gated denoiser running while the input reads clean (by default it stops "
                            "until noise comes back)")
    chain.add_argument("--atten-lim-db", type=float, help="DeepFilterNet attenuation limit in dB (default 20)")
    chain.add_argument("--dry", type=float, help="Demucs: share of the noisy input mixed back, 0..1 (default 0)")
    chain.add_argument("--denoise-hop", type=int,
                       help="Demucs: samples per step, a multiple of the model's frame (256 = 16 ms for "
                            "dns48); longer hops add latency and cut CPU time")
    chain.add_argument("--denoise-exact", action="store_true", default=None,
                       help="Demucs: wait for the resamplers' full look-ahead so the output equals the "
                            "offline pass (47.8 ms instead of 41.3 ms for dns48)")
    chain.add_argument("--denoise-int8", action="store_true", default=None,
                       help="Demucs: int8 weights for the deep layers and the LSTM (faster, slightly less exact)")
    chain.add_argument("--asr", help="whisper | nemo | module:factory (default whisper)")
    chain.add_argument("--model", help="recogniser model: whisper: a CTranslate2 model directory; nemo: a .nemo "
                       "file, a name in the checkpoint folders ($ASR_STREAM_HOME/checkpoints, ./checkpoints, bundled), or a NeMo pretrained name")
    chain.add_argument("--lookahead-ms", type=float,
                       help="nemo cache-aware models: right context in ms, one the model was trained with "
                            "(default: the model's default)")
    chain.add_argument("--streaming", choices=["auto", "cache-aware", "buffered"],
                       help="nemo: cache-aware (models trained with limited right context) or buffered "
                            "(full-context models, run on overlapping windows); default auto, from the model")
    chain.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"],
                       help="nemo: PyTorch, or ONNX Runtime (exported on first use, cached beside the model), "
                            "or ONNX Runtime with int8 matmul weights (faster, slightly less exact); default torch")
    chain.add_argument("--chunk-s", type=float, help="nemo buffered streaming: seconds each step decodes (default 2.0)")
    chain.add_argument("--left-s", type=float, help="nemo buffered streaming: left context in seconds (default 1.0)")
    chain.add_argument("--right-s", type=float,
                       help="nemo buffered streaming: right context in seconds, added to the latency (default 0.6)")
    chain.add_argument("--language", help="language code for multilingual models (default en)")
    chain.add_argument("--device", choices=["cpu", "cuda"],
                       help="where the recogniser runs (default cpu); DeepFilterNet always runs on the CPU")
    chain.add_argument("--threads", type=int, help="intra-op threads per stage (default 1)")
    CHAIN_DESTS[:] = [a.dest for a in chain._group_actions]


def settings_from_args(args: argparse.Namespace):
    from asr_stream.chain.presets import load_preset
    from asr_stream.chain.pipeline import Settings

    values = load_preset(args.config) if args.config else {}
    for f in fields(Settings):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if values.get("audio_path") and values.get("mode") is None:
        values["mode"] = "file"
    return Settings(**values)


def list_devices() -> int:
    from asr_stream.io.microphone import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no input devices found")
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")
    return 0


def run_captions(args: argparse.Namespace) -> int:
    from asr_stream.output.captions import Captions
    from asr_stream.output.writers import CaptionWriter
    from asr_stream.chain.pipeline import run
    from asr_stream.output.stats import format_summary, write_json

    settings = settings_from_args(args)
    if settings.mode == "microphone" and settings.audio_path:
        raise UserError("give either --audio_path or --mode microphone, not both")
    if args.server:
        given = [f"--{a.replace('_', '-')}" for a in CHAIN_DESTS if getattr(args, a, None) is not None]
        if given:
            raise UserError(f"{given[0]} is the server's choice: with --server only input and output flags apply")
    writer = CaptionWriter(args.output) if args.output else None
    captions = Captions(timestamps=args.timestamps)
    if args.server:
        from asr_stream.serve.remote import run_remote

        token = args.token or os.environ.get("ASR_STREAM_TOKEN") or None
        summary, _ = run_remote(settings, args.server, captions=captions, writer=writer, token=token)
    else:
        summary, _ = run(settings, captions=captions, writer=writer)
    if not args.quiet:
        print(format_summary(summary), file=sys.stderr)
    if args.stats_json:
        write_json(args.stats_json, summary)
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes as one `asr-stream: error: ...` line (exit 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"asr-stream: error: {message} (see {self.prog} --help)\n")


def build_denoise_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="asr-stream denoise",
        description="Denoise an audio file into another audio file with one of the chain's denoisers (16 kHz, "
                    "hop by hop, in bounded memory however long the file). By default for the best quality: "
                    "Demucs normalises by the whole file's level, measured in a first pass, and gives the "
                    "reference implementation's offline output. --live gives what the live chain hears.",
        epilog="The output is always mono: 16 kHz, or the input's rate with --keep-rate. Its format follows "
               "OUT's extension (.wav as 32-bit float, .flac, .ogg, ...). A progress bar shows on a terminal "
               "for files longer than 10 s.")
    p.add_argument("input", metavar="IN", help="audio file (wav, flac, ogg, mp3, ...; any rate and channels)")
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output audio file; its extension picks the format (.wav, .flac, .ogg, ...)")
    p.add_argument("--denoiser", default="dns48",
                   help="none | deepfilternet | gtcrn | rnnoise | dns48 | dns64 | master64 | FILE.th | NAME (NAME.th in the checkpoint folders) "
                        "| demucs (the one .th there) | module:factory (default dns48)")
    p.add_argument("--keep-rate", action="store_true",
                   help="resample the result back to the input's sample rate (still mono) instead of 16 kHz")
    p.add_argument("--dry", type=float, help="Demucs: share of the noisy input mixed back, 0..1 (default 0)")
    p.add_argument("--denoise-hop", type=int,
                   help="Demucs: samples per step, a multiple of the model's frame (256 for dns48)")
    p.add_argument("--denoise-exact", action="store_true", default=None,
                   help="Demucs: wait for the resamplers' full look-ahead so the output equals the offline pass")
    p.add_argument("--denoise-int8", action="store_true", default=None,
                   help="Demucs: int8 weights for the deep layers and the LSTM (faster, slightly less exact)")
    p.add_argument("--atten-lim-db", type=float, help="DeepFilterNet attenuation limit in dB (default 20)")
    p.add_argument("--live", action="store_true",
                   help="the live chain's output instead: one pass, Demucs with a running level estimate")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line on stderr")
    return p


def run_denoise(argv: list[str]) -> int:
    from asr_stream.denoisers.denoise_file import denoise_file, format_summary

    args = build_denoise_parser().parse_args(argv)
    options = dict(dry=args.dry, denoise_hop=args.denoise_hop, denoise_exact=args.denoise_exact,
                   denoise_int8=args.denoise_int8, atten_lim_db=args.atten_lim_db)
    try:
        summary = denoise_file(args.input, args.output, denoiser=args.denoiser, keep_rate=args.keep_rate,
                               options=options, progress=False if args.quiet else None, threads=args.threads,
                               live=args.live)
    except KeyboardInterrupt:  # nothing half-written is left behind
        print(f"asr-stream: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    if not args.quiet:
        print(format_summary(summary), file=sys.stderr)
    return 0


def build_loadtest_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="asr-stream loadtest",
        description="How many real-time streams this machine holds: N sessions of continuous real speech, fed "
                    "at wall-clock rate with staggered starts, through one set of shared engines in this "
                    "process. For each N: partial and final latency p50/p95, CPU per stream, RSS, dropped "
                    "audio, skipped partials, batching; then the largest N that holds the targets.",
        epilog="Without --streams, N doubles from 1 until a run misses a target, then the gap is halved. "
               "Chain flags are the captioning command's (a --config preset too).")
    p.add_argument("--streams", help="comma-separated N to run (default: search for the largest that holds)")
    p.add_argument("--max-streams", type=int, default=64, help="search no further than this N (default 64)")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per stream (default 30)")
    p.add_argument("--stagger-s", type=float, default=2.0, help="spread the N starts over this many seconds (default 2)")
    p.add_argument("--audio", nargs="+", metavar="FILE",
                   help="speech files, joined end to end per stream (default: the bundled samples)")
    p.add_argument("--workers", type=int, help="scheduler threads (default: 2 per core)")
    p.add_argument("--max-backlog-s", type=float, default=4.0,
                   help="a session further behind than this drops its oldest audio, counted (default 4)")
    p.add_argument("--final-p95", type=float, default=1.5, help="target: final latency p95 in seconds (default 1.5)")
    p.add_argument("--no-batch", dest="batch", action="store_false", default=None,
                   help="run each stream's model calls alone instead of batching concurrent ones")
    p.add_argument("--json", help="write every result to this JSON file")
    p.add_argument("--server", metavar="URL",
                   help="load a running 'asr-stream serve' at ws://HOST:PORT over WebSockets instead of engines in "
                        "this process (chain flags are then the server's; CPU and RSS come from its /metrics)")
    p.add_argument("--token", help="the server's token (default: $ASR_STREAM_TOKEN)")
    p.add_argument("--config", help="a preset: a bundled name (default, no-denoiser, nemo, ...), one of yours in $ASR_STREAM_HOME/configs, or a YAML path; flags override it")
    p.add_argument("--denoiser", help="as for captioning (default deepfilternet)")
    p.add_argument("--no-gate", dest="gate", action="store_false", default=None, help="denoiser output as it is")
    p.add_argument("--no-gate-sleep", dest="gate_sleep", action="store_false", default=None,
                   help="keep the gated denoiser running on clean input")
    p.add_argument("--asr", help="whisper | nemo | module:factory (default whisper)")
    p.add_argument("--model", help="recogniser model (as for captioning)")
    p.add_argument("--language", help="language code for multilingual models (default en)")
    p.add_argument("--lookahead-ms", type=float, help="nemo cache-aware models: right context in ms")
    p.add_argument("--streaming", choices=["auto", "cache-aware", "buffered"], help="nemo streaming mode")
    p.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], help="nemo runtime (default torch)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where the recogniser runs (default cpu)")
    p.add_argument("--threads", type=int, help="intra-op threads per model call (default 1)")
    return p


def run_loadtest(argv: list[str]) -> int:
    import json

    from asr_stream.runtime.threads import usable_cores
    from asr_stream.serve import loadtest

    args = build_loadtest_parser().parse_args(argv)
    args.pace, args.mode = "realtime", "file"  # live sessions: partials are skipped when behind
    settings = settings_from_args(args)
    if args.seconds <= 0 or args.stagger_s < 0 or args.max_backlog_s <= 0:
        raise UserError("--seconds and --max-backlog-s must be positive, --stagger-s not negative")
    ladder = None
    if args.streams:
        try:
            ladder = [int(n) for n in args.streams.split(",")]
        except ValueError:
            raise UserError(f"--streams: comma-separated whole numbers, got '{args.streams}'") from None
        if min(ladder) < 1:
            raise UserError("--streams: every N must be at least 1")
    for f in args.audio or []:
        if not os.path.isfile(f):
            raise UserError(f"--audio: {f} does not exist")
    files = args.audio or loadtest.default_files()
    targets = loadtest.Targets(final_p95_s=args.final_p95)
    longest = max(ladder) if ladder else args.max_streams
    if args.server:
        run, chain = _remote_load_runner(args, files, targets)
    else:
        run, chain = _local_load_runner(args, settings, files, targets)
    print(loadtest.HEADER, flush=True)

    capacity, results = loadtest.find_capacity(run, max_streams=longest, ladder=ladder,
                                               log=lambda line: print(line, flush=True))
    print(f"capacity: {capacity} real-time stream{'s' if capacity != 1 else ''} hold the targets on this machine")
    if args.json:
        with open(args.json, "w") as f:
            # chain and cores: what `serve --capacity FILE` checks it is measured for
            json.dump({"capacity": capacity, "chain": chain, "cores": usable_cores(), "final_p95_s": args.final_p95,
                       "server": args.server, "results": [r.as_dict() for r in results]}, f, indent=2)
            f.write("\n")
    return 0


def build_serve_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="asr-stream serve",
        description="The captioning daemon: engines loaded once, each WebSocket session a stream over them "
                    "(ws://HOST:PORT/v1/stream); a caption page at /, probes at /healthz and /readyz, Prometheus "
                    "metrics at /metrics. SIGTERM or Ctrl-C drains: no new sessions, in-flight ones get their last "
                    "finals and close 1001, then exit 0.",
        epilog="Chain flags are the captioning command's (a --config preset too). The protocol is in the README.")
    net = p.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    net.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    net.add_argument("--max-sessions", type=int, default=8,
                     help="sessions at once at most; past the limit handshakes get HTTP 503 (default 8)")
    net.add_argument("--capacity", default="auto", metavar="auto|off|FILE",
                     help="the session limit under --max-sessions: auto measures one session of the chain at start "
                          "and takes what the cores hold; FILE is an 'asr-stream loadtest --json' run of the same "
                          "chain (the sessions it held); off: --max-sessions alone (default auto)")
    net.add_argument("--max-session-seconds", type=float, help="wall-clock limit per session (default none)")
    net.add_argument("--max-frame-bytes", type=int, default=1 << 20, help="largest audio frame (default 1 MiB)")
    net.add_argument("--wyoming", metavar="tcp://HOST:PORT",
                     help="also serve the Wyoming speech-to-text protocol there (Home Assistant), "
                          "e.g. tcp://127.0.0.1:10300")
    net.add_argument("--max-upload-mb", type=float, default=25.0,
                     help="largest file for POST /v1/audio/transcriptions, in MB (default 25, as OpenAI's)")
    net.add_argument("--token", help="require this token (Authorization: Bearer or ?token=); default "
                                     "$ASR_STREAM_TOKEN, none if unset")
    net.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="a web origin (https://host:port) whose pages may open sessions, besides this server's "
                          "own page; repeat for more, * for any")
    net.add_argument("--drain-seconds", type=float, default=20.0,
                     help="on SIGTERM, how long in-flight sessions get to finish (default 20)")
    net.add_argument("--workers", type=int,
                     help="worker processes, each holding the engines; sessions go to the least loaded "
                          "(default: one per core; 0: the engines in the daemon's own process)")
    net.add_argument("--stream-threads", type=int, default=2,
                     help="scheduler threads per worker process (with --workers 0: per core; default 2)")
    net.add_argument("--max-backlog-s", type=float, default=4.0,
                     help="a live session further behind than this drops its oldest audio, counted (default 4)")
    net.add_argument("--instance", help="this daemon's name in messages, logs and /readyz (default host:pid)")
    net.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines (default text)")
    net.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                     help="skip the short warm-up session before the first client")
    add_chain_args(p.add_argument_group("chain"))
    return p


def run_serve(argv: list[str]) -> int:
    from asr_stream.serve.server import ServerConfig, serve

    args = build_serve_parser().parse_args(argv)
    args.pace, args.mode = "realtime", "file"  # engines for live sessions; file sessions ask with ?pace=fast
    settings = settings_from_args(args)
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    if args.stream_threads < 1:
        raise UserError(f"--stream-threads must be at least 1, got {args.stream_threads}")
    config = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions,
                          max_session_s=args.max_session_seconds, max_frame_bytes=args.max_frame_bytes,
                          max_upload_bytes=int(args.max_upload_mb * 1_000_000), wyoming=args.wyoming,
                          token=args.token if args.token is not None else os.environ.get("ASR_STREAM_TOKEN") or None,
                          allow_origins=tuple(o.rstrip("/") for o in args.allow_origin), drain_s=args.drain_seconds,
                          workers=args.workers, stream_threads=args.stream_threads,
                          max_backlog_s=args.max_backlog_s, warm_up=args.warm_up, capacity=args.capacity,
                          **({"instance": args.instance} if args.instance else {}))
    return serve(settings, config, log_format=args.log_format)


def _local_load_runner(args, settings, files, targets):
    from asr_stream.serve import loadtest
    from asr_stream.serve.admission import describe_chain
    from asr_stream.chain.engines import load_engines
    from asr_stream.runtime.threads import usable_cores

    workers = args.workers or 2 * usable_cores()
    if workers < 1:
        raise UserError("--workers must be at least 1")
    engines = load_engines(settings)
    print(f"loadtest: {engines.denoiser.name} + {engines.recognizer.name}, {args.seconds:g} s of speech per stream "
          f"from {len(files)} files, {workers} workers, batching {'on' if settings.batch else 'off'}; target final "
          f"p95 <= {args.final_p95:g} s, no dropped audio", flush=True)
    loadtest.warm_up(engines, loadtest.speech_tracks(files, 1, 3.0)[0])

    def run(n: int):
        tracks = loadtest.speech_tracks(files, n, args.seconds)
        return loadtest.run_load(engines, tracks, stagger_s=args.stagger_s, workers=workers,
                                 max_backlog_s=args.max_backlog_s, targets=targets)

    return run, describe_chain(settings, engines.denoiser.name, engines.recognizer.name)


def _remote_load_runner(args, files, targets):
    from asr_stream.serve import loadtest

    chain = [f"--{a.replace('_', '-')}" for a in ("config", "denoiser", "gate", "gate_sleep", "asr", "model", "language",
                                                  "lookahead_ms", "streaming", "runtime", "device", "threads",
                                                  "batch", "workers") if getattr(args, a, None) is not None]
    if chain:
        raise UserError(f"{chain[0]} is the server's choice: with --server the daemon's chain is loaded")
    token = args.token or os.environ.get("ASR_STREAM_TOKEN") or None
    warm = loadtest.run_remote_load(args.server, loadtest.speech_tracks(files, 1, 3.0), token=token)
    if warm.errors:
        raise UserError(f"loadtest: the server at {args.server} failed a first session: {warm.errors[0]}")
    print(f"loadtest: the daemon at {args.server}, {args.seconds:g} s of speech per session from {len(files)} files, "
          f"over WebSockets; target final p95 <= {args.final_p95:g} s, no dropped audio", flush=True)

    def run(n: int):
        tracks = loadtest.speech_tracks(files, n, args.seconds)
        return loadtest.run_remote_load(args.server, tracks, stagger_s=args.stagger_s, token=token, targets=targets)

    return run, loadtest.server_chain(args.server)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "denoise":
        return _guarded(lambda: run_denoise(argv[1:]))
    if argv and argv[0] == "serve":
        return _guarded(lambda: run_serve(argv[1:]))
    if argv and argv[0] == "loadtest":
        return _guarded(lambda: run_loadtest(argv[1:]))
    if argv and argv[0] == "eval":
        from asr_stream.evaluation.cli import run_eval

        return _guarded(lambda: run_eval(argv[1:]))
    args = build_parser().parse_args(argv)

    def captions() -> int:
        if args.list_devices:
            return list_devices()
        if not args.audio_path and args.mode != "microphone" and not args.config:
            raise UserError("no input: give --audio_path FILE (or - for stdin), or --mode microphone")
        return run_captions(args)

    return _guarded(captions)


def _guarded(fn) -> int:
    """Run a command: user errors exit 2, failing stages 1, never a traceback."""
    try:
        return fn()
    except UserError as exc:
        print(f"asr-stream: error: {exc}", file=sys.stderr)
        return 2
    except StageError as exc:
        print(f"asr-stream: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback for users; ASR_STREAM_DEBUG=1 shows it
        if os.environ.get("ASR_STREAM_DEBUG"):
            raise
        print(f"asr-stream: internal error: {type(exc).__name__}: {exc} (ASR_STREAM_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
