"""Recognisers by name: `whisper` (the embedded default), `nemo` (a cache-aware Conformer-CTC
`.nemo`, `--model`), or `package.module:factory`."""

from __future__ import annotations

from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import Recognizer


def create_recognizer(spec: str, **options) -> Recognizer:
    """Build the recogniser `spec` names. `options` are the chain's settings (model, device,
    threads, ...); each recogniser takes the ones it understands."""
    if spec in ("whisper", "whisper-tiny.en", "", None):
        from asr_stream.recognizers.whisper import WhisperStreamingRecognizer

        return WhisperStreamingRecognizer(model_path=options.get("model"), device=options.get("device", "cpu"),
                                          threads=options.get("threads", 1),
                                          language=options.get("language", "en"),
                                          backlog_s=2.0 if options.get("live", True) else None,
                                          partial_interval_s=options.get("partial_interval_s", 0.4))
    if spec == "nemo":
        from asr_stream.recognizers.nemo_ctc import CacheAwareCtcRecognizer, load_nemo_model

        model = load_nemo_model(options.get("model"), device=options.get("device", "cpu"))
        return CacheAwareCtcRecognizer(model, lookahead_ms=options.get("lookahead_ms"),
                                       threads=options.get("threads", 1))
    if ":" in spec:
        return load_factory(spec, "recognizer")(**options)
    raise UserError(f"unknown recognizer '{spec}' (use whisper, nemo, or module:factory)")
