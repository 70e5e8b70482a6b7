"""The project's llama.cpp server settings, on the stack's own server: what they are for."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis
from livekit.agents import llm

from agents.dialog.context import STEP, bounded, estimated_tokens
from agents.translate import prompt
from core.presence import registered_workers
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration

CLERK = "You are a station clerk at Tokyo Station. Answer travellers in one or two sentences."
# Eight exchanges of a long dialog: each line different, so no run of it repeats another.
ASKED = [
    "Which platform does the {n}:15 express to Osaka leave from, and is it on time today?",
    "How long does the {n}:40 local train take to reach Yokohama, with every stop?",
]
ANSWERED = [
    "The {n}:15 express to Osaka leaves from platform {n}, and it is on time today.",
    "The {n}:40 local reaches Yokohama in about {n}0 minutes, stopping at every station.",
]


def exchanges(count: int) -> list[llm.ChatMessage]:
    items = []
    for n in range(1, count + 1):
        kind = n % 2
        items.append(llm.ChatMessage(role="user", content=[ASKED[kind].format(n=n)]))
        items.append(llm.ChatMessage(role="assistant", content=[ANSWERED[kind].format(n=n)]))
    return items


def messages(chat: llm.ChatContext) -> list[dict[str, str]]:
    return [
        {"role": item.role, "content": item.text_content or ""}
        for item in chat.items
        if isinstance(item, llm.ChatMessage)
    ]


async def complete(stack: Stack, chat: llm.ChatContext) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{stack.cfg.llm_base_url}/chat/completions",
            json={
                "model": stack.cfg.llm_model,
                "messages": messages(chat),
                "max_tokens": 1,
                "temperature": 0,
            },
        )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_dialog_that_drops_its_oldest_turns_is_not_read_whole_again(stack: Stack) -> None:
    # A long dialog stays within its slot by dropping its oldest exchanges (agents/dialog/
    # context.py). What follows them is what the server has cached, one place earlier: with
    # cache reuse it shifts that, instead of reading the whole prompt again (on a busy node,
    # 22-30 s: past the reply's timeout, every fourth exchange of every long dialog).
    talk = exchanges(12)
    instructions = llm.ChatMessage(role="system", content=[CLERK])
    before = llm.ChatContext([instructions, *talk])
    await complete(stack, before)  # the dialog so far, cached in a slot

    # The next question does not fit: the oldest exchanges go.
    asked = llm.ChatMessage(role="user", content=["And which platform for the last train?"])
    budget = sum(estimated_tokens(item) for item in [instructions, *talk, asked]) - 1
    after = bounded(llm.ChatContext([instructions, *talk, asked]), budget)
    assert len(after.items) == len(before.items) + 1 - STEP, "the oldest exchanges dropped"

    answer = await complete(stack, after)
    read, prompt = answer["timings"]["prompt_n"], answer["usage"]["prompt_tokens"]
    # Read again: the new question, the chat template's framing around the cut, and what
    # the reuse cannot shift (runs shorter than its 256-token least).
    assert prompt >= 300 and read <= prompt / 3, answer


# A sentence none of the tests before has had translated, in each direction's source.
UNSEEN = {
    "en": "The blue ferry to the island leaves twice a week.",
    "ja": "島へ行く青いフェリーは週に二回出ます。",
    "vi": "Chiếc phà xanh ra đảo chạy hai lần một tuần.",
}


async def test_the_worker_has_the_translation_prompts_read_before_it_takes_calls(
    stack: Stack,
) -> None:
    # Each direction's prompt starts with its instructions and examples, about 100 tokens:
    # read cold on 2 cores, several seconds a call's first sentence would wait for.
    presence = redis.Redis.from_url(stack.cfg.redis_url)
    try:
        workers = registered_workers(presence)
    finally:
        presence.close()
    # en<->ja and en<->vi; ja<->vi goes through English.
    assert [w.get("translations_warmed") for w in workers] == [4], workers
    for source, target in (("en", "ja"), ("ja", "en"), ("en", "vi"), ("vi", "en")):
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"{stack.cfg.llm_base_url}/chat/completions",
                json={
                    "model": stack.cfg.llm_model,
                    "messages": prompt(UNSEEN[source], source, target),
                    "max_tokens": 1,
                    "temperature": 0,
                },
            )
        answer = response.raise_for_status().json()
        read, total = answer["timings"]["prompt_n"], answer["usage"]["prompt_tokens"]
        # Read: the new sentence and its framing; the instructions and examples were there.
        assert read <= total / 3, (source, target, answer)
