"""Gemini Live for dialog calls: native audio in and out, through livekit-plugins-google.

Session resumption and context-window compression are on, so a call outlives Gemini's
connection limit (the server sends goAway; the plugin reconnects with the latest handle)
and its session limit (old turns are compressed instead of the session ending).
"""

from __future__ import annotations

import os
import ssl
from functools import cache
from typing import Any

from google.genai import types
from livekit.agents import AgentSession
from livekit.plugins import google

from core.scenarios import Scenario

from ..roles import gemini_configured
from ..settings import AgentSettings

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
    if key := os.environ.get("GOOGLE_API_KEY"):
        extra["api_key"] = key
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
    return AgentSession(llm=gemini_model(settings), user_away_timeout=idle_s)


def use_gemini(settings: AgentSettings) -> bool:
    return settings.dialog_engine == "gemini" or (
        settings.dialog_engine == "auto" and gemini_configured()
    )
