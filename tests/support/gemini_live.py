"""A local stand-in for the Gemini Live API, so tests can drive the real client libraries.

It speaks the BidiGenerateContent websocket protocol the way google-genai 3.4.0 does with an API
key (`client.aio.live.connect`, vertexai=False): the client connects to
`wss://HOST/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent`
with the key in the `x-goog-api-key` header, sends `{"setup": ...}` and waits for
`{"setupComplete": {}}`; then it sends `realtime_input` / `client_content` / `tool_response`
messages (top-level keys in snake_case, nested fields mostly camelCase, base64 in the urlsafe
alphabet) and reads camelCase server messages.

google-genai always turns the base URL's scheme into `wss` for the Gemini API
(`BaseApiClient._websocket_base_url`), so this server speaks TLS with a throwaway self-signed
certificate; clients trust it through `http_options()` (or `ca_file`).

Choices where the real service's behaviour is not documented:
- An unknown resumption handle, a bad API key or a setup that is not the first message end the
  connection with 1007 (Google's code for an invalid argument, as Gemini uses for a bad key).
- A connection past its limit is closed with 1008 "The operation was aborted." (`goAway` says the
  connection "will be terminated as ABORTED"; that is how such closes have been reported).
- After an interruption the turn is ended with `turnComplete`, as Gemini does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.genai import types
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HOST = "127.0.0.1"
OUTPUT_SAMPLE_RATE = 24000
OUTPUT_MIME_TYPE = f"audio/pcm;rate={OUTPUT_SAMPLE_RATE}"
DEFAULT_INPUT_SAMPLE_RATE = 16000
# Gemini counts 32 tokens for each second of audio.
AUDIO_TOKENS_PER_SECOND = 32

CLOSE_INVALID_ARGUMENT = 1007
CLOSE_ABORTED = 1008
INVALID_ARGUMENT_REASON = "Request contains an invalid argument."
INVALID_KEY_REASON = "API key not valid. Please pass a valid API key."
ABORTED_REASON = "The operation was aborted."

ENDPOINT_PATH = re.compile(
    r"^/+ws/google\.ai\.generativelanguage\.v1\w*\.GenerativeService\."
    r"BidiGenerateContent(Constrained)?$"
)
SETUP_TIMEOUT_S = 10.0
# Default reply audio: a tone as long as the words would take to say.
SECONDS_PER_WORD = 0.25
MIN_REPLY_SECONDS = 0.5
# The caller's PCM kept per connection; the count of bytes goes on past it.
MAX_RECORDED_AUDIO_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """What the model answers to one turn."""

    heard: str = "hello"
    """Input transcription of the caller's speech; not sent for text turns."""
    says: str = "Hello! How can I help you today?"
    """The reply, sent as output transcription alongside the audio."""
    audio: bytes | None = None
    """24 kHz 16-bit mono PCM to send; a tone as long as the words when None."""


@dataclass(frozen=True)
class Exchange:
    """One turn of the conversation as the model remembers it."""

    kind: Literal["speech", "text"]
    heard: str
    said: str
    interrupted: bool
    connection: int


@dataclass(frozen=True)
class TurnRequest:
    """What a scripted reply is chosen from."""

    kind: Literal["speech", "text"]
    text: str
    """The client's text for a text turn; empty for speech."""
    speech_bytes: int
    """PCM bytes of the caller's speech that made the turn."""
    history: tuple[Exchange, ...]
    connection: int


ReplyScript = Sequence[Reply] | Callable[[TurnRequest], Reply]


@dataclass
class Conversation:
    """The state a resumption handle restores; kept apart from any one connection."""

    id: int
    history: list[Exchange] = field(default_factory=list)


@dataclass
class AnsweredTurn:
    connection: int
    request: TurnRequest
    reply: Reply
    said: str = ""
    """Output transcription sent so far (all of `reply.says` once completed)."""
    audio_bytes_sent: int = 0
    completed: bool = False
    interrupted: bool = False
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConnectionRecord:
    index: int
    path: str
    api_key: str | None
    setup: dict[str, Any] = field(default_factory=dict)
    setup_completed: bool = False
    resumed_with: str | None = None
    conversation: Conversation | None = None
    audio_in: bytearray = field(default_factory=bytearray)
    audio_in_total: int = 0
    audio_mime_types: set[str] = field(default_factory=set)
    client_content: list[dict[str, Any]] = field(default_factory=list)
    realtime_signals: list[str] = field(default_factory=list)
    """activityStart, activityEnd, audioStreamEnd and text inputs, in order."""
    handles_issued: list[str] = field(default_factory=list)
    go_aways: list[str] = field(default_factory=list)
    """`timeLeft` of each goAway sent."""
    closed: bool = False
    closed_by: Literal["client", "server"] | None = None
    close_code: int | None = None
    close_reason: str = ""


@dataclass(frozen=True)
class _Snapshot:
    conversation_id: int
    history: tuple[Exchange, ...]


def get_field(message: Mapping[str, Any], camel_name: str) -> Any:
    """A field by its JSON name; protobuf JSON accepts the snake_case name too, and google-genai
    sends a mix of both."""
    if camel_name in message:
        return message[camel_name]
    return message.get(re.sub(r"([A-Z])", r"_\1", camel_name).lower())


def _decode_base64(data: str) -> bytes:
    # google-genai sends the urlsafe alphabet; other clients send the standard one.
    normalized = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(normalized + "=" * (-len(normalized) % 4))


def _sample_rate(mime_type: str) -> int:
    found = re.search(r"rate=(\d+)", mime_type)
    return int(found.group(1)) if found else DEFAULT_INPUT_SAMPLE_RATE


def _pieces(text: str) -> list[str]:
    """Words with their trailing spaces, so the pieces join back into the text."""
    return re.findall(r"\S+\s*", text)


def tone(seconds: float, *, frequency: float = 330.0, rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    """16-bit mono PCM of a sine at a third of full scale, faded in and out to avoid clicks."""
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.33 * np.sin(2 * np.pi * frequency * t)
    fade = min(len(t) // 2, int(rate * 0.005))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype(np.int16).tobytes()


class EnergyTurnDetector:
    """Finds the caller's turns in 16-bit PCM by loudness, as Gemini's automatic activity
    detection would: speech starts after a few loud windows, and the turn ends after enough
    quiet. Works on sample counts, not the clock, so audio sent faster than real time works."""

    WINDOW_S = 0.02
    LOUD_WINDOWS_TO_START = 3

    def __init__(self, *, sample_rate: int, rms_threshold: float, silence_to_end_s: float) -> None:
        self.sample_rate = sample_rate
        self._window_bytes = 2 * int(sample_rate * self.WINDOW_S)
        self._quiet_windows_to_end = max(1, round(silence_to_end_s / self.WINDOW_S))
        self._rms_threshold = rms_threshold
        self._pending = bytearray()
        self._loud_run = 0
        self._quiet_run = 0
        self.speaking = False

    def feed(self, pcm: bytes) -> list[Literal["start", "end"]]:
        self._pending += pcm
        events: list[Literal["start", "end"]] = []
        while len(self._pending) >= self._window_bytes:
            window = np.frombuffer(bytes(self._pending[: self._window_bytes]), dtype=np.int16)
            del self._pending[: self._window_bytes]
            rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
            if rms >= self._rms_threshold:
                self._loud_run += 1
                self._quiet_run = 0
            else:
                self._quiet_run += 1
                self._loud_run = 0
            if not self.speaking and self._loud_run >= self.LOUD_WINDOWS_TO_START:
                self.speaking = True
                events.append("start")
            elif self.speaking and self._quiet_run >= self._quiet_windows_to_end:
                self.speaking = False
                events.append("end")
        return events

    def end_turn(self) -> None:
        """The caller's turn ended without the quiet that would end it (audioStreamEnd)."""
        self.speaking = False
        self._loud_run = 0
        self._pending.clear()


class GeminiLiveStandIn:
    """The server end of a Gemini Live session, scripted by the test.

    `async with GeminiLiveStandIn(replies=[Reply(heard=..., says=...)]) as standin:` then point
    the client at `standin.http_options()` with API key `standin.api_key`.
    """

    def __init__(
        self,
        replies: ReplyScript = (),
        *,
        api_key: str | None = "stand-in-key",
        connection_limit_s: float | None = None,
        go_away_lead_s: float = 1.0,
        playback_speed: float = 4.0,
        silence_to_end_turn_s: float = 0.5,
        speech_rms_threshold: float = 500.0,
        chunk_ms: int = 40,
    ) -> None:
        """`api_key`: the key clients must send (None: any). `connection_limit_s`: each
        connection is closed this long after it opened, `go_away_lead_s` after a goAway.
        `playback_speed`: how much faster than real time reply audio is streamed."""
        self.replies = replies
        self.api_key = api_key
        self.connection_limit_s = connection_limit_s
        self.go_away_lead_s = go_away_lead_s
        self.playback_speed = playback_speed
        self.silence_to_end_turn_s = silence_to_end_turn_s
        self.speech_rms_threshold = speech_rms_threshold
        self.chunk_ms = chunk_ms

        self.connections: list[ConnectionRecord] = []
        self.turns: list[AnsweredTurn] = []
        self.refused_handles: list[str] = []

        self._handles: dict[str, _Snapshot] = {}
        self._conversations = 0
        self._scripted = 0
        self._live: dict[int, _LiveConnection] = {}
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self._certificate_dir: tempfile.TemporaryDirectory[str] | None = None
        self._certificate_pem = b""
        self.port = 0

    async def __aenter__(self) -> Self:
        self._certificate_dir = tempfile.TemporaryDirectory(prefix="gemini-live-")
        self._certificate_pem, key_pem = _self_signed_certificate()
        directory = Path(self._certificate_dir.name)
        (directory / "cert.pem").write_bytes(self._certificate_pem)
        (directory / "key.pem").write_bytes(key_pem)
        server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ssl.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        self._server = await serve(
            self._serve, HOST, 0, ssl=server_ssl, process_request=self._check_path
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for live in self._live.values():
            live.record.closed_by = live.record.closed_by or "server"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._certificate_dir is not None:
            self._certificate_dir.cleanup()

    @property
    def base_url(self) -> str:
        """What google-genai takes as `HttpOptions.base_url`; it connects with `wss`."""
        return f"https://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """Where the client's websocket lands (the endpoint path follows it)."""
        return f"wss://{HOST}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The certificate to trust, e.g. as SSL_CERT_FILE for a process the test starts."""
        assert self._certificate_dir is not None, "the stand-in is not running"
        return Path(self._certificate_dir.name) / "cert.pem"

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self._certificate_pem.decode())

    def http_options(self) -> types.HttpOptions:
        """A fresh one per client: livekit-plugins-google writes its own headers into it."""
        return types.HttpOptions(
            base_url=self.base_url, async_client_args={"ssl": self.client_ssl_context()}
        )

    @property
    def resumes(self) -> list[tuple[int, str]]:
        """(connection, handle) for each connection that resumed a session."""
        return [(c.index, c.resumed_with) for c in self.connections if c.resumed_with]

    @property
    def interruptions(self) -> list[AnsweredTurn]:
        return [turn for turn in self.turns if turn.interrupted]

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        """Wait until what the stand-in has recorded satisfies `predicate`."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), within_s)

    async def go_away(self, connection: int = -1, *, time_left_s: float = 5.0) -> None:
        """Tell a client its connection ends in `time_left_s`, then end it then."""
        index = self.connections[connection].index
        await self._live[index].go_away(time_left_s)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _new_conversation(self) -> Conversation:
        self._conversations += 1
        return Conversation(id=self._conversations)

    def _remember(self, handle: str, conversation: Conversation) -> None:
        self._handles[handle] = _Snapshot(conversation.id, tuple(conversation.history))

    def _restore(self, handle: str) -> Conversation | None:
        snapshot = self._handles.get(handle)
        if snapshot is None:
            return None
        return Conversation(id=snapshot.conversation_id, history=list(snapshot.history))

    def _choose_reply(self, request: TurnRequest) -> Reply:
        if callable(self.replies):
            return self.replies(request)
        if self._scripted < len(self.replies):
            self._scripted += 1
            return self.replies[self._scripted - 1]
        if request.kind == "text":
            return Reply(heard="", says="Welcome! How can I help you today?")
        return Reply()

    def _check_path(self, connection: ServerConnection, request: Request) -> Response | None:
        if ENDPOINT_PATH.match(request.path.split("?")[0]):
            return None
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")

    async def _serve(self, websocket: ServerConnection) -> None:
        record = ConnectionRecord(
            index=len(self.connections),
            path=websocket.request.path if websocket.request else "",
            api_key=websocket.request.headers.get("x-goog-api-key") if websocket.request else None,
        )
        self.connections.append(record)
        live = _LiveConnection(self, websocket, record)
        self._live[record.index] = live
        await self._notify()
        try:
            await live.run()
        finally:
            del self._live[record.index]
            record.closed = True
            record.closed_by = record.closed_by or "client"
            record.close_code = websocket.close_code
            record.close_reason = websocket.close_reason or ""
            await self._notify()


class _LiveConnection:
    """One websocket: setup, the caller's input, the reply being streamed, the time limit."""

    def __init__(
        self, standin: GeminiLiveStandIn, websocket: ServerConnection, record: ConnectionRecord
    ) -> None:
        self._standin = standin
        self._ws = websocket
        self.record = record
        self._conversation = standin._new_conversation()
        self._resumable = False
        self._manual_activity = False
        self._detector: EnergyTurnDetector | None = None
        self._speech_bytes = 0
        self._in_activity = False
        self._reply_task: asyncio.Task[None] | None = None
        self._reply_turn: AnsweredTurn | None = None
        self._ending_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            if not await self._setup():
                return
            if self._standin.connection_limit_s is not None:
                self._ending_task = asyncio.create_task(self._enforce_connection_limit())
            async for raw in self._ws:
                await self._on_message(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            for task in (self._reply_task, self._ending_task):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _setup(self) -> bool:
        try:
            first = json.loads(await asyncio.wait_for(self._ws.recv(), SETUP_TIMEOUT_S))
        except TimeoutError:
            first = {}
        setup = first.get("setup")
        if not isinstance(setup, dict):
            await self._close(CLOSE_INVALID_ARGUMENT, INVALID_ARGUMENT_REASON)
            return False
        self.record.setup = setup
        if self._standin.api_key is not None and self.record.api_key != self._standin.api_key:
            await self._close(CLOSE_INVALID_ARGUMENT, INVALID_KEY_REASON)
            return False

        resumption = get_field(setup, "sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle:
            restored = self._standin._restore(handle)
            if restored is None:
                self._standin.refused_handles.append(handle)
                await self._close(CLOSE_INVALID_ARGUMENT, INVALID_ARGUMENT_REASON)
                return False
            self._conversation = restored
            self.record.resumed_with = handle
        self.record.conversation = self._conversation
        # Handles are only issued to sessions that asked for resumption.
        self._resumable = resumption is not None

        input_config = get_field(setup, "realtimeInputConfig") or {}
        detection = get_field(input_config, "automaticActivityDetection") or {}
        self._manual_activity = bool(get_field(detection, "disabled"))

        await self._send({"setupComplete": {}})
        self.record.setup_completed = True
        await self._standin._notify()
        if self._resumable:
            await self._issue_handle()
        return True

    async def _on_message(self, message: dict[str, Any]) -> None:
        if (realtime := get_field(message, "realtimeInput")) is not None:
            await self._on_realtime_input(realtime)
        elif (content := get_field(message, "clientContent")) is not None:
            await self._on_client_content(content)
        # toolResponse and anything else: this model never calls tools, so nothing to do.

    async def _on_realtime_input(self, realtime: dict[str, Any]) -> None:
        blobs = list(get_field(realtime, "mediaChunks") or [])
        if (audio := get_field(realtime, "audio")) is not None:
            blobs.append(audio)
        for blob in blobs:
            mime_type = get_field(blob, "mimeType") or ""
            if mime_type.startswith("audio/pcm"):
                await self._on_audio(_decode_base64(blob["data"]), mime_type)

        if get_field(realtime, "activityStart") is not None:
            self.record.realtime_signals.append("activityStart")
            self._in_activity = True
            self._speech_bytes = 0
            await self._interrupt()
        if get_field(realtime, "activityEnd") is not None:
            self.record.realtime_signals.append("activityEnd")
            self._in_activity = False
            await self._caller_finished()
        if get_field(realtime, "audioStreamEnd"):
            # The microphone is off: whatever the caller was saying is the whole turn.
            self.record.realtime_signals.append("audioStreamEnd")
            if self._detector is not None and self._detector.speaking:
                self._detector.end_turn()
                await self._caller_finished()
        if text := get_field(realtime, "text"):
            self.record.realtime_signals.append("text")
            await self._answer(TurnRequest("text", text, 0, self._history(), self.record.index))
        await self._standin._notify()

    async def _on_audio(self, pcm: bytes, mime_type: str) -> None:
        record = self.record
        record.audio_mime_types.add(mime_type)
        record.audio_in_total += len(pcm)
        room = MAX_RECORDED_AUDIO_BYTES - len(record.audio_in)
        record.audio_in += pcm[: max(0, room)]

        if self._manual_activity:
            if self._in_activity:
                self._speech_bytes += len(pcm)
            return
        rate = _sample_rate(mime_type)
        if self._detector is None or self._detector.sample_rate != rate:
            self._detector = EnergyTurnDetector(
                sample_rate=rate,
                rms_threshold=self._standin.speech_rms_threshold,
                silence_to_end_s=self._standin.silence_to_end_turn_s,
            )
        if self._detector.speaking:
            self._speech_bytes += len(pcm)
        for event in self._detector.feed(pcm):
            if event == "start":
                self._speech_bytes = len(pcm)
                await self._interrupt()
            else:
                await self._caller_finished()

    async def _on_client_content(self, content: dict[str, Any]) -> None:
        self.record.client_content.append(content)
        if not get_field(content, "turnComplete"):
            return
        texts = [
            part["text"]
            for turn in get_field(content, "turns") or []
            for part in turn.get("parts") or []
            if part.get("text")
        ]
        request = TurnRequest("text", "\n".join(texts), 0, self._history(), self.record.index)
        await self._answer(request)

    async def _caller_finished(self) -> None:
        request = TurnRequest("speech", "", self._speech_bytes, self._history(), self.record.index)
        await self._answer(request)

    def _history(self) -> tuple[Exchange, ...]:
        return tuple(self._conversation.history)

    async def _answer(self, request: TurnRequest) -> None:
        await self._interrupt()
        reply = self._standin._choose_reply(request)
        turn = AnsweredTurn(connection=self.record.index, request=request, reply=reply)
        self._standin.turns.append(turn)
        self._reply_turn = turn
        self._reply_task = asyncio.create_task(self._reply(turn))

    async def _interrupt(self) -> None:
        """Stop the reply being streamed (or played out), as Gemini does when the caller
        speaks over it."""
        task, turn = self._reply_task, self._reply_turn
        if task is None or task.done() or turn is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        turn.interrupted = True
        self._finish_exchange(turn)
        await self._send({"serverContent": {"interrupted": True}})
        await self._send({"serverContent": {"turnComplete": True}})
        await self._after_turn()

    async def _reply(self, turn: AnsweredTurn) -> None:
        # The client may hang up mid-reply; that ends the reply, not the server.
        with contextlib.suppress(ConnectionClosed):
            await self._stream_reply(turn)

    async def _stream_reply(self, turn: AnsweredTurn) -> None:
        standin = self._standin
        reply = turn.reply
        loop = asyncio.get_running_loop()
        started = loop.time()
        if turn.request.kind == "speech" and reply.heard:
            for piece in _pieces(reply.heard):
                await self._send({"serverContent": {"inputTranscription": {"text": piece}}})

        audio = reply.audio if reply.audio is not None else tone(self._reply_seconds(reply))
        chunk_bytes = 2 * OUTPUT_SAMPLE_RATE * standin.chunk_ms // 1000
        chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
        words = _pieces(reply.says)
        words_sent = 0
        for index, chunk in enumerate(chunks):
            data = base64.b64encode(chunk).decode()
            part = {"inlineData": {"mimeType": OUTPUT_MIME_TYPE, "data": data}}
            await self._send({"serverContent": {"modelTurn": {"parts": [part]}}})
            turn.audio_bytes_sent += len(chunk)
            await standin._notify()
            # Spread the transcript over the audio, as Gemini interleaves them.
            due = (index + 1) * len(words) // len(chunks)
            while words_sent < due:
                await self._send_said(turn, words[words_sent])
                words_sent += 1
            await asyncio.sleep(standin.chunk_ms / 1000 / standin.playback_speed)
        for word in words[words_sent:]:
            await self._send_said(turn, word)
        await self._send({"serverContent": {"generationComplete": True}})

        # Gemini holds turnComplete back until the client should have played the audio out.
        audio_seconds = len(audio) / 2 / OUTPUT_SAMPLE_RATE
        await asyncio.sleep(max(0.0, started + audio_seconds - loop.time()))
        turn.usage = self._usage(turn.request, reply, audio_seconds)
        await self._send({"serverContent": {"turnComplete": True}, "usageMetadata": turn.usage})
        turn.completed = True
        self._finish_exchange(turn)
        await self._after_turn()

    async def _send_said(self, turn: AnsweredTurn, piece: str) -> None:
        await self._send({"serverContent": {"outputTranscription": {"text": piece}}})
        turn.said += piece
        await self._standin._notify()

    def _reply_seconds(self, reply: Reply) -> float:
        return max(MIN_REPLY_SECONDS, SECONDS_PER_WORD * len(reply.says.split()))

    def _usage(self, request: TurnRequest, reply: Reply, audio_seconds: float) -> dict[str, Any]:
        if request.kind == "speech":
            prompt_modality = "AUDIO"
            rate = _sample_rate(next(iter(self.record.audio_mime_types), ""))
            prompt_tokens = round(request.speech_bytes / 2 / rate * AUDIO_TOKENS_PER_SECOND)
        else:
            prompt_modality = "TEXT"
            prompt_tokens = len(request.text.split())
        response_tokens = round(audio_seconds * AUDIO_TOKENS_PER_SECOND)
        return {
            "promptTokenCount": prompt_tokens,
            "responseTokenCount": response_tokens,
            "totalTokenCount": prompt_tokens + response_tokens,
            "promptTokensDetails": [{"modality": prompt_modality, "tokenCount": prompt_tokens}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response_tokens}],
        }

    def _finish_exchange(self, turn: AnsweredTurn) -> None:
        heard = turn.reply.heard if turn.request.kind == "speech" else turn.request.text
        exchange = Exchange(
            turn.request.kind, heard, turn.said, turn.interrupted, self.record.index
        )
        self._conversation.history.append(exchange)
        self._reply_task = None
        self._reply_turn = None

    async def _after_turn(self) -> None:
        if self._resumable:
            await self._issue_handle()
        await self._standin._notify()

    async def _issue_handle(self) -> None:
        handle = f"standin-{self._conversation.id}-{secrets.token_hex(6)}"
        self._standin._remember(handle, self._conversation)
        self.record.handles_issued.append(handle)
        await self._send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
        await self._standin._notify()

    async def go_away(self, time_left_s: float) -> None:
        time_left = f"{time_left_s:g}s"
        self.record.go_aways.append(time_left)
        await self._send({"goAway": {"timeLeft": time_left}})
        await self._standin._notify()
        if self._ending_task is not None and self._ending_task is not asyncio.current_task():
            self._ending_task.cancel()
        self._ending_task = asyncio.create_task(self._close_after(time_left_s))

    async def _enforce_connection_limit(self) -> None:
        limit = self._standin.connection_limit_s
        assert limit is not None
        lead = min(self._standin.go_away_lead_s, limit)
        await asyncio.sleep(limit - lead)
        await self.go_away(lead)

    async def _close_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._close(CLOSE_ABORTED, ABORTED_REASON)

    async def _close(self, code: int, reason: str) -> None:
        if self.record.closed_by is None:
            self.record.closed_by = "server"
        await self._ws.close(code, reason)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))


def _self_signed_certificate() -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 valid for a day, and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gemini Live stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
