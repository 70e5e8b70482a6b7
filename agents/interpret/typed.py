"""Typed messages in an interpreted call: reading one, and the voice of a person who types.

A typed message is a final sentence of its sender (speaker.py: FinalText, of kind `text`),
checked first by the call's ChatInbox (agents/chat.py). Its translations are spoken on the
sender's voices: those of their microphone's track, or, for a person with no microphone
track, voices of their own named `chat-<identity>-<language>` (docs/interpretation.md).
"""

from __future__ import annotations

from livekit import rtc

from core.protocol import MAX_MESSAGE_CHARS

# Past this, a message is too long whatever follows: the rest is not read into memory.
READ_LIMIT = MAX_MESSAGE_CHARS + 1


def typed_voice(identity: str) -> str:
    """The voice of a person with no microphone track: its tracks are `<this>-<language>`."""
    return f"chat-{identity}"


async def read_message(reader: rtc.TextStreamReader) -> str:
    """The message's text, up to READ_LIMIT characters (enough to know it is too long)."""
    text = ""
    try:
        async for chunk in reader:
            text += chunk
            if len(text) >= READ_LIMIT:
                break
    except rtc.StreamError:  # its sender left mid-message: what arrived is all there is
        pass
    return text[:READ_LIMIT]
