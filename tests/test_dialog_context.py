"""A long dialog stays within what the LLM server's slot holds (agents/dialog/context.py)."""

from __future__ import annotations

import httpx
import pytest
from livekit.agents import llm

from agents.dialog.context import STEP, bounded, estimated_tokens, without_said
from kaiwa.stack.services import Stack

LINES = {
    "user": [
        "Where is the nearest train station, and when does the last train leave tonight?",
        "駅までどのくらいかかりますか。切符はいくらですか。",
        "Cho tôi hỏi, bảo tàng mở cửa lúc mấy giờ vào ngày mai?",
    ],
    "assistant": [
        "The station is two blocks north; the last train leaves at eleven forty.",
        "歩いて十分ぐらいです。切符は二百円です。",
        "Bảo tàng mở cửa lúc chín giờ sáng và đóng cửa lúc năm giờ chiều.",
    ],
}


def conversation(exchanges: int) -> llm.ChatContext:
    chat = llm.ChatContext()
    chat.add_message(role="system", content="You are a station attendant. Reply briefly.")
    for i in range(exchanges):
        chat.add_message(role="user", content=LINES["user"][i % 3])
        chat.add_message(role="assistant", content=LINES["assistant"][i % 3])
    chat.add_message(role="user", content="Thank you. One more question, please.")
    return chat


def cost(chat: llm.ChatContext) -> int:
    return sum(estimated_tokens(item) for item in chat.items)


@pytest.mark.unit
def test_a_short_conversation_is_sent_whole() -> None:
    chat = conversation(5)
    assert bounded(chat, 1400) is chat


@pytest.mark.unit
def test_a_long_one_keeps_the_instructions_and_the_latest_turns_within_the_budget() -> None:
    chat = conversation(120)
    kept = bounded(chat, 1400)
    assert cost(chat) > 1400 >= cost(kept)
    first, second, *_ = kept.items
    assert isinstance(first, llm.ChatMessage) and first.role == "system"
    assert isinstance(second, llm.ChatMessage) and second.role == "user"
    assert kept.items[-1] is chat.items[-1]
    assert len(kept.items) > 20  # dozens of turns still there, not just the last


@pytest.mark.unit
def test_the_cut_moves_seldom_so_the_cached_prompt_is_reused() -> None:
    """From turn to turn the kept conversation begins at the same item until it must
    move, and then it moves by at least STEP items."""
    positions = []  # where the kept conversation begins in the whole one
    for exchanges in range(30, 150):
        chat = conversation(exchanges)
        kept = bounded(chat, 1400)
        positions.append(len(chat.items) - len(kept.items) + 1)  # the instructions are kept
    moves = [b - a for a, b in zip(positions, positions[1:], strict=False) if b != a]
    assert all(m >= STEP for m in moves), moves
    assert len(moves) <= 120 * 2 // STEP + 1, moves


@pytest.mark.e2e
async def test_the_server_answers_a_long_dialog_once_bounded(stack: Stack) -> None:
    """Unbounded, 120 exchanges are refused by the server (its slot holds 2048 tokens);
    bounded as the agent sends them, they are answered."""
    chat = conversation(120)

    async def ask(chat: llm.ChatContext) -> httpx.Response:
        messages = [
            {"role": item.role, "content": item.text_content}
            for item in chat.items
            if isinstance(item, llm.ChatMessage)
        ]
        body = {"model": stack.cfg.llm_model, "messages": messages, "max_tokens": 4}
        async with httpx.AsyncClient(timeout=120) as client:
            return await client.post(f"{stack.cfg.llm_base_url}/chat/completions", json=body)

    refused = await ask(chat)
    assert refused.status_code == 400 and "context" in refused.text, refused.text
    answered = await ask(bounded(chat, 1400))
    assert answered.status_code == 200, answered.text


@pytest.mark.unit
def test_the_calls_apology_is_not_shown_to_the_model_as_its_own_turn() -> None:
    sorry = "Sorry, I lost my train of thought. Could you say that again?"
    chat = conversation(1)
    chat.add_message(role="assistant", content=sorry)
    chat.add_message(role="user", content=sorry)  # the caller's words are theirs, whatever

    shown = without_said(chat, frozenset({sorry}))

    messages = [m for m in shown.items if isinstance(m, llm.ChatMessage)]
    assert [(m.role, m.text_content) for m in messages] == [
        ("system", "You are a station attendant. Reply briefly."),
        ("user", LINES["user"][0]),
        ("assistant", LINES["assistant"][0]),
        ("user", "Thank you. One more question, please."),
        ("user", sorry),
    ]
