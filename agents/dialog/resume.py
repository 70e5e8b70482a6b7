"""A dialog taken over by a new agent after its first one was lost (agents/watchdog): the
chat rebuilt from the history, so the conversation goes on where it was."""

from __future__ import annotations

from livekit.agents import llm

from core.payloads import CallState


def restored_context(state: CallState) -> llm.ChatContext:
    """The call's turns as the model's chat, after the summary of what came before them."""
    chat = llm.ChatContext.empty()
    if state.summary:
        chat.add_message(role="system", content=f"Summary of the call so far: {state.summary}")
    for turn in state.turns:
        chat.add_message(
            role="user" if turn.role == "user" else "assistant",
            content=turn.text,
            interrupted=turn.interrupted,
        )
    return chat
