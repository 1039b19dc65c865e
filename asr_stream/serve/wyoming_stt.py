"""The Wyoming speech-to-text protocol on the daemon (`serve --wyoming tcp://HOST:PORT`), so Home
Assistant's voice pipelines (and any other Wyoming client) use our chain as their STT service.

One TCP connection may carry several transcriptions, each:
`transcribe` (optional) -> `audio-start` -> `audio-chunk`... -> `audio-stop`, answered with
`transcript` (the whole text). As each final is recognised it is also sent at once as a
`transcript-chunk` (after one `transcript-start`), and `transcript-stop` closes the stream;
clients that know only `transcript` can ignore those. `describe` gets `info`.

A transcription is a session of the daemon's like a WebSocket one: it takes a slot from
`audio-start` to its `transcript` (an `error` event when full), runs through the same scheduler,
and a drain ends its audio and sends what it heard. Audio waits for room rather than being
dropped, so a client that sends faster than real time is slowed down by TCP, not cut. The
Wyoming port has no token (the protocol has none): keep it on a trusted network.

The event framing and types are the `wyoming` library's; the listener is our own, so the
daemon's signals and drain stay in charge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlparse

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler

from asr_stream import SAMPLE_RATE, __version__
from asr_stream.serve import protocol as p
from asr_stream.errors import UserError
from asr_stream.io.framer import sanitize
from asr_stream.io.resampler import StreamingResampler
from asr_stream.serve.prometheus import refusal_reason

log = logging.getLogger("asr_stream.serve.server")

END_WAIT_S = 120.0  # after audio-stop, how long the last finals may take


def parse_uri(uri: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` -> (host, port); anything else is a one-line error."""
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise UserError(f"--wyoming takes tcp://HOST:PORT (e.g. tcp://127.0.0.1:10300), got '{uri}'")
    return parsed.hostname, port


class Transcription:
    """One transcription while it holds a session slot (the drain treats it like a WebSocket
    session: it stops taking audio, and the client gets what was heard)."""

    def __init__(self, session_id: str, session, on_stop):
        self.id = session_id
        self.session = session
        self.task: asyncio.Task | None = None  # done when the session's last final has been sent
        self.started = time.monotonic()
        self._on_stop = on_stop

    def stop_reading(self, reason: str) -> None:
        self._on_stop(reason)

    async def abort(self, code: int, message: str) -> None:
        if self.session is not None:
            self.session.cancel()
        if self.task is not None:
            self.task.cancel()


class WyomingHandler(AsyncEventHandler):
    """One Wyoming client connection."""

    def __init__(self, reader, writer, server):
        super().__init__(reader, writer)
        self.server = server
        self.language: str | None = None
        self.current: Transcription | None = None
        self.stopped: str | None = None  # why the current transcription takes no more audio
        self._decoder = self._resampler = None
        self._received_s = 0.0

    # -- events from the client ---------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self._info().event())
        elif Transcribe.is_type(event.type):
            wanted = Transcribe.from_event(event).language
            chain = self.server.settings.language
            if wanted and chain and wanted.split("-")[0].lower() != chain.lower():
                await self._error(f"this server transcribes '{chain}' (its chain was started with --language "
                                  f"{chain}); got language '{wanted}'", "language")
                return True
            self.language = wanted
        elif AudioStart.is_type(event.type):
            await self._start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if self.current is None and self.stopped is None:  # no audio-start: its format is the chunk's
                await self._start(chunk)
            await self._accept(chunk)
        elif AudioStop.is_type(event.type):
            await self._finish()
        return True

    async def disconnect(self) -> None:
        t = self.current
        if t is not None:  # the client left mid-transcription: what it sent is let go
            t.session.cancel()
            if t.task is not None:
                t.task.cancel()  # its cleanup frees the slot

    # -- one transcription --------------------------------------------------------------------
    async def _start(self, fmt: AudioStart | AudioChunk) -> None:
        if self.current is not None:
            await self._finish()  # a new audio-start ends the last transcription first
        self.stopped = "refused"  # until it starts: its chunks are ignored, not taken as new starts
        server = self.server
        if fmt.width != 2:
            await self._error(f"audio width {fmt.width} is not supported: send 16-bit PCM (width 2)", "audio_format")
            return
        try:
            params = p.StreamParams.from_query({"sample_rate": str(fmt.rate), "channels": str(fmt.channels),
                                                "encoding": "s16le", "pace": "fast"})
        except p.ProtocolError as exc:
            await self._error(str(exc), "audio_format")
            return
        state = server._state()
        if state != "ready":
            server.metrics.sessions_rejected.labels(refusal_reason(state)).inc()
            await self._error(f"not taking sessions: {state}", "unavailable")
            return
        placeholder = server.admit(lambda session_id: Transcription(session_id, None, self._stop))
        try:
            placeholder.session, arrivals = await server.open_file_session()
        except Exception as exc:
            server.release(placeholder)
            server.metrics.sessions_ended.labels("failed").inc()
            await self._error(f"internal error: cannot start the session: {exc}", "internal")
            return
        self.current, self.stopped = placeholder, None
        self._decoder, self._resampler = p.PcmDecoder(params), StreamingResampler(params.sample_rate, SAMPLE_RATE)
        self._received_s = 0.0
        placeholder.task = asyncio.create_task(self._send_finals(placeholder, arrivals))
        log.info("session opened", extra={"event": "session_open", "session": placeholder.id, "protocol": "wyoming",
                                          "sample_rate": fmt.rate, "channels": fmt.channels})

    async def _accept(self, chunk: AudioChunk) -> None:
        t = self.current
        if t is None or self.stopped is not None or not chunk.audio:
            return
        limit = self.server.config.max_session_s
        if limit is not None and time.monotonic() - t.started > limit:
            self._stop("time_limit")
            return
        x = self._decoder.decode(chunk.audio)
        self._received_s += len(x) / chunk.rate
        x, _ = sanitize(x)
        y = self._resampler.process(x)
        room = self.server.config.max_backlog_s / 2
        piece = int(room * SAMPLE_RATE)
        for i in range(0, len(y), piece):  # each piece when there is room: never dropped
            while t.session.backlog_s > room and not t.session.closed.is_set():
                await asyncio.sleep(0.01)
            if self.stopped is not None:
                return
            self._push(y[i : i + piece])

    def _push(self, y) -> None:
        if len(y):
            self.current.session.accept_waveform(y)
            self.server.audio_in(len(y) / SAMPLE_RATE)

    def _stop(self, reason: str) -> None:
        """No more audio for this transcription (audio-stop, the drain, the time limit): the
        session gives its last finals, and the client its transcript."""
        if self.current is None or self.stopped is not None:
            return
        self.stopped = reason
        self._push(self._resampler.flush())
        self.current.session.finish()

    async def _finish(self) -> None:
        """audio-stop: wait until the transcript has been sent."""
        t = self.current
        if t is None:
            return
        self._stop("end")
        try:
            await asyncio.wait_for(asyncio.shield(t.task), END_WAIT_S + 5)
        except asyncio.TimeoutError:
            pass  # the task says so itself
        except asyncio.CancelledError:
            if not t.task.cancelled():  # this handler is being cancelled, not the task (the drain)
                raise

    async def _send_finals(self, t: Transcription, arrivals: asyncio.Queue) -> None:
        """Each final as a transcript-chunk as soon as it is recognised; at the session's end
        the whole transcript, and the slot is freed."""
        texts, reason = [], None
        try:
            while True:
                timeout = None if self.stopped is None else END_WAIT_S
                try:
                    hyp = await asyncio.wait_for(arrivals.get(), timeout)
                except asyncio.TimeoutError:
                    t.session.cancel()
                    reason = "failed"
                    await self._error("the transcription did not finish in time", "internal")
                    break
                if hyp is None:
                    break
                text = hyp.text.strip()
                if not text:
                    continue
                if not texts:
                    await self.write_event(TranscriptStart(language=self._language()).event())
                await self.write_event(TranscriptChunk(text=(" " if texts else "") + text).event())
                texts.append(text)
            if t.session.error is not None:
                reason = "failed"
                await self._error(f"internal error: {t.session.error}", "internal")
            await self.write_event(Transcript(text=" ".join(texts), language=self._language()).event())
            if texts:
                await self.write_event(TranscriptStop().event())
            reason = reason or ("end" if self.stopped == "end" else self.stopped)
        finally:
            if self.current is t:
                self.current = None
            self.server.release(t)
            self.server.metrics.sessions_ended.labels(reason or "gone").inc()
            log.info("session ended", extra={"event": "session_end", "session": t.id, "reason": reason or "gone",
                                             "protocol": "wyoming", "audio_seconds": round(self._received_s, 2)})

    # -- helpers ------------------------------------------------------------------------------
    def _language(self) -> str | None:
        return self.language or self.server.settings.language

    async def _error(self, text: str, code: str) -> None:
        log.info("refused", extra={"event": "refused", "reason": code, "detail": text, "protocol": "wyoming"})
        await self.write_event(Error(text=text, code=code).event())

    def _info(self) -> Info:
        chain = self.server.chain or {}
        language = self.server.settings.language
        attribution = Attribution(name="asr-stream", url="")
        model = AsrModel(name=chain.get("recognizer", "asr-stream"), languages=[language] if language else [],
                         attribution=attribution, installed=True, version=None,
                         description=f"{chain.get('denoiser', '?')} + {chain.get('recognizer', '?')}")
        program = AsrProgram(name="asr-stream", description="asr-stream: streaming speech recognition on the CPU",
                             attribution=attribution, installed=True, version=__version__, models=[model],
                             supports_transcript_streaming=True)
        return Info(asr=[program])


class WyomingListener:
    """The TCP listener for Wyoming clients, in the daemon's event loop."""

    def __init__(self, server, uri: str):
        self.server = server
        self.host, self.port = parse_uri(uri)
        self._tcp: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Listen; returns the port (the one the system chose when asked for port 0)."""
        try:
            self._tcp = await asyncio.start_server(self._connected, self.host, self.port, reuse_address=True)
        except OSError as exc:
            raise UserError(f"--wyoming: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        return self._tcp.sockets[0].getsockname()[1]

    async def _connected(self, reader, writer) -> None:
        handler = WyomingHandler(reader, writer, self.server)
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await handler.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            await handler.disconnect()
        finally:
            self._handlers.discard(task)

    async def close(self) -> None:
        """Stop listening and close every connection (after the drain gave them their transcripts)."""
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
