"""Which engine serves each role (STT, LLM, TTS), chosen per role in configuration.

`local` is the offline default. `google` uses livekit-plugins-google, and is allowed only when
Google credentials are configured (GOOGLE_APPLICATION_CREDENTIALS for Cloud STT and TTS,
GOOGLE_API_KEY or Vertex AI settings for Gemini).
"""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import llm, stt, tts
from livekit.plugins import google
from livekit.plugins import openai as openai_plugin

from core.errors import KaiwaError

from . import engines
from .settings import AgentSettings
from .stt.whisper import WhisperSTT
from .stt.whisper_model import WHISPER_LANGUAGES, WhisperOptions
from .tts.local import LocalTTS

Engine = Literal["local", "google"]


class EngineNotConfigured(KaiwaError, RuntimeError):
    pass


def _require(role: str, ok: bool, what: str) -> None:
    if not ok:
        raise EngineNotConfigured(f"{role}=google needs {what}; set it, or use {role}=local")


def make_stt(settings: AgentSettings, language: str) -> stt.STT[Any]:
    if settings.stt_engine == "google":
        _require("STT_ENGINE", settings.google_cloud_configured, "GOOGLE_APPLICATION_CREDENTIALS")
        return google.STT(
            languages=language,
            detect_language=False,
            credentials_file=settings.google_application_credentials,
        )
    # The call's language, so the first words are not mistaken for another one (streams
    # may still ask for another language: the interpreter does, per speaker).
    base = language.split("-")[0].lower()
    options = WhisperOptions(language=base if base in WHISPER_LANGUAGES else None)
    return WhisperSTT(engines.whisper(settings.stt_model), engines.vad(), options)


def make_tts(settings: AgentSettings, language: str) -> tts.TTS[Any]:
    """Raises UnsupportedLanguage (agents.tts.voices) when no local voice speaks it."""
    if settings.tts_engine == "google":
        _require("TTS_ENGINE", settings.google_cloud_configured, "GOOGLE_APPLICATION_CREDENTIALS")
        return google.TTS(
            language=language, credentials_file=settings.google_application_credentials
        )
    return LocalTTS(engines.voice(language))


def make_llm(settings: AgentSettings, *, reply_tokens: int | None = None) -> llm.LLM[Any]:
    """The dialog's LLM; `reply_tokens` bounds what it writes (LLM_REPLY_TOKENS unless
    given: a client that only has the server read a prompt writes one token)."""
    if settings.llm_engine == "google":
        _require("LLM_ENGINE", settings.gemini_configured, "GOOGLE_API_KEY (or Vertex AI settings)")
        return google.LLM(model=settings.google_llm_model)
    return openai_plugin.LLM(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key="local",
        temperature=0.3,
        # (The server takes this over `max_tokens`: a per-request `max_tokens` cannot lower it.)
        max_completion_tokens=reply_tokens or settings.llm_reply_tokens,
    )


async def chat_text(model: llm.LLM[Any], chat: llm.ChatContext) -> str:
    """The whole text of one completion of `chat`, streamed and joined."""
    parts: list[str] = []
    async with model.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta is not None and chunk.delta.content:
                parts.append(chunk.delta.content)
    return "".join(parts)
