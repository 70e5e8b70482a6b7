"""Gemini Live through the real livekit-plugins-google and google-genai, against a local stand-in
of the service (tests/gemini_live.py): nothing on the client side is mocked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest
from google import genai
from google.genai import errors, types
from livekit import rtc
from livekit.agents import llm
from livekit.agents.metrics import RealtimeModelMetrics
from livekit.plugins.google.realtime import RealtimeModel
from livekit.plugins.google.realtime.realtime_api import RealtimeSession

from .support.gemini_live import (
    CLOSE_ABORTED,
    CLOSE_INVALID_ARGUMENT,
    OUTPUT_SAMPLE_RATE,
    GeminiLiveStandIn,
    Reply,
    TurnRequest,
    get_field,
    tone,
)

pytestmark = pytest.mark.integration

API_KEY = "stand-in-key"
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
PLUGIN_INPUT_RATE = 16000
ROOM_RATE = 48000
FRAME_MS = 10

T = TypeVar("T")


def gemini_at(standin: GeminiLiveStandIn, **options: Any) -> RealtimeModel:
    """The plugin aimed at the stand-in: its base URL and certificate; the rest as for Gemini."""
    return RealtimeModel(
        api_key=API_KEY,
        vertexai=False,
        model=MODEL,
        http_options=standin.http_options(),
        **options,
    )


def caller_speech(*, speech_s: float, silence_s: float, rate: int) -> bytes:
    return tone(speech_s, frequency=220, rate=rate) + bytes(2 * int(rate * silence_s))


def caller_speaks(session: RealtimeSession, pcm: bytes, *, rate: int) -> None:
    """Push PCM as LiveKit hands a caller's track over: 10 ms frames, all at once (the plugin
    forwards them as fast as it can, and the stand-in counts samples, not seconds)."""
    frame_bytes = 2 * rate * FRAME_MS // 1000
    for start in range(0, len(pcm), frame_bytes):
        chunk = pcm[start : start + frame_bytes]
        frame = rtc.AudioFrame(
            data=chunk, sample_rate=rate, num_channels=1, samples_per_channel=len(chunk) // 2
        )
        session.push_audio(frame)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def connected(standin: GeminiLiveStandIn, count: int) -> Callable[[], bool]:
    """Whether the stand-in has completed the setup of `count` connections."""
    return lambda: len(standin.connections) >= count and standin.connections[-1].setup_completed


@dataclass(frozen=True)
class HeardReply:
    text: str
    audio: bytes
    sample_rates: frozenset[int]
    user_initiated: bool

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / OUTPUT_SAMPLE_RATE


class PluginEvents:
    """What the plugin's session emits, as an agent session would consume it."""

    def __init__(self, session: RealtimeSession) -> None:
        self.replies: asyncio.Queue[HeardReply] = asyncio.Queue(maxsize=8)
        self.transcripts: list[llm.InputTranscriptionCompleted] = []
        self.errors: list[llm.RealtimeModelError] = []
        self.metrics: list[RealtimeModelMetrics] = []
        self.speech_started = 0
        self._changed = asyncio.Event()
        self._collectors: set[asyncio.Task[None]] = set()
        session.on("generation_created", self._on_generation)
        session.on("input_audio_transcription_completed", self._recorder(self.transcripts))
        session.on("error", self._recorder(self.errors))
        session.on("metrics_collected", self._recorder(self.metrics))
        session.on("input_speech_started", self._on_speech_started)

    @property
    def usage(self) -> list[RealtimeModelMetrics]:
        """Token counts of replies; the plugin also reports each connection, with no request."""
        return [metrics for metrics in self.metrics if metrics.request_id]

    @property
    def final_transcripts(self) -> list[str]:
        return [event.transcript for event in self.transcripts if event.is_final]

    async def next_reply(self, within_s: float = 10.0) -> HeardReply:
        async with asyncio.timeout(within_s):
            return await self.replies.get()

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def aclose(self) -> None:
        for task in self._collectors:
            task.cancel()
        await asyncio.gather(*self._collectors, return_exceptions=True)

    def _recorder(self, events: list[T]) -> Callable[[T], None]:
        def record(event: T) -> None:
            events.append(event)
            self._changed.set()

        return record

    def _on_speech_started(self, _: llm.InputSpeechStartedEvent) -> None:
        self.speech_started += 1
        self._changed.set()

    def _on_generation(self, event: llm.GenerationCreatedEvent) -> None:
        task = asyncio.create_task(self._collect(event))
        self._collectors.add(task)
        task.add_done_callback(self._collectors.discard)

    async def _collect(self, event: llm.GenerationCreatedEvent) -> None:
        async for message in event.message_stream:
            text, frames = await asyncio.gather(
                _joined(message.text_stream), _frames(message.audio_stream)
            )
            reply = HeardReply(
                text=text,
                audio=b"".join(frame.data.tobytes() for frame in frames),
                sample_rates=frozenset(frame.sample_rate for frame in frames),
                user_initiated=event.user_initiated,
            )
            self.replies.put_nowait(reply)


async def _joined(stream: AsyncIterable[str]) -> str:
    return "".join([piece async for piece in stream])


async def _frames(stream: AsyncIterable[rtc.AudioFrame]) -> list[rtc.AudioFrame]:
    return [frame async for frame in stream]


@contextlib.asynccontextmanager
async def plugin_session(
    model: RealtimeModel,
) -> AsyncIterator[tuple[RealtimeSession, PluginEvents]]:
    session = model.session()
    events = PluginEvents(session)
    try:
        yield session, events
    finally:
        await session.aclose()
        await model.aclose()
        await events.aclose()


async def test_caller_audio_reaches_gemini_and_its_spoken_reply_comes_back() -> None:
    reply_audio = tone(0.8, frequency=440)
    script = [Reply(heard="What time is it?", says="It is noon in Tokyo.", audio=reply_audio)]
    # 16 kHz, what the plugin sends, so the bytes arrive untouched by its resampler.
    spoken = caller_speech(speech_s=0.6, silence_s=0.8, rate=PLUGIN_INPUT_RATE)
    async with GeminiLiveStandIn(script, api_key=API_KEY) as standin:
        model = gemini_at(
            standin,
            instructions="Answer in one sentence.",
            context_window_compression=types.ContextWindowCompressionConfig(
                sliding_window=types.SlidingWindow()
            ),
        )
        async with plugin_session(model) as (session, events):
            await standin.wait_until(connected(standin, 1))
            caller_speaks(session, spoken, rate=PLUGIN_INPUT_RATE)
            reply = await events.next_reply()
            await standin.wait_until(lambda: bool(standin.turns) and standin.turns[0].completed)
            await events.wait_until(lambda: bool(events.final_transcripts and events.usage))

    connection = standin.connections[0]
    setup = connection.setup
    assert connection.api_key == API_KEY
    assert connection.path.endswith(".GenerativeService.BidiGenerateContent")
    assert setup["model"] == f"models/{MODEL}"
    assert get_field(setup["generationConfig"], "responseModalities") == ["AUDIO"]
    assert get_field(setup, "systemInstruction") == {"parts": [{"text": "Answer in one sentence."}]}
    assert get_field(setup, "inputAudioTranscription") == {}
    assert get_field(setup, "outputAudioTranscription") == {}
    assert get_field(setup, "sessionResumption") == {}
    compression = get_field(setup, "contextWindowCompression")
    assert get_field(compression, "slidingWindow") == {}

    # The caller's PCM arrived byte for byte; the plugin holds back its last partial 50 ms.
    assert connection.audio_mime_types == {"audio/pcm;rate=16000"}
    assert len(spoken) - 1600 < connection.audio_in_total <= len(spoken)
    assert bytes(connection.audio_in) == spoken[: connection.audio_in_total]
    turn = standin.turns[0]
    assert turn.request.kind == "speech"
    assert turn.request.speech_bytes >= 2 * int(PLUGIN_INPUT_RATE * 0.6)

    # And Gemini's audio reached the plugin byte for byte, with both transcripts.
    assert reply.sample_rates == {OUTPUT_SAMPLE_RATE}
    assert reply.audio == reply_audio
    assert rms(reply.audio) > 3000
    assert reply.text == "It is noon in Tokyo."
    assert events.final_transcripts == ["What time is it?"]
    assert not reply.user_initiated
    assert [(m.input_tokens, m.output_tokens) for m in events.usage] == [
        (turn.usage["promptTokenCount"], turn.usage["responseTokenCount"])
    ]
    assert events.errors == []


async def test_generate_reply_with_instructions_speaks_first() -> None:
    greeting = "Welcome to Kaiwa, what can I do for you?"
    async with GeminiLiveStandIn([Reply(says=greeting)], api_key=API_KEY) as standin:
        async with plugin_session(gemini_at(standin)) as (session, events):
            await standin.wait_until(connected(standin, 1))
            async with asyncio.timeout(5):
                created = await session.generate_reply(instructions="Greet the caller.")
            reply = await events.next_reply()
            await standin.wait_until(lambda: bool(standin.turns) and standin.turns[0].completed)

    assert created.user_initiated and reply.user_initiated
    assert reply.text == greeting
    assert reply.audio_seconds > 0.5 and rms(reply.audio) > 3000
    turn = standin.turns[0]
    assert turn.request.kind == "text"
    assert "Greet the caller." in turn.request.text
    # No speech, so no input transcription: the greeting came from the client's text turn.
    assert standin.connections[0].audio_in_total == 0
    assert events.transcripts == []
    assert get_field(standin.connections[0].client_content[-1], "turnComplete") is True


def remembering(request: TurnRequest) -> Reply:
    """Answers the second turn from what the model remembers of the first."""
    if not request.history:
        return Reply(heard="My name is Ana.", says="Nice to meet you, Ana.")
    return Reply(heard="What is my name?", says=f"You said: {request.history[0].heard}")


async def test_after_go_away_the_plugin_resumes_with_the_latest_handle() -> None:
    spoken = caller_speech(speech_s=0.6, silence_s=0.8, rate=ROOM_RATE)
    async with GeminiLiveStandIn(remembering, api_key=API_KEY) as standin:
        async with plugin_session(gemini_at(standin)) as (session, events):
            await standin.wait_until(connected(standin, 1))
            first_connection = standin.connections[0]
            caller_speaks(session, spoken, rate=ROOM_RATE)
            first = await events.next_reply()
            # A handle follows the initial one once the turn is complete.
            await standin.wait_until(lambda: len(first_connection.handles_issued) == 2)
            latest = first_connection.handles_issued[-1]
            # Sent after the handle on the same socket, so the plugin has read the handle.
            await standin.go_away(time_left_s=10.0)
            await standin.wait_until(connected(standin, 2))
            caller_speaks(session, spoken, rate=ROOM_RATE)
            second = await events.next_reply()
            await standin.wait_until(lambda: len(standin.turns) == 2 and standin.turns[1].completed)

    assert first.text == "Nice to meet you, Ana."
    assert first_connection.go_aways == ["10s"]
    # The plugin left at once, rather than be cut off when the time ran out.
    assert first_connection.closed_by == "client"
    second_connection = standin.connections[1]
    assert second_connection.resumed_with == latest
    assert standin.resumes == [(1, latest)]
    assert first_connection.conversation is not None and second_connection.conversation is not None
    assert second_connection.conversation.id == first_connection.conversation.id
    # The conversation went on: the second answer draws on the first turn.
    assert standin.turns[1].connection == 1
    assert second.text == "You said: My name is Ana."
    assert events.final_transcripts == ["My name is Ana.", "What is my name?"]
    # The handle brought the context back, so the plugin sent no history again.
    assert second_connection.client_content == []
    assert second_connection.audio_in_total > 0
    assert session.session_resumption_handle == second_connection.handles_issued[-1]
    assert events.errors == []


async def test_connection_limit_makes_the_plugin_roll_over_to_resumed_connections() -> None:
    async with GeminiLiveStandIn(
        api_key=API_KEY, connection_limit_s=1.0, go_away_lead_s=0.5
    ) as standin:
        async with plugin_session(gemini_at(standin)) as (_, events):
            await standin.wait_until(connected(standin, 3))

    first, second, third = standin.connections[:3]
    assert first.go_aways == ["0.5s"] and second.go_aways == ["0.5s"]
    assert first.closed_by == "client" and second.closed_by == "client"
    assert second.resumed_with == first.handles_issued[-1]
    assert third.resumed_with == second.handles_issued[-1]
    assert events.errors == []


async def test_caller_speech_over_a_reply_interrupts_it() -> None:
    story = "Once upon a time there lived a cat who loved long naps in the sun."
    script = [
        Reply(heard="Tell me a story.", says=story, audio=tone(3.0)),
        Reply(heard="Stop, please.", says="Sure, stopping."),
    ]
    spoken = caller_speech(speech_s=0.6, silence_s=0.8, rate=PLUGIN_INPUT_RATE)
    async with GeminiLiveStandIn(script, api_key=API_KEY, playback_speed=2.0) as standin:
        async with plugin_session(gemini_at(standin)) as (session, events):
            await standin.wait_until(connected(standin, 1))
            caller_speaks(session, spoken, rate=PLUGIN_INPUT_RATE)
            await standin.wait_until(lambda: bool(standin.turns) and standin.turns[0].said != "")
            caller_speaks(session, spoken, rate=PLUGIN_INPUT_RATE)
            cut_short = await events.next_reply()
            answer = await events.next_reply()
            await standin.wait_until(lambda: len(standin.turns) == 2 and standin.turns[1].completed)

    interrupted = standin.turns[0]
    assert standin.interruptions == [interrupted]
    assert not interrupted.completed
    # The client got exactly what was sent before the cut, which is less than the whole story.
    assert cut_short.text == interrupted.said
    assert 0 < len(cut_short.text) < len(story)
    assert len(cut_short.audio) == interrupted.audio_bytes_sent < len(tone(3.0))
    assert answer.text == "Sure, stopping."
    # Once for each of the two generations, and once for the interruption.
    assert events.speech_started == 3
    conversation = standin.connections[0].conversation
    assert conversation is not None
    assert [exchange.interrupted for exchange in conversation.history] == [True, False]
    assert events.errors == []


async def test_an_unknown_resumption_handle_is_refused() -> None:
    async with GeminiLiveStandIn(api_key=API_KEY) as standin:
        model = gemini_at(
            standin, session_resumption=types.SessionResumptionConfig(handle="standin-expired")
        )
        async with plugin_session(model) as (_, events):
            await events.wait_until(lambda: bool(events.errors))

    assert standin.refused_handles == ["standin-expired"]
    assert standin.connections[0].close_code == CLOSE_INVALID_ARGUMENT
    assert not standin.connections[0].setup_completed
    # A refused setup is not retried: the plugin gives the session up.
    assert [error.recoverable for error in events.errors] == [False]
    assert len(standin.connections) == 1


def live_client(standin: GeminiLiveStandIn, api_key: str = API_KEY) -> genai.Client:
    return genai.Client(api_key=api_key, vertexai=False, http_options=standin.http_options())


async def test_manual_activity_marks_the_turn_without_voice_detection() -> None:
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
    )
    script = [Reply(heard="Quiet words.", says="I heard you.")]
    silence = bytes(3200)
    async with GeminiLiveStandIn(script, api_key=API_KEY) as standin:
        client = live_client(standin)
        async with client.aio.live.connect(model=MODEL, config=config) as live:
            await live.send_realtime_input(activity_start=types.ActivityStart())
            # Silence: the caller's turn is what the client marks, not what is loud.
            await live.send_realtime_input(
                audio=types.Blob(data=silence, mime_type="audio/pcm;rate=16000")
            )
            await live.send_realtime_input(activity_end=types.ActivityEnd())
            messages = [message async for message in live.receive()]
        await client.aio.aclose()

    contents = [m.server_content for m in messages if m.server_content]
    heard = "".join(c.input_transcription.text or "" for c in contents if c.input_transcription)
    said = "".join(c.output_transcription.text or "" for c in contents if c.output_transcription)
    assert (heard, said) == ("Quiet words.", "I heard you.")
    assert messages[-1].server_content is not None and messages[-1].server_content.turn_complete
    assert messages[-1].usage_metadata is not None
    connection = standin.connections[0]
    assert connection.realtime_signals == ["activityStart", "activityEnd"]
    assert standin.turns[0].request.speech_bytes == len(silence)
    # Resumption was not asked for, so no handles.
    assert connection.handles_issued == []


async def test_audio_stream_end_ends_the_callers_turn() -> None:
    async with GeminiLiveStandIn(api_key=API_KEY) as standin:
        client = live_client(standin)
        async with client.aio.live.connect(model=MODEL) as live:
            # Speech with no silence after it: only the end of the stream ends the turn.
            await live.send_realtime_input(
                audio=types.Blob(data=tone(0.5, rate=16000), mime_type="audio/pcm;rate=16000")
            )
            await live.send_realtime_input(audio_stream_end=True)
            messages = [message async for message in live.receive()]
        await client.aio.aclose()

    assert standin.connections[0].realtime_signals == ["audioStreamEnd"]
    assert len(standin.turns) == 1 and standin.turns[0].completed
    audio = b"".join(m.data or b"" for m in messages)
    assert rms(audio) > 3000


async def test_a_connection_past_its_limit_is_told_then_closed() -> None:
    async with GeminiLiveStandIn(
        api_key=API_KEY, connection_limit_s=0.6, go_away_lead_s=0.3
    ) as standin:
        client = live_client(standin)
        async with client.aio.live.connect(model=MODEL) as live:
            received = live.receive()
            warning = await anext(received)
            with pytest.raises(errors.APIError) as closed:
                await anext(received)
        await client.aio.aclose()

    assert warning.go_away is not None and warning.go_away.time_left == "0.3s"
    assert closed.value.code == CLOSE_ABORTED
    assert standin.connections[0].closed_by == "server"


async def test_a_wrong_api_key_is_refused() -> None:
    async with GeminiLiveStandIn(api_key=API_KEY) as standin:
        client = live_client(standin, api_key="not-the-key")
        with pytest.raises(errors.APIError) as refused:
            async with client.aio.live.connect(model=MODEL):
                pass
        await client.aio.aclose()

    assert refused.value.code == CLOSE_INVALID_ARGUMENT
    assert standin.connections[0].api_key == "not-the-key"
