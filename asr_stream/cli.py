"""`asr-stream`: live captions from a file, stdin or a microphone. A thin argparse layer over
`asr_stream.pipeline`."""

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
        description="Real-time streaming speech recognition with live captions.",
        epilog="Default chain: DeepFilterNet3 denoiser + Whisper tiny.en (both ship inside pip packages).")
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
    chain = p.add_argument_group("chain")
    chain.add_argument("--config", help="a preset from configs/ (name or path); flags override it")
    chain.add_argument("--denoiser", help="none | deepfilternet | module:factory (default deepfilternet)")
    chain.add_argument("--atten-lim-db", type=float, help="DeepFilterNet attenuation limit in dB (default 20)")
    chain.add_argument("--asr", help="whisper | module:factory (default whisper)")
    chain.add_argument("--model", help="recogniser model path (whisper: a CTranslate2 model directory)")
    chain.add_argument("--language", help="language code for multilingual models (default en)")
    chain.add_argument("--device", choices=["cpu", "cuda"],
                       help="where the recogniser runs (default cpu); DeepFilterNet always runs on the CPU")
    chain.add_argument("--threads", type=int, help="intra-op threads per stage (default 1)")
    out = p.add_argument_group("output")
    out.add_argument("--timestamps", action="store_true", help="prefix each caption with its start and end time")
    out.add_argument("--output", help="write finals to FILE (.jsonl, .srt, .vtt or .txt)")
    out.add_argument("--stats-json", help="write the run's summary to this JSON file")
    out.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    p.add_argument("--version", action="version", version=f"asr-stream {__version__}")
    return p


def settings_from_args(args: argparse.Namespace):
    from asr_stream.config import load_preset
    from asr_stream.pipeline import Settings

    values = load_preset(args.config) if args.config else {}
    for f in fields(Settings):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if values.get("audio_path") and values.get("mode") is None:
        values["mode"] = "file"
    return Settings(**values)


def list_devices() -> int:
    from asr_stream.microphone import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no input devices found")
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")
    return 0


def run_captions(args: argparse.Namespace) -> int:
    from asr_stream.captions import Captions
    from asr_stream.outputs import CaptionWriter
    from asr_stream.pipeline import run
    from asr_stream.stats import format_summary, write_json

    settings = settings_from_args(args)
    if settings.mode == "microphone" and settings.audio_path:
        raise UserError("give either --audio_path or --mode microphone, not both")
    writer = CaptionWriter(args.output) if args.output else None
    captions = Captions(timestamps=args.timestamps)
    summary, _ = run(settings, captions=captions, writer=writer)
    if not args.quiet:
        print(format_summary(summary), file=sys.stderr)
    if args.stats_json:
        write_json(args.stats_json, summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.list_devices:
            return list_devices()
        if not args.audio_path and args.mode != "microphone" and not args.config:
            raise UserError("no input: give --audio_path FILE (or - for stdin), or --mode microphone")
        return run_captions(args)
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
