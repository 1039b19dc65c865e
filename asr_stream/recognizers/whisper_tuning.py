"""The streaming Whisper policy's settings, typed and named, so a preset can set them and a
typo is an error rather than a silent default. In a preset:

    asr: whisper
    whisper:
      partial_interval_s: 0.3   # decode more often: words show sooner, at more CPU
      commit_horizon_s: 1.5     # commit unsettled words sooner: lower latency, more rewrites avoided later

The agreement settings (`commit_horizon_s`, `edge_margin_s`, `last_word_margin_s`,
`min_agree_buffer_s`) are `local_agreement.AgreementRule`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from asr_stream.errors import UserError
from asr_stream.recognizers.local_agreement import AgreementRule


@dataclass(frozen=True)
class WhisperTuning:
    partial_interval_s: float = 0.4  # audio between partial decodes while speech goes on
    keep_committed_s: float = 1.0  # committed audio kept in the buffer as the next decode's context
    max_buffer_s: float = 10.0  # the buffer is cut to this, at worst (uncommitted speech is counted)
    max_utterance_s: float = 15.0  # an utterance nobody pauses in is closed at a sentence end after this
    min_silence_s: float = 0.5  # the pause that ends an utterance (Silero VAD)
    preroll_s: float = 0.5  # audio before the VAD's speech onset kept for the first decode
    lead_pad_s: float = 0.5  # silence before the stream's first sample in its decodes (speech may start there)
    final_pad_s: float = 4.0  # silence padded after an utterance's last audio for its final decode
    cut_margin_s: float = 0.15  # the buffer is cut at least this far before the next word's onset
    agreement: AgreementRule = field(default_factory=AgreementRule)

    @classmethod
    def names(cls) -> list[str]:
        own = [f.name for f in fields(cls) if f.name != "agreement"]
        return own + [f.name for f in fields(AgreementRule)]

    @classmethod
    def from_mapping(cls, values: dict | None) -> "WhisperTuning":
        """From a preset's `whisper:` section; unknown names and bad values are one-line errors."""
        if values is not None and not isinstance(values, dict):
            raise UserError("the preset's whisper section must be a mapping of settings")
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise UserError(f"unknown whisper setting(s) {', '.join(unknown)} (known: {', '.join(cls.names())})")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                    or (value == 0 and name not in ("cut_margin_s", "preroll_s", "lead_pad_s", "edge_margin_s",
                                                    "last_word_margin_s", "min_agree_buffer_s")):
                raise UserError(f"whisper setting {name} must be a positive number of seconds, got {value!r}")
        rule_names = {f.name for f in fields(AgreementRule)}
        rule = replace(AgreementRule(), **{k: float(v) for k, v in values.items() if k in rule_names})
        return cls(agreement=rule, **{k: float(v) for k, v in values.items() if k not in rule_names})
