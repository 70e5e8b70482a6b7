"""The dialog agent's read-ahead, against the real LLM server: what it read is kept for the
answer, so the answer reads only the caller's last words."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from livekit.agents import llm

from agents import roles
from agents.dialog.agent import ScenarioAgent
from agents.settings import AgentSettings
from core.scenarios import Scenario
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration

QUESTION = "What is the capital city of France?"


def _client(stack: Stack, reply_tokens: int | None = None) -> llm.LLM[Any]:
    # As the worker makes both the session's LLM and the agent's reader (one token).
    settings = AgentSettings(llm_model=stack.cfg.llm_model, llm_base_url=stack.cfg.llm_base_url)
    return roles.make_llm(settings, reply_tokens=reply_tokens)


async def _greeted_agent(reader: llm.LLM[Any] | None) -> ScenarioAgent:
    """An agent whose conversation holds its greeting; its persona is new to the server, so
    nothing of its prompt was cached before."""
    agent = ScenarioAgent(
        Scenario(
            id="read-ahead",
            title="Read-ahead",
            language="en",
            level="native",
            persona=f"a helpful guide called {uuid.uuid4().hex}",
            opening="Hello! What would you like to know?",
            instructions="Answer in one short sentence.",
        ),
        reader=reader,
    )
    chat = agent.chat_ctx.copy()
    # As the session holds it: its instructions first (the session puts them there when
    # the agent starts), then the greeting.
    chat.add_message(role="system", content=agent.scenario.system_prompt())
    chat.add_message(role="assistant", content=agent.scenario.opening)
    await agent.update_chat_ctx(chat)
    return agent


async def _answer_usage(model: llm.LLM[Any], agent: ScenarioAgent) -> llm.CompletionUsage:
    """The usage of the request the session makes for the answer to QUESTION."""
    chat = agent.chat_ctx.copy()
    chat.add_message(role="user", content=QUESTION)
    usage = None
    async with model.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            usage = chunk.usage or usage
    assert usage is not None
    return usage


async def test_the_answer_finds_what_was_read_while_the_caller_spoke(stack: Stack) -> None:
    reader, model = _client(stack, reply_tokens=1), _client(stack)
    try:
        agent = await _greeted_agent(reader)
        reading = agent.read_ahead("What is the capital city", role="user")  # an interim
        assert reading is not None
        assert agent.read_ahead("What is the capital city of", role="user") is None
        await reading
        usage = await _answer_usage(model, agent)
        # Left to read: the last words and the end of the message, a dozen tokens at most.
        assert usage.prompt_cached_tokens >= usage.prompt_tokens - 12, usage

        # The same answer without a read-ahead reads its whole prompt.
        cold = await _answer_usage(model, await _greeted_agent(None))
        assert cold.prompt_cached_tokens < cold.prompt_tokens / 2, cold
    finally:
        await reader.aclose()
        await model.aclose()


async def test_without_a_reader_nothing_is_read(stack: Stack) -> None:
    agent = await _greeted_agent(None)
    assert agent.read_ahead("What is the capital city", role="user") is None
