"""Recognisers by name: `whisper` (the embedded default), `nemo` (a Conformer-CTC `.nemo`,
cache-aware or buffered, `--model`), or `package.module:factory`.

`load_recognizer_engine` loads the model once; each session gets its own recogniser from the
engine's `create_stream()`."""

from __future__ import annotations

from asr_stream.errors import UserError
from asr_stream.plugins import load_factory
from asr_stream.stages import FactoryEngine, Recognizer, RecognizerEngine


def load_recognizer_engine(spec: str, **options) -> RecognizerEngine:
    """Load the recogniser `spec` names. `options` are the chain's settings (model, device,
    threads, batch, ...); each recogniser takes the ones it understands."""
    if spec in ("whisper", "whisper-tiny.en", "", None):
        from asr_stream.recognizers.whisper import WhisperEngine, load_decoder
        from asr_stream.recognizers.whisper_tuning import WhisperTuning

        tuning = WhisperTuning.from_mapping(options.get("whisper"))
        decoder = load_decoder(options.get("model"), device=options.get("device", "cpu"),
                               threads=options.get("threads", 1), language=options.get("language", "en"),
                               batch=options.get("batch", True), concurrency=options.get("concurrency", 1))
        return WhisperEngine(decoder, backlog_s=0.5 if options.get("live", True) else None, tuning=tuning)
    if spec == "nemo":
        from asr_stream.recognizers.nemo_ctc import load_nemo_engine

        return load_nemo_engine(options.get("model"), streaming=options.get("streaming", "auto"),
                                runtime=options.get("runtime", "torch"), lookahead_ms=options.get("lookahead_ms"),
                                chunk_s=options.get("chunk_s", 2.0), left_s=options.get("left_s", 1.0),
                                right_s=options.get("right_s", 0.6), device=options.get("device", "cpu"),
                                threads=options.get("threads", 1), batch=options.get("batch", True),
                                concurrency=options.get("concurrency", 1))
    if ":" in spec:
        return FactoryEngine.of(load_factory(spec, "recognizer"), options)
    raise UserError(f"unknown recognizer '{spec}' (use whisper, nemo, or module:factory)")


def create_recognizer(spec: str, **options) -> Recognizer:
    """One stream's recogniser over a newly loaded engine (tests and one-off tools; the chain
    shares engines through `asr_stream.chain.engines`)."""
    return load_recognizer_engine(spec, **options).create_stream()
