"""Recognisers by name: `whisper` (the embedded default), `nemo` (a Conformer-CTC `.nemo`,
cache-aware or buffered, `--model`), or `package.module:factory`."""

from __future__ import annotations

from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import Recognizer


def create_recognizer(spec: str, **options) -> Recognizer:
    """Build the recogniser `spec` names. `options` are the chain's settings (model, device,
    threads, ...); each recogniser takes the ones it understands."""
    if spec in ("whisper", "whisper-tiny.en", "", None):
        from asr_stream.recognizers.whisper import WhisperStreamingRecognizer

        tuning = {k: options[k] for k in ("partial_interval_s", "commit_horizon_s", "keep_committed_s",
                                          "max_utterance_s") if options.get(k) is not None}
        return WhisperStreamingRecognizer(model=options.get("model"), device=options.get("device", "cpu"),
                                          threads=options.get("threads", 1),
                                          language=options.get("language", "en"),
                                          backlog_s=0.5 if options.get("live", True) else None, **tuning)
    if spec == "nemo":
        from asr_stream.recognizers.nemo_ctc import create_nemo_recognizer

        return create_nemo_recognizer(options.get("model"), streaming=options.get("streaming", "auto"),
                                      runtime=options.get("runtime", "torch"),
                                      lookahead_ms=options.get("lookahead_ms"),
                                      chunk_s=options.get("chunk_s", 2.0), left_s=options.get("left_s", 1.0),
                                      right_s=options.get("right_s", 0.6), device=options.get("device", "cpu"),
                                      threads=options.get("threads", 1))
    if ":" in spec:
        return load_factory(spec, "recognizer")(**options)
    raise UserError(f"unknown recognizer '{spec}' (use whisper, nemo, or module:factory)")
