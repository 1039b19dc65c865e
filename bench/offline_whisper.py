#!/usr/bin/env python
"""Reference for the streaming recogniser: Whisper tiny.en (the same bundled model) run offline by
faster-whisper on each clip whole (30 s window, greedy, no VAD), scored like the benchmark.

    python bench/offline_whisper.py MANIFEST.jsonl [--json OUT]

MANIFEST.jsonl has one {"audio": path, "text": reference} per line.
"""

from __future__ import annotations

import argparse
import json
import sys

import jiwer
import soundfile as sf
from faster_whisper import WhisperModel
from whisper_normalizer.english import EnglishTextNormalizer

from asr_stream.recognizers.whisper import bundled_model_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("--json", help="write {wer, n, hyps} here")
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in open(args.manifest) if line.strip()]
    model = WhisperModel(bundled_model_path(), device="cpu", compute_type="int8", cpu_threads=1)
    norm = EnglishTextNormalizer()
    refs, hyps = [], []
    for row in rows:
        audio, sr = sf.read(row["audio"], dtype="float32")
        assert sr == 16000, "the manifest's audio must be 16 kHz"
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False)
        hyps.append(norm(" ".join(s.text for s in segments)) or "<empty>")
        refs.append(norm(row["text"]))
    out = {"wer": jiwer.wer(refs, hyps), "n": sum(len(r.split()) for r in refs), "clips": len(rows), "hyps": hyps}
    print(f"offline Whisper tiny.en: WER {out['wer'] * 100:.1f}% over {out['n']} words, {len(rows)} clips")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
