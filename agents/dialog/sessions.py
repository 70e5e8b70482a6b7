"""The AgentSessions a dialog call talks through: the local pipeline, or Gemini Live.

The local pipeline is Whisper → the local LLM → the local voice, streamed, with LiveKit's
turn handling tuned for a spoken conversation. Gemini Live has native audio in and out,
through livekit-plugins-google; session resumption and context-window compression are on,
so a call outlives Gemini's connection limit (the server sends goAway; the plugin reconnects
with the latest handle) and its session limit (old turns are compressed instead of the
session ending). Gemini's builders joined the local ones here: together they are short, and
choosing between them (`use_gemini`) reads best beside both.
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Any

from google.genai import types
from livekit import rtc
from livekit.agents import AgentSession, room_io
from livekit.agents.voice.events import AgentEvent, EventTypes
from livekit.agents.voice.turn import TurnHandlingOptions
from livekit.plugins import google

from core.scenarios import Scenario

from .. import engines, roles, turns
from ..settings import AgentSettings


def local_engines(settings: AgentSettings, scenario: Scenario) -> dict[str, Any]:
    """The offline pipeline: Whisper → the local LLM → the local voice, streamed; for a
    session, or for an agent taking over from Gemini mid-call."""
    return {
        "stt": roles.make_stt(settings, scenario.language),
        "llm": roles.make_llm(settings),
        "tts": roles.make_tts(settings, scenario.language),
        "vad": engines.vad(),
        "turn_handling": TurnHandlingOptions(
            # LiveKit's end-of-turn model where it knows the language (en, ja), VAD else.
            turn_detection=turns.turn_detection(scenario.language),
            endpointing={"max_delay": scenario.max_turn_pause_s},
            # Talking over the agent pauses it at once (VAD) and clears it when words
            # follow; a cough that brings no words lets it resume.
            interruption={"min_duration": 0.05, "false_interruption_timeout": 1.5},
            # Start the reply on the final transcript, before end of turn is confirmed, and
            # synthesize its speech too, so it is ready to play when the turn ends.
            preemptive_generation={"enabled": True, "preemptive_tts": True},
        ),
    }


class CallSession(AgentSession[Any]):
    """An AgentSession that lets its events go once its listeners have had them.

    livekit-agents keeps every event a session emits, for a report made when the job ends
    (LiveKit Cloud's observability); Kaiwa makes none. The VAD's metrics and the usage
    update that follows each come about once a second, so the list only grew: about
    1.6 MiB of a dialog's memory a minute in the soak, and the worker's creep of about
    80 MiB an hour (docs/operations.md). Checked against livekit-agents 1.8.9, whose
    `AgentSession.emit` does nothing else (tests/test_dialog_parts.py).

    Start it with `session_host=False` (DialogCall.run): by default a session also
    publishes its events to everyone in the room and answers requests from any of them,
    to read its history, type into it or turn its audio off.
    """

    def emit(self, event: EventTypes, arg: AgentEvent) -> None:
        super(AgentSession, self).emit(event, arg)


def local_session(
    settings: AgentSettings, scenario: Scenario, *, idle_s: float
) -> AgentSession[Any]:
    return CallSession(**local_engines(settings, scenario), user_away_timeout=idle_s)


def room_options() -> room_io.RoomOptions:
    """How a dialog session meets the room: whom it hears, and how. One audio track of the
    caller's: RoomIO hears the caller's newest microphone track, and a track published
    beside it replaces the one heard rather than adding a second. Typed messages (`lk.chat`)
    are DialogCall's to read: RoomIO would read a whole stream into memory, however long,
    before anyone could refuse it."""
    return room_io.RoomOptions(
        text_input=False,
        participant_kinds=[
            rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
            rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        ],
        # 20 ms frames (LiveKit's default is 50): the VAD hears the caller start and
        # stop sooner, which is when barge-in and the end of a turn begin.
        audio_input=room_io.AudioInputOptions(frame_size_ms=20),
        # Captions are ours (turn_captions.py), under the ids the turns are stored by.
        text_output=False,
        # A caller who leaves may be reloading the page: the session waits for them
        # (RoomIO links them again when they return), and DialogCall says how long.
        close_on_disconnect=False,
    )


# Compress the context when it reaches this many tokens, well before the model's window.
COMPRESS_AT_TOKENS = 25_000


@cache
def _ssl_context(ca_file: str) -> ssl.SSLContext:
    # Made once per process: building one takes a noticeable time on the event loop.
    return ssl.create_default_context(cafile=ca_file)


def _http_options(settings: AgentSettings) -> types.HttpOptions | None:
    """Where the Live API is, when not Google's own (a proxy, a private endpoint, a test
    stand-in); a fresh object per model, since the plugin writes its headers into it."""
    if not settings.gemini_base_url:
        return None
    client_args: dict[str, Any] = {}
    if settings.gemini_ca_file:
        client_args["ssl"] = _ssl_context(settings.gemini_ca_file)
    return types.HttpOptions(base_url=settings.gemini_base_url, async_client_args=client_args)


def gemini_model(settings: AgentSettings) -> google.realtime.RealtimeModel:
    extra: dict[str, Any] = {}
    if options := _http_options(settings):
        extra["http_options"] = options
    if settings.google_api_key:
        extra["api_key"] = settings.google_api_key
        extra["vertexai"] = False
    return google.realtime.RealtimeModel(
        model=settings.gemini_live_model,
        voice=settings.gemini_voice,
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(
            trigger_tokens=COMPRESS_AT_TOKENS, sliding_window=types.SlidingWindow()
        ),
        **extra,
    )


def gemini_session(
    settings: AgentSettings, scenario: Scenario, *, idle_s: float
) -> AgentSession[Any]:
    """Turns are detected by Gemini itself (server-side activity detection)."""
    return CallSession(llm=gemini_model(settings), user_away_timeout=idle_s)


def use_gemini(settings: AgentSettings) -> bool:
    return settings.dialog_engine == "gemini" or (
        settings.dialog_engine == "auto" and settings.gemini_configured
    )
