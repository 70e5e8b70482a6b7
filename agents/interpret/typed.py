"""Typed messages in an interpreted call: the voice of a person who types.

A typed message is a final sentence of its sender (speaker.py: FinalText, of kind `text`),
read and checked first by the call's ChatInbox (agents/chat.py). Its translations are spoken
on the sender's voices: those of their microphone's track, or, for a person with no
microphone track, voices of their own named `chat-<identity>-<language>`
(docs/interpretation.md).
"""

from __future__ import annotations


def typed_voice(identity: str) -> str:
    """The voice of a person with no microphone track: its tracks are `<this>-<language>`."""
    return f"chat-{identity}"
