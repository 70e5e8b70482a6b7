"""Engines per role: local by default, Google only when its credentials are configured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from livekit.agents import llm
from livekit.plugins import google
from livekit.plugins import openai as openai_plugin

from agents.roles import EngineNotConfigured, make_llm, make_stt, make_tts
from agents.settings import AgentSettings
from agents.stt.whisper import WhisperSTT
from agents.tts.local import LocalTTS
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_google_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)


def test_local_engines_by_default() -> None:
    settings = AgentSettings()
    assert isinstance(make_stt(settings, "ja"), WhisperSTT)
    assert isinstance(make_tts(settings, "ja"), LocalTTS)
    assert isinstance(make_llm(settings), openai_plugin.LLM)


@pytest.mark.parametrize("role", ["stt_engine", "tts_engine", "llm_engine"])
def test_google_without_credentials_is_a_clear_error(role: str) -> None:
    settings = AgentSettings(**{role: "google"})  # type: ignore[arg-type]
    makers: dict[str, Callable[[], object]] = {
        "stt_engine": lambda: make_stt(settings, "en"),
        "tts_engine": lambda: make_tts(settings, "en"),
        "llm_engine": lambda: make_llm(settings),
    }
    maker = makers[role]
    with pytest.raises(EngineNotConfigured, match=f"{role.upper()}=google needs"):
        maker()


def test_google_per_role_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "service-account.json"
    credentials.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    settings = AgentSettings(stt_engine="google", llm_engine="google")
    assert isinstance(make_stt(settings, "ja-JP"), google.STT)
    assert isinstance(make_llm(settings), google.LLM)
    assert isinstance(make_tts(settings, "ja"), LocalTTS)  # chosen per role


async def test_local_llm_through_the_livekit_agents_interface(stack: Stack) -> None:
    settings = AgentSettings(llm_base_url=stack.cfg.llm_base_url, llm_model=stack.cfg.llm_model)
    model = make_llm(settings)
    chat = llm.ChatContext()
    chat.add_message(role="user", content="What is the capital city of Japan? Answer in one word.")
    text = ""
    async with model.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
    assert "tokyo" in text.lower(), text
