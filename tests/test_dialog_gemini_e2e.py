"""The dialog agent on Gemini Live, on the real stack, against the Live API stand-in.

The agent worker runs as users run it with a Google key, except that its Live API endpoint
is the stand-in (tests/gemini_live.py): livekit-plugins-google and google-genai are real.
The stand-in runs on its own event loop in a thread, since the stack outlives each test's
loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

from .support.calls import (
    SKY_QUESTION,
    History,
    agent_finals,
    dialog_caller,
    speech,
    voiced,
    wait_for,
)
from .support.gemini_live import GeminiLiveStandIn, Reply, TurnRequest
from .support.servers import make_stack_config, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.models]

T = TypeVar("T")
GREETING = "Hello! What would you like to talk about?"
ANSWERS = {
    "france": ("What is the capital of France?", "Paris is the capital of France."),
    "japan": ("And the capital of Japan?", "Tokyo is the capital of Japan."),
}


TYPED_QUESTION = "What is the capital of Italy?"
TYPED_ANSWER = "Rome is the capital of Italy."


def script(request: TurnRequest) -> Reply:
    """The greeting for the agent's text turn that asks for it; the answer to a typed
    question for a text turn that asks for nothing (the question came before it, as
    conversation content); answers to speech in the order asked."""
    if request.kind == "text":
        return Reply(heard="", says=GREETING if "Greet" in request.text else TYPED_ANSWER)
    asked = sum(e.kind == "speech" for e in request.history)
    heard, says = list(ANSWERS.values())[min(asked, len(ANSWERS) - 1)]
    return Reply(heard=heard, says=says)


class StandInThread:
    """The stand-in, serving from a thread of its own."""

    def __init__(self) -> None:
        self.standin = GeminiLiveStandIn(script)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> GeminiLiveStandIn:
        self._thread.start()
        self.call(self.standin.__aenter__())
        return self.standin

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if not self.standin_stopped:
            self.standin_stopped = True
            self.call(self.standin.__aexit__(None, None, None))

    standin_stopped = False


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInThread]:
    serving = StandInThread()
    with serving:
        yield serving


@pytest.fixture(scope="module")
def gemini_stack(
    standin: StandInThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    cfg = make_stack_config(tmp_path_factory.mktemp("gemini-stack"))
    cfg = dataclasses.replace(
        cfg,
        extra_env={
            **cfg.extra_env,
            "DIALOG_ENGINE": "gemini",
            "GOOGLE_API_KEY": "stand-in-key",
            "GEMINI_BASE_URL": standin.standin.base_url,
            "GEMINI_CA_FILE": str(Path(standin.standin.ca_file)),
        },
    )
    with running_stack(cfg) as running:
        yield running


@pytest.fixture
async def caller(gemini_stack: Stack) -> AsyncIterator[SyntheticCaller]:
    async with dialog_caller(gemini_stack, "Gil") as person:
        yield person


async def ask(caller: SyntheticCaller, text: str, answers: int) -> None:
    """Say `text`; wait until the agent's `answers`-th final caption and some of its audio."""
    heard_before = len(caller.heard)
    await caller.say(*await asyncio.to_thread(speech, "en", text))
    await wait_for(lambda: len(agent_finals(caller)) >= answers, 30, f"an answer to {text!r}")
    await wait_for(lambda: any(voiced(h) for h in caller.heard[heard_before:]), 10, "its audio")


async def test_gemini_dialog_streams_both_ways_and_resumes_after_go_away(
    gemini_stack: Stack, standin: StandInThread, caller: SyntheticCaller
) -> None:
    live = standin.standin
    history = History(gemini_stack, caller.grant["room"])
    # The agent greets first, through Gemini; the audio and its words reach the caller.
    await wait_for(lambda: agent_finals(caller), 30, "the greeting", caller)
    assert GREETING in agent_finals(caller)[0].text
    (setup,) = [c.setup for c in live.connections]
    assert "sessionResumption" in str(setup) or "session_resumption" in str(setup)
    assert "contextWindowCompression" in str(setup) or "context_window_compression" in str(setup)

    await ask(caller, "What is the capital of France?", answers=2)
    assert "Paris" in agent_finals(caller)[1].text
    assert live.connections[0].audio_in_total > 16000 * 2  # over a second of the caller's voice

    # Gemini's connection limit: it says goAway (here once the answer is complete and its
    # resumption handle sent), and the plugin resumes on a new connection.
    await wait_for(lambda: live.turns[-1].completed, 10, "the answer's turn to complete")
    await asyncio.sleep(0.5)
    await standin.acall(live.go_away(time_left_s=0.5))
    await wait_for(lambda: live.resumes, 15, "a resumed connection")
    await ask(caller, "And the capital of Japan?", answers=3)
    assert "Tokyo" in agent_finals(caller)[2].text, (
        [t.text for t in agent_finals(caller)],
        [(t.connection, t.request.kind, t.request.text, t.reply.says) for t in live.turns],
    )
    # The same conversation went on: the resumed session answered with the earlier turns.
    last = live.turns[-1]
    assert last.connection != live.turns[0].connection
    assert [e.said for e in last.request.history][-1].startswith("Paris")

    # Both sides' turns are stored once, each marked as served by Gemini.
    detail = await history.wait_until(
        lambda d: sum(t["role"] == "agent" for t in d["transcript"]) >= 3, "three agent turns"
    )
    turns = detail["transcript"]
    assert len({t["id"] for t in turns}) == len(turns)
    said = [(t["role"], t["text"]) for t in turns]
    assert ("user", "What is the capital of France?") in said
    assert ("agent", "Tokyo is the capital of Japan.") in said
    assert all(t["engine"].startswith("gemini/") for t in turns)


async def test_a_typed_question_is_answered_by_gemini_and_stored_as_typed(
    gemini_stack: Stack, standin: StandInThread, caller: SyntheticCaller
) -> None:
    """The typed turn goes to Gemini as conversation content, through the plugin, and the
    answer comes back in voice and captions like a spoken one."""
    live = standin.standin
    history = History(gemini_stack, caller.grant["room"])
    await wait_for(lambda: agent_finals(caller), 30, "the greeting", caller)
    heard_before = len(caller.heard)
    asked = await caller.deliver(TYPED_QUESTION)
    await wait_for(
        lambda: any(TYPED_ANSWER in t.text for t in agent_finals(caller)),
        30,
        "Gemini's answer",
        caller,
    )
    await wait_for(lambda: any(voiced(h) for h in caller.heard[heard_before:]), 10, "its audio")
    sent = [str(c) for connection in live.connections for c in connection.client_content]
    assert any(TYPED_QUESTION in content for content in sent), sent

    detail = await history.wait_until(
        lambda d: any(t["text"] == TYPED_ANSWER for t in d["transcript"]), "the answer stored"
    )
    turns = {t["id"]: t for t in detail["transcript"]}
    question = turns[asked]
    assert (question["role"], question["kind"], question["text"]) == (
        "user",
        "text",
        TYPED_QUESTION,
    )
    (answer,) = [t for t in turns.values() if t["text"] == TYPED_ANSWER]
    assert answer["engine"].startswith("gemini/") and answer["kind"] == "speech"
    ids = list(turns)
    assert ids.index(asked) < ids.index(answer["id"])


async def test_gemini_failing_mid_call_hands_over_to_the_local_pipeline(
    gemini_stack: Stack, standin: StandInThread, caller: SyntheticCaller
) -> None:
    history = History(gemini_stack, caller.grant["room"])
    await wait_for(lambda: agent_finals(caller), 30, "the greeting", caller)
    # Gemini goes away for good: the connection drops and cannot be made again.
    await asyncio.to_thread(standin.stop)
    await asyncio.sleep(2)
    await caller.say(*await asyncio.to_thread(speech, "en", SKY_QUESTION))
    # Any answer will do: what it says is the small local model's, to what it heard (once
    # "What color is this guy on a clear sunny day?" got "typically white"). The stored
    # engines below say who answered.
    await wait_for(lambda: len(agent_finals(caller)) >= 2, 60, "the local answer", caller)

    detail = await history.wait_until(
        lambda d: any(t["engine"].startswith("local/") for t in d["transcript"]),
        "a turn served by the local pipeline",
    )
    engines = [t["engine"].split("/")[0] for t in detail["transcript"]]
    assert engines[0] == "gemini" and engines[-1] == "local"
