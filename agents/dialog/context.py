"""The conversation the LLM is given: bounded to what the server's slot holds.

A dialog may run for an hour (DIALOG_MAX_CALL_S), but the local server's slot holds 2048
tokens, and a longer prompt is refused outright ("exceeds the available context size"):
every reply after that would fail. So the oldest turns are dropped once the conversation
outgrows `budget_tokens`, with the scenario's instructions always kept.

They are dropped `STEP` items at a time, at item counts that are multiples of `STEP`. The
cut depends only on the conversation, and between two moves it stays where it was, so the
prompt's beginning is the same from turn to turn and the server's cached prompt is reused.
It is read whole again once per move, not on every turn.
"""

from __future__ import annotations

from livekit.agents import llm

STEP = 8  # conversation items (four exchanges) dropped at a time
INSTRUCTION_ROLES = ("system", "developer")


def estimated_tokens(item: llm.ChatItem) -> int:
    """A cautious estimate: a token per 3 bytes of UTF-8 (about a character of Japanese or
    Vietnamese, under one word of English), plus the chat template's few per message."""
    text = item.text_content if isinstance(item, llm.ChatMessage) else ""
    return len((text or "").encode()) // 3 + 4


def bounded(chat: llm.ChatContext, budget_tokens: int) -> llm.ChatContext:
    """`chat` itself when it fits `budget_tokens`, else a copy without its oldest turns."""
    items = chat.items
    lead = 0
    while lead < len(items) and _has_role(items[lead], INSTRUCTION_ROLES):
        lead += 1
    instructions, talk = items[:lead], items[lead:]
    costs = [estimated_tokens(item) for item in talk]
    room = budget_tokens - sum(estimated_tokens(item) for item in instructions)
    if sum(costs) <= room:
        return chat
    cut = 0
    while cut < len(talk) and sum(costs[cut:]) > room:
        cut += STEP
    # Begin on the caller's words: after the instructions the chat template wants a user
    # message. Never past the last one, which the reply is for.
    users = [i for i, item in enumerate(talk) if _has_role(item, ("user",))]
    later = [i for i in users if i >= cut]
    if later:
        cut = later[0]
    elif users:
        cut = users[-1]
    else:
        cut = min(cut, len(talk))
    return llm.ChatContext([*instructions, *talk[cut:]])


def without_said(chat: llm.ChatContext, lines: frozenset[str]) -> llm.ChatContext:
    """A copy of `chat` without the agent's messages that are one of `lines`."""
    return llm.ChatContext([item for item in chat.items if not _said(item, lines)])


def _said(item: llm.ChatItem, lines: frozenset[str]) -> bool:
    return (
        isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and (item.text_content or "") in lines
    )


def _has_role(item: llm.ChatItem, roles: tuple[str, ...]) -> bool:
    return isinstance(item, llm.ChatMessage) and item.role in roles
