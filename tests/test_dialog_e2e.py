"""The dialog agent on the real stack, with the offline engines: the caller talks, the
agent answers aloud, and the call is kept.

The caller's speech is made by the project's own voice and spoken into an always-on
microphone; what the agent says is transcribed back with Whisper.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from agents.dialog.lines import line
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

from .support.calls import (
    SKY_QUESTION,
    SKY_WORDS,
    History,
    after_greeting,
    agent_finals,
    answers_sky,
    dialog_caller,
    keyword_share,
    similarity,
    speech,
    transcribe,
    voiced,
    wait_for,
    wait_quiet,
)

pytestmark = [pytest.mark.e2e, pytest.mark.models]


@pytest.fixture
async def caller(stack: Stack) -> AsyncIterator[SyntheticCaller]:
    async with dialog_caller(stack, "Dana") as person:
        yield person


@pytest.fixture
async def question() -> tuple[np.ndarray[Any, Any], int]:
    """The question in the caller's voice. Made off the event loop, so no audio from the agent
    is missed meanwhile."""
    return await asyncio.to_thread(speech, "en", SKY_QUESTION)


async def test_caller_asks_by_voice_and_hears_a_relevant_answer(
    stack: Stack, caller: SyntheticCaller, question: tuple[np.ndarray[Any, Any], int]
) -> None:
    history = History(stack, caller.grant["room"])
    # The agent speaks first: the scenario's opening line, captioned and heard.
    track = await after_greeting(caller)
    assert "talk about" in agent_finals(caller)[0].text

    heard_before = len(caller.heard)
    await caller.say(*question)
    await wait_for(lambda: len(agent_finals(caller)) >= 2, 60, "the agent's answer", caller)
    answer = agent_finals(caller)[1].text
    assert answers_sky(answer), answer
    await wait_quiet(caller, track)
    caller.heard[:] = caller.heard[heard_before:]
    heard = await transcribe(caller, track, "en")
    # What was heard is the captioned answer, give or take Whisper-base's ear.
    assert similarity(heard, answer) > 0.7, (heard, answer)

    # Each turn is stored once, with who said it and the engine that served it.
    detail = await history.wait_until(
        lambda d: sum(s["role"] == "agent" for s in d["transcript"]) >= 2, "the answer stored"
    )
    turns = detail["transcript"]
    assert len({t["id"] for t in turns}) == len(turns)
    (asked,) = [t for t in turns if t["role"] == "user"]
    assert keyword_share(asked["text"], SKY_WORDS) >= 0.6, asked
    assert asked["participant_identity"] == caller.identity
    greeting, reply = [t for t in turns if t["role"] == "agent"]
    assert "talk about" in greeting["text"] and answers_sky(reply["text"]), reply
    assert greeting["start_s"] <= asked["start_s"] <= reply["start_s"]
    assert all(t["engine"] and t["language"] == "en" and not t["interrupted"] for t in turns)
    # Each turn's latency ledger, as LiveKit measured it in the pipeline: the question's
    # transcript, and the reply's first token and first frame.
    assert "final_transcript" in asked["timings"], asked
    assert {"llm_first_token", "reply_first_frame"} <= reply["timings"].keys(), reply
    # Each is stored under its caption's segment id, with the caption's final text: a page
    # merges what it saw live with the history by that id.
    finals = {
        t.attributes["lk.segment_id"]: " ".join(t.text.split())
        for t in caller.texts
        if t.attributes.get("lk.transcription_final") == "true"
    }
    stored = {t["id"]: " ".join(t["text"].split()) for t in turns}
    assert stored == {i: finals.get(i) for i in stored}, finals

    # When the call ends, its usage and a summary are stored. The caller goes as a closed
    # tab does, without saying the call is over: it ends after the rejoin grace.
    await caller.leave(ended=False)
    detail = await history.wait_until(
        lambda d: d["summary"] and (d["usage"] or {}).get("tts_characters"),
        "the call's summary and usage",
        timeout_s=60,  # the call waits DIALOG_REJOIN_GRACE_S (20 s) for the caller
    )
    usage = detail["usage"]
    # The reply's characters went to the voice (its sentences one by one, without the
    # spaces between them); the greeting may have been replayed from the worker's cache.
    assert usage["tts_characters"] >= len("".join(reply["text"].split()))
    assert usage["llm_input_tokens"] > 0 and usage["llm_output_tokens"] > 0
    assert usage["audio_in_s"] > 1 and usage["audio_out_s"] > 1
    assert len(detail["transcript"]) == len(turns)  # nothing stored twice at the end


async def test_talking_over_the_agent_stops_it_and_marks_the_turn(
    stack: Stack, caller: SyntheticCaller
) -> None:
    history = History(stack, caller.grant["room"])
    # Voices are made off the event loop, so no audio from the agent is missed meanwhile.
    ask = await asyncio.to_thread(speech, "en", "Please tell me a story about a brave little cat.")
    interrupt = await asyncio.to_thread(
        speech, "en", "Sorry, wait a moment please, I have another question for you."
    )
    await after_greeting(caller)

    asked = await caller.say(*ask)
    await wait_for(
        lambda: any(voiced(h) and h.at > asked for h in caller.heard), 60, "the story", caller
    )
    await asyncio.sleep(0.6)
    barged_in = time.monotonic()
    done = await caller.say(*interrupt)
    # The story stops while the caller talks over it. (Stopping takes the VAD's 0.2 s and
    # the audio path's delay; a second covers both, where the story would go on for several.)
    story_after = sum(
        len(h.samples) / h.sample_rate
        for h in caller.heard
        if voiced(h) and barged_in + 1.0 <= h.at <= done
    )
    assert story_after < 0.3, f"{story_after:.2f} s of the story heard over the caller"

    detail = await history.wait_until(
        lambda d: sum(t["role"] == "agent" for t in d["transcript"]) >= 2, "the story stored"
    )
    story = [t for t in detail["transcript"] if t["role"] == "agent"][1]
    assert story["interrupted"] is True, detail["transcript"]


async def test_hanging_up_mid_reply_keeps_the_partial_turn_marked_interrupted(
    stack: Stack, caller: SyntheticCaller
) -> None:
    history = History(stack, caller.grant["room"])
    ask = await asyncio.to_thread(speech, "en", "Please tell me a story about a brave little cat.")
    await after_greeting(caller)
    asked = await caller.say(*ask)
    await wait_for(
        lambda: any(voiced(h) and h.at > asked for h in caller.heard), 60, "the story", caller
    )
    await asyncio.sleep(1.0)
    await caller.leave()  # mid-story

    detail = await history.wait_until(
        lambda d: sum(t["role"] == "agent" for t in d["transcript"]) >= 2, "the story stored"
    )
    turns = detail["transcript"]
    (request,) = [t for t in turns if t["role"] == "user"]
    assert keyword_share(request["text"], {"tell", "story", "brave", "little", "cat"}) >= 0.6
    story = [t for t in turns if t["role"] == "agent"][1]
    assert story["interrupted"] is True, turns


async def test_noise_and_silence_get_no_reply(stack: Stack, caller: SyntheticCaller) -> None:
    history = History(stack, caller.grant["room"])
    await after_greeting(caller)
    # 15 s of steady background noise (a fan, a street), then the microphone's silence.
    rate = 16000
    noise = np.random.default_rng(7).normal(0, 600, rate * 15).clip(-32768, 32767)
    started = time.monotonic()
    await caller.say(noise.astype(np.int16), rate)
    await asyncio.sleep(8)
    assert len(agent_finals(caller)) == 1, [t.text for t in agent_finals(caller)]
    assert not [h for h in caller.heard if voiced(h) and h.at > started]
    detail = await history.conversation()
    assert not [t for t in detail["transcript"] if t["role"] == "user"], detail["transcript"]


async def test_the_llm_server_dying_mid_call_gets_an_apology_and_the_call_goes_on(
    stack: Stack, caller: SyntheticCaller, question: tuple[np.ndarray[Any, Any], int]
) -> None:
    history = History(stack, caller.grant["room"])
    track = await after_greeting(caller)
    llm = stack.services["llm"]
    assert llm.proc is not None
    os.killpg(llm.proc.pid, signal.SIGKILL)  # a crash: no shutdown, no goodbye
    await asyncio.to_thread(llm.proc.wait)

    await caller.say(*question)
    await wait_for(lambda: len(agent_finals(caller)) >= 2, 60, "the apology", caller)
    assert agent_finals(caller)[1].text == line("en", "sorry")
    await wait_quiet(caller, track)
    # A typed question meets the same apology.
    typed = await caller.send_message("Are you there?")
    await wait_for(lambda: len(agent_finals(caller)) >= 3, 60, "the typed one's apology", caller)
    assert agent_finals(caller)[2].text == line("en", "sorry")
    await wait_quiet(caller, track)

    # The stack starts the server again (`make up` supervises it; here the test does), and
    # the same call carries on: the question is answered.
    await asyncio.to_thread(llm.start)
    await asyncio.to_thread(llm.wait_ready)
    await caller.say(*question)
    await wait_for(lambda: len(agent_finals(caller)) >= 4, 60, "the answer", caller)
    assert answers_sky(agent_finals(caller)[3].text), agent_finals(caller)[3].text

    detail = await history.wait_until(
        lambda d: sum(t["role"] == "agent" for t in d["transcript"]) >= 4, "the answer stored"
    )
    turns = detail["transcript"]
    roles = [t["role"] for t in turns]
    assert roles == ["agent", "user", "agent", "user", "agent", "user", "agent"], turns
    assert turns[2]["text"] == turns[4]["text"] == line("en", "sorry")
    assert (turns[3]["id"], turns[3]["kind"]) == (typed, "text")
    assert answers_sky(turns[6]["text"]), turns[6]
