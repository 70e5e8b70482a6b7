"""The checks a typed message passes before an agent acts on it (agents/chat.py)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from agents.chat import ChatInbox, TypedMessage, message_id
from core.payloads import SegmentId
from core.protocol import MAX_MESSAGE_CHARS, MESSAGE_ID, MESSAGE_WINDOW_S, MESSAGES_PER_WINDOW

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def take(inbox: ChatInbox, text: str, *, page_id: str = "", sender: str = "alice") -> object:
    attributes = {MESSAGE_ID: page_id} if page_id else {}
    stream_id = f"stream-{page_id or text[:8]}"
    return inbox.take(sender=sender, text=text, attributes=attributes, stream_id=stream_id)


def test_a_message_is_taken_under_the_pages_id_once() -> None:
    inbox = ChatInbox(clock=Clock())
    taken = take(inbox, "  How do I say 'umbrella'?  ", page_id="m-0123456789")
    assert taken == TypedMessage(
        id="chat-m-0123456789", sender="alice", text="How do I say 'umbrella'?"
    )
    # The page sends it again after a reconnect: the same message, not taken twice.
    assert take(inbox, "How do I say 'umbrella'?", page_id="m-0123456789") == "duplicate"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("m-0123456789", "chat-m-0123456789"),
        ("short", "chat-streamid"),  # too short to be a page's id: the stream's
        ("../../etc/passwd", "chat-streamid"),
        ("x" * 80, "chat-streamid"),
    ],
)
def test_the_stored_id_is_a_valid_segment_id(given: str, expected: str) -> None:
    stored = message_id({MESSAGE_ID: given}, "stream/id")
    assert stored == expected
    assert TypeAdapter(SegmentId).validate_python(stored) == stored


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("x" * (MAX_MESSAGE_CHARS + 1), "too_long"),
        ("bell\x07", "control_characters"),
        ("\u202eevil", "control_characters"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(text: str, why: str) -> None:
    assert take(ChatInbox(clock=Clock()), text) == why


@pytest.mark.parametrize(
    "text",
    [
        "x" * MAX_MESSAGE_CHARS,  # one long word, as long as allowed
        "שלום עולם مرحبا",  # right-to-left scripts
        "明日は雨ですか？☔️🙂",
        "line one\n\tline two",
        "<script>alert(1)</script>",  # text like any other: shown as text, never rendered
    ],
)
def test_unusual_but_valid_messages_are_taken_as_given(text: str) -> None:
    taken = take(ChatInbox(clock=Clock()), text)
    assert isinstance(taken, TypedMessage) and taken.text == text.strip()


def test_a_sender_is_held_to_the_rate_and_others_are_not() -> None:
    clock = Clock()
    inbox = ChatInbox(clock=clock)
    for n in range(MESSAGES_PER_WINDOW):
        assert isinstance(take(inbox, f"message {n}", page_id=f"alice-{n:08d}"), TypedMessage)
    assert take(inbox, "one too many", page_id="alice-99999999") == "too_fast"
    assert isinstance(take(inbox, "hello", page_id="bob-00000000", sender="bob"), TypedMessage)
    # Refused, so not remembered: sent again once the window has passed, it is taken.
    clock.now += MESSAGE_WINDOW_S
    assert isinstance(take(inbox, "one too many", page_id="alice-99999999"), TypedMessage)
