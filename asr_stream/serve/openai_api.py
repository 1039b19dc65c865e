"""`POST /v1/audio/transcriptions` on the daemon: the OpenAI-style file transcription API, so the
tools that already speak it (the official `openai` client among them) caption through our chain.

An upload is a session like a WebSocket one: it needs the token, takes a slot (503 when full),
obeys the daemon's limits, runs through the same scheduler at file pace (waiting for room, never
dropping audio), and the drain waits for it. Errors have OpenAI's shape, `{"error": {...}}`.

The chain is the daemon's: `model` is accepted whatever it names, `language` must be the
chain's, and `prompt` and `temperature` are accepted but not used (the streaming recogniser
prompts itself with its own committed words). With `stream=true` each final is sent as a
`transcript.text.delta` server-sent event as soon as it is recognised, then
`transcript.text.done`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from asr_stream import SAMPLE_RATE
from asr_stream.io.framer import sanitize
from asr_stream.output.writers import srt_cue, vtt_cue
from asr_stream.io.resampler import StreamingResampler
from asr_stream.serve.prometheus import refusal_reason
from asr_stream.stages import Hypothesis, join_words

log = logging.getLogger("asr_stream.serve.server")

PATH = "/v1/audio/transcriptions"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
ACCEPTED_UNUSED = ("model", "prompt", "temperature", "chunking_strategy")
MAX_FIELD_BYTES = 64 * 1024  # a form field other than the file
END_WAIT_S = 300.0  # after the last audio, how long the finals may take


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return web.json_response(error_body(exc.message, exc.status, exc.param, exc.code), status=exc.status,
                             headers=headers)


@dataclass
class TranscriptionRequest:
    audio: bytes
    filename: str
    response_format: str = "json"
    stream: bool = False
    language: str | None = None
    words: bool = False  # timestamp_granularities[] includes "word"


async def read_request(request: web.Request, max_upload_bytes: int) -> TranscriptionRequest:
    """The multipart form, checked field by field; the file is read with a size cap."""
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "send multipart/form-data with the audio in a 'file' field", "file")
    reader = await request.multipart()
    audio, filename, fields, granularities = None, "", {}, []
    while (part := await reader.next()) is not None:
        name = part.name or ""
        if name == "file":
            data = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                data += chunk
                if len(data) > max_upload_bytes:
                    raise ApiError(413, f"the file is over the daemon's limit of {max_upload_bytes} bytes "
                                        f"(--max-upload-mb)", "file", "file_too_large")
            audio, filename = bytes(data), part.filename or ""
            continue
        value = (await part.read(decode=True))[:MAX_FIELD_BYTES + 1]
        if len(value) > MAX_FIELD_BYTES:
            raise ApiError(400, f"form field '{name}' is too long", name)
        text = value.decode("utf-8", "replace").strip()
        if name in ("timestamp_granularities[]", "timestamp_granularities"):
            granularities.append(text)
        elif name in ("include[]", "include"):
            raise ApiError(400, f"include '{text}' is not available from this daemon", name)
        elif name in ("response_format", "stream", "language", *ACCEPTED_UNUSED):
            fields[name] = text
        else:
            raise ApiError(400, f"unknown parameter '{name}'", name, "unknown_parameter")
    if audio is None:
        raise ApiError(400, "no 'file' field: send the audio as a file in the form", "file")
    fmt = fields.get("response_format") or "json"
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format '{fmt}' is not one of {', '.join(FORMATS)}", "response_format")
    stream = fields.get("stream", "false").lower()
    if stream not in ("true", "false"):
        raise ApiError(400, f"stream must be true or false, got '{stream}'", "stream")
    if stream == "true" and fmt not in ("json", "text"):
        raise ApiError(400, "stream=true works with response_format json or text", "stream")
    for g in granularities:
        if g not in ("word", "segment"):
            raise ApiError(400, f"timestamp_granularities '{g}' is not word or segment", "timestamp_granularities[]")
    return TranscriptionRequest(audio, filename, fmt, stream == "true", fields.get("language") or None,
                                "word" in granularities)


def decode_audio(data: bytes) -> tuple[np.ndarray, float]:
    """Any file libsndfile reads (wav, flac, ogg, mp3, ...) as 16 kHz mono float32, and its length
    in seconds; bad samples (NaN, inf) are zeroed as for every other input."""
    import soundfile as sf

    try:
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, sf.LibsndfileError) as exc:
        detail = re.sub(r"^Error opening <[^>]*>: ", "", (str(exc).splitlines() or [type(exc).__name__])[0])
        raise ApiError(400, f"could not decode the audio file: {detail}", "file", "invalid_audio") from None
    if not len(x):
        raise ApiError(400, "the audio file holds no samples", "file", "invalid_audio")
    x, _ = sanitize(x.mean(axis=1).astype(np.float32))
    resampler = StreamingResampler(rate, SAMPLE_RATE)
    y = np.concatenate([resampler.process(x), resampler.flush()]).astype(np.float32)
    return y, len(x) / rate


@dataclass
class Upload:
    """One transcription request while it holds a session slot. The drain treats it like a
    WebSocket session: its audio is all here, so it finishes within the drain or is cancelled."""

    id: str
    task: asyncio.Task | None = None
    session: object = None
    finals: list[Hypothesis] = field(default_factory=list)

    def stop_reading(self, reason: str) -> None:
        pass

    async def abort(self, code: int, message: str) -> None:
        if self.session is not None:
            self.session.cancel()
        if self.task is not None:
            self.task.cancel()


# -- the response formats ------------------------------------------------------------------
def transcript_text(finals: list[Hypothesis]) -> str:
    return " ".join(h.text.strip() for h in finals if h.text.strip())


def render(finals: list[Hypothesis], fmt: str, duration_s: float, language: str | None, words: bool):
    """(body, content type) of a finished transcription."""
    text = transcript_text(finals)
    if fmt == "text":
        return text + "\n", "text/plain"
    spoken = [h for h in finals if h.words]
    if fmt == "srt":
        return "".join(srt_cue(n, h) for n, h in enumerate(spoken, 1)), "application/x-subrip"
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(vtt_cue(h) for h in spoken), "text/vtt"
    usage = {"type": "duration", "seconds": round(duration_s, 3)}
    if fmt == "json":
        return json.dumps({"text": text, "usage": usage}, ensure_ascii=False), "application/json"
    body = {"task": "transcribe", "language": language or "", "duration": round(duration_s, 3), "text": text,
            "segments": [{"id": n, "seek": int(h.start * 100), "start": round(h.start, 3), "end": round(h.end, 3),
                          "text": join_words(h.words), "tokens": [], "temperature": 0.0}
                         for n, h in enumerate(spoken)],
            "usage": usage}
    if words:
        body["words"] = [{"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                         for h in spoken for w in h.words]
    return json.dumps(body, ensure_ascii=False), "application/json"


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


# -- the endpoint ----------------------------------------------------------------------------
class TranscriptionEndpoint:
    """Serves `POST /v1/audio/transcriptions` for a `CaptionServer`."""

    def __init__(self, server, max_upload_bytes: int):
        self.server = server
        self.max_upload_bytes = max_upload_bytes

    def _refuse(self, exc: ApiError, reason: str) -> web.Response:
        self.server.metrics.sessions_rejected.labels(reason).inc()
        log.info("refused", extra={"event": "refused", "reason": reason, "status": exc.status, "detail": exc.message,
                                   "path": PATH})
        return error_response(exc)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        server = self.server
        if not server._authorized(request):
            return self._refuse(ApiError(401, "missing or wrong token (Authorization: Bearer)", code="invalid_api_key"),
                                "unauthorized")
        if not server._origin_allowed(request):
            return self._refuse(ApiError(403, f"origin {request.headers.get('Origin')} is not allowed"), "origin")
        state = server._state()
        if state != "ready":
            return self._refuse(ApiError(503, f"not taking sessions: {state}"), refusal_reason(state))
        try:
            try:
                req = await read_request(request, self.max_upload_bytes)
            except (ValueError, AssertionError, UnicodeDecodeError) as exc:  # aiohttp's word for a broken form
                raise ApiError(400, f"malformed multipart form: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                               "file") from None
            chain_language = server.settings.language
            if req.language and chain_language and req.language.lower() != chain_language.lower():
                raise ApiError(400, f"this daemon transcribes '{chain_language}' (started with --language "
                                    f"{chain_language}); got language '{req.language}'", "language")
            audio, duration = await asyncio.to_thread(decode_audio, req.audio)
            limit = server.config.max_session_s
            if limit is not None and duration > limit:
                raise ApiError(413, f"the audio is {duration:.1f} s long; this daemon takes at most {limit:g} s "
                                    f"per session (--max-session-seconds)", "file", "audio_too_long")
        except ApiError as exc:
            return self._refuse(exc, "bad_request")
        if server._state() != "ready":  # it filled up while the upload came in
            return self._refuse(ApiError(503, f"not taking sessions: {server._state()}"), "capacity")
        upload = server.admit(lambda session_id: Upload(session_id, task=asyncio.current_task()))
        reason = "failed"
        try:
            response = await self._transcribe(request, upload, req, audio, duration)
            reason = "end"
            return response
        except asyncio.CancelledError:
            reason = "draining" if server.draining else "gone"
            raise
        finally:
            server.release(upload)
            server.metrics.sessions_ended.labels(reason).inc()
            log.info("session ended", extra={"event": "session_end", "session": upload.id, "reason": reason,
                                             "path": PATH, "audio_seconds": round(duration, 2)})

    async def _transcribe(self, request, upload: Upload, req: TranscriptionRequest, audio: np.ndarray,
                          duration: float) -> web.StreamResponse:
        server = self.server
        try:
            upload.session, arrivals = await server.open_file_session()
        except Exception as exc:
            raise web.HTTPInternalServerError(
                text=json.dumps(error_body(f"cannot start the session: {exc}", 500)),
                content_type="application/json") from None
        session = upload.session
        log.info("session opened", extra={"event": "session_open", "session": upload.id, "path": PATH,
                                          "audio_seconds": round(duration, 2), "peer": request.remote})
        feeder = asyncio.create_task(self._feed(session, audio))
        stream = None
        if req.stream:
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await stream.prepare(request)
        deadline = time.monotonic() + duration + END_WAIT_S
        try:
            while True:
                try:
                    hyp = await asyncio.wait_for(arrivals.get(), max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    session.cancel()
                    return await self._fail(stream, "the transcription did not finish in time")
                if hyp is None:
                    break
                if not hyp.text.strip():
                    continue
                upload.finals.append(hyp)
                if stream is not None:
                    delta = ("" if len(upload.finals) == 1 else " ") + hyp.text.strip()
                    # start and end (seconds in the file) are ours, beyond OpenAI's fields: captions need them
                    await stream.write(sse({"type": "transcript.text.delta", "delta": delta,
                                            "start": round(hyp.start, 3), "end": round(hyp.end, 3)}))
        finally:
            feeder.cancel()
        if session.error is not None:
            log.error("session failed", extra={"event": "session_error", "session": upload.id,
                                               "detail": str(session.error)})
            return await self._fail(stream, f"internal error: {session.error}")
        if stream is not None:
            await stream.write(sse({"type": "transcript.text.done", "text": transcript_text(upload.finals)}))
            await stream.write_eof()
            return stream
        body, content_type = render(upload.finals, req.response_format, duration, server.settings.language,
                                    req.words)
        return web.Response(text=body, content_type=content_type, charset="utf-8")

    async def _feed(self, session, audio: np.ndarray) -> None:
        """The whole file into the session, waiting for room as a file session does; then its end."""
        room = self.server.config.max_backlog_s / 2
        piece = int(room * SAMPLE_RATE)
        for i in range(0, len(audio), piece):
            while session.backlog_s > room and not session.closed.is_set():
                await asyncio.sleep(0.01)
            if session.closed.is_set():
                return
            session.accept_waveform(audio[i : i + piece])
            self.server.audio_in(len(audio[i : i + piece]) / SAMPLE_RATE)
        session.finish()

    async def _fail(self, stream, message: str) -> web.StreamResponse:
        if stream is not None:  # the status is sent already: the error goes in the event stream
            await stream.write(sse(error_body(message, 500)))
            await stream.write_eof()
            return stream
        return web.json_response(error_body(message, 500), status=500)
