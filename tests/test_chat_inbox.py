"""The checks a typed message passes before an agent acts on it (agents/chat.py)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from agents.chat import REMEMBERED_IDS, ChatInbox, TypedMessage, message_id
from core.payloads import SegmentId
from core.protocol import MAX_MESSAGE_CHARS, MESSAGE_ID, MESSAGE_WINDOW_S, MESSAGES_PER_WINDOW

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def take(
    inbox: ChatInbox,
    text: str,
    *,
    page_id: str = "",
    sender: str = "alice",
    stream_id: str = "",
) -> object:
    attributes = {MESSAGE_ID: page_id} if page_id else {}
    stream_id = stream_id or f"stream-{page_id or text[:8]}"
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
    ("given", "stream_id", "expected"),
    [
        # The page's own id: its row's id (docs/mobile.md).
        ("m-0123456789", "stream/id", "chat-m-0123456789"),
        ("x" * 56, "stream/id", "chat-" + "x" * 56),
        # Too short to be a page's id, or not one at all: the stream's, under its sender's.
        ("short", "stream/id", "chat-{tag}.streamid"),
        ("../../etc/passwd", "stream/id", "chat-{tag}.streamid"),
        ("x" * 80, "stream/id", "chat-{tag}.streamid"),
        ("", "s" * 90, "chat-{tag}." + "s" * 50),
    ],
)
def test_the_stored_id_is_a_valid_segment_id(given: str, stream_id: str, expected: str) -> None:
    stored = message_id({MESSAGE_ID: given}, stream_id, "alice")
    tag = message_id({}, "", "alice").removeprefix("chat-").removesuffix(".x")
    assert stored == expected.format(tag=tag)
    assert TypeAdapter(SegmentId).validate_python(stored) == stored


def test_a_stream_named_after_someones_message_id_is_stored_apart() -> None:
    """Alice's message id is on its caption, for all to read: Bob sends a stream under it
    (and no id of his own), and it is stored under an id of his, not on her row."""
    inbox = ChatInbox(clock=Clock())
    alices = "0123456789abcdef0123456789abcdef"
    assert take(inbox, "hello", page_id=alices) == TypedMessage(
        id=f"chat-{alices}", sender="alice", text="hello"
    )
    bobs = take(inbox, "mine now", sender="bob", stream_id=alices)
    assert isinstance(bobs, TypedMessage)
    assert bobs.id != f"chat-{alices}" and bobs.id.endswith(alices)
    # Another sender's stream of the same name is stored apart from Bob's too.
    carols = take(inbox, "and mine", sender="carol", stream_id=alices)
    assert isinstance(carols, TypedMessage) and carols.id not in (bobs.id, f"chat-{alices}")


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


def test_a_message_id_is_its_senders_alone() -> None:
    """Bob sends under the id of Alice's message (on its caption, for all to read): it is
    not taken, so nothing of his is captioned or stored on her row; her retry is still hers."""
    inbox = ChatInbox(clock=Clock())
    alices = "0123456789abcdef0123456789abcdef"
    assert isinstance(take(inbox, "hello", page_id=alices), TypedMessage)
    assert take(inbox, "mine now", page_id=alices, sender="bob") == "id_taken"
    assert take(inbox, "hello", page_id=alices) == "duplicate"


def test_no_sender_can_make_the_inbox_forget_anothers_ids() -> None:
    clock = Clock()
    inbox = ChatInbox(clock=clock)
    alices = "0123456789abcdef0123456789abcdef"
    assert isinstance(take(inbox, "hello", page_id=alices), TypedMessage)
    # Bob sends more messages than the inbox remembers, at the rate allowed...
    for n in range(REMEMBERED_IDS + 1):
        if n % MESSAGES_PER_WINDOW == 0:
            clock.now += MESSAGE_WINDOW_S
        taken = take(inbox, f"message {n}", page_id=f"bob-{n:08d}", sender="bob")
        assert isinstance(taken, TypedMessage), (n, taken)
    # ... and Alice's id is still hers: neither his nor new.
    clock.now += MESSAGE_WINDOW_S
    assert take(inbox, "mine now", page_id=alices, sender="bob") == "id_taken"
    assert take(inbox, "hello", page_id=alices) == "duplicate"


@pytest.mark.parametrize(
    "text", ["x" * (MAX_MESSAGE_CHARS + 1), "", "bell\x07"], ids=["too_long", "empty", "control"]
)
def test_refused_messages_count_toward_the_rate(text: str) -> None:
    """One who floods messages the inbox refuses is held to the rate as one who floods
    good ones: past it, even a good message waits."""
    clock = Clock()
    inbox = ChatInbox(clock=clock)
    for n in range(MESSAGES_PER_WINDOW):
        refused = take(inbox, text, page_id=f"alice-{n:08d}")
        assert isinstance(refused, str) and refused not in ("too_fast", "duplicate"), refused
    assert take(inbox, text, page_id="alice-99999998") == "too_fast"
    assert take(inbox, "a good one", page_id="alice-99999999") == "too_fast"
    clock.now += MESSAGE_WINDOW_S
    assert isinstance(take(inbox, "a good one", page_id="alice-99999999"), TypedMessage)
