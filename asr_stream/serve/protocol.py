"""The daemon's wire protocol, shared by the server and its clients.

    GET /v1/stream?sample_rate=16000&encoding=s16le&channels=1&pace=live&partials=true
    client -> server: binary frames of raw PCM; text {"type": "end"} ends the audio
    server -> client: {"type": "ready"}, then "partial" / "final" messages, then
                      {"type": "end", "summary": {...}} and close 1000; or {"type": "error"}
                      and one of the close codes below.

Only the parameters named here are accepted: a session can choose how its audio is framed and
what it is sent, never which model or file the server uses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from asr_stream.stages import Hypothesis, Word

PATH = "/v1/stream"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is draining
CLOSE_BAD_MESSAGE = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_OVER_CAPACITY = 1013

ENCODINGS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
PACES = ("live", "fast")
MAX_RATE = 384_000
MAX_CHANNELS = 32


class ProtocolError(ValueError):
    """A request or message that breaks the protocol; its text goes back to the client."""


@dataclass(frozen=True)
class StreamParams:
    """One session's own options, from its handshake's query string."""

    sample_rate: int = 16000
    encoding: str = "s16le"
    channels: int = 1
    pace: str = "live"  # live: at most about real time; fast: a file, as fast as the server goes
    partials: bool = True  # send partial hypotheses (finals are always sent)

    @classmethod
    def from_query(cls, query) -> "StreamParams":
        """Parse and check a handshake's query (a mapping of str to str); `token` is the
        server's business and is skipped here."""
        allowed = {f.name for f in dataclasses.fields(cls)} | {"token"}
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise ProtocolError(f"unknown parameter '{unknown[0]}' (accepted: {', '.join(sorted(allowed - {'token'}))})")
        values = {}
        for name in ("sample_rate", "channels"):
            if name in query:
                try:
                    values[name] = int(query[name])
                except ValueError:
                    raise ProtocolError(f"{name} must be a whole number, got '{query[name]}'") from None
        if "encoding" in query:
            values["encoding"] = query["encoding"]
        if "pace" in query:
            values["pace"] = query["pace"]
        if "partials" in query:
            flag = query["partials"].lower()
            if flag not in ("true", "false", "1", "0"):
                raise ProtocolError(f"partials must be true or false, got '{query['partials']}'")
            values["partials"] = flag in ("true", "1")
        params = cls(**values)
        if not 1000 <= params.sample_rate <= MAX_RATE:
            raise ProtocolError(f"sample_rate must be between 1000 and {MAX_RATE}, got {params.sample_rate}")
        if params.encoding not in ENCODINGS:
            raise ProtocolError(f"unknown encoding '{params.encoding}' (use {' or '.join(ENCODINGS)})")
        if not 1 <= params.channels <= MAX_CHANNELS:
            raise ProtocolError(f"channels must be between 1 and {MAX_CHANNELS}, got {params.channels}")
        if params.pace not in PACES:
            raise ProtocolError(f"unknown pace '{params.pace}' (use {' or '.join(PACES)})")
        return params

    def query(self) -> dict[str, str]:
        return {"sample_rate": str(self.sample_rate), "encoding": self.encoding, "channels": str(self.channels),
                "pace": self.pace, "partials": "true" if self.partials else "false"}

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.channels * ENCODINGS[self.encoding].itemsize


class PcmDecoder:
    """Raw PCM frames to mono float32 at the client's rate. A frame may end inside a sample or
    between channels: the rest is carried to the next frame."""

    def __init__(self, params: StreamParams):
        self.dtype = ENCODINGS[params.encoding]
        self.channels = params.channels
        self.frame = self.dtype.itemsize * params.channels
        self._carry = b""
        self.samples = 0  # per channel, decoded so far

    def decode(self, data: bytes) -> np.ndarray:
        data = self._carry + data if self._carry else data
        n = len(data) // self.frame * self.frame
        self._carry = data[n:]
        x = np.frombuffer(data[:n], dtype=self.dtype)
        x = x.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else x.astype(np.float32)
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        self.samples += len(x)
        return x


def encode_pcm(samples: np.ndarray, encoding: str) -> bytes:
    """Mono float32 in [-1, 1] as the bytes of `encoding` (for clients)."""
    x = np.asarray(samples, np.float32)
    if encoding == "s16le":
        return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()
    return x.astype("<f4").tobytes()


def hypothesis_message(hyp: Hypothesis) -> dict:
    words = []
    for w in hyp.words:
        word = {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
        if w.glued:  # joins the word before it with no space ("sun" + "light")
            word["glued"] = True
        words.append(word)
    return {"type": "final" if hyp.final else "partial", "utterance": hyp.utterance, "text": hyp.text,
            "stable": len(hyp.words) if hyp.final else hyp.stable, "words": words}


def hypothesis_from_message(msg: dict, emitted_at: float = 0.0) -> Hypothesis:
    words = tuple(Word(w["word"], float(w["start"]), float(w["end"]), bool(w.get("glued", False)))
                  for w in msg["words"])
    return Hypothesis(int(msg["utterance"]), words, int(msg["stable"]), msg["type"] == "final", emitted_at)


def parse_client_text(text: str) -> dict:
    """A client's text message: only {"type": "end"} is defined."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ProtocolError("text messages must be JSON, e.g. {\"type\": \"end\"}") from None
    if not isinstance(msg, dict) or msg.get("type") != "end":
        raise ProtocolError("unknown message: the only text message is {\"type\": \"end\"}; audio goes in binary frames")
    return msg
