"""Typed messages into a call: which are taken, under what id, and a notice for the rest.

A caller's page, or a native app (docs/mobile.md), sends a typed message as a text stream on
`lk.chat`, LiveKit's topic for user text input. Before an agent acts on one, the inbox
checks it:
- it is taken once, by its id, so a send retried after a reconnect is not answered twice;
- it is at most MAX_MESSAGE_CHARS long, with no control characters but line breaks and tabs;
- a sender sends at most MESSAGES_PER_WINDOW in MESSAGE_WINDOW_S.

What is refused is counted and its sender told why, on `kaiwa.notice`. A message's text is
never logged.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from livekit import rtc

from core.protocol import (
    MAX_MESSAGE_CHARS,
    MESSAGE_ID,
    MESSAGE_WINDOW_S,
    MESSAGES_PER_WINDOW,
    NOTICE_REASON,
    NOTICE_TOPIC,
    SEGMENT_ID,
)
from core.text import BIDI_CONTROLS

from . import metrics

logger = logging.getLogger("kaiwa.chat")

# What a page's own id for a message may be; stored as `chat-<id>` (a valid segment id).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,56}$")
# Ids remembered per call to take a retried send once: far more than a call's messages
# within any retry's reach.
REMEMBERED_IDS = 1000

Refusal = Literal["empty", "too_long", "control_characters", "too_fast", "duplicate"]

NOTICES: dict[Refusal, str] = {
    "empty": "The message was empty.",
    "too_long": f"The message was longer than {MAX_MESSAGE_CHARS} characters, so it was not sent.",
    "control_characters": "The message had control characters in it, so it was not sent.",
    "too_fast": f"More than {MESSAGES_PER_WINDOW} messages in {MESSAGE_WINDOW_S:g} seconds: "
    "wait a moment, then send it again.",
    "duplicate": "",  # a retry of a message already taken: nothing to tell
}


@dataclass(frozen=True)
class TypedMessage:
    id: str  # the id it is captioned and stored under
    sender: str  # the sender's identity
    text: str


def message_id(attributes: Mapping[str, str], stream_id: str) -> str:
    """The id a message is stored under: the page's own id where it gave a valid one (so a
    retry is the same message), else the stream's."""
    given = attributes.get(MESSAGE_ID, "")
    if _CLIENT_ID.match(given):
        return f"chat-{given}"
    return f"chat-{re.sub(r'[^A-Za-z0-9_-]', '', stream_id)[:56] or 'x'}"


def _has_control_characters(text: str) -> bool:
    return any(
        (unicodedata.category(ch) == "Cc" and ch not in "\n\t") or ch in BIDI_CONTROLS
        for ch in text
    )


class ChatInbox:
    """The typed messages one agent takes in one call."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._taken: OrderedDict[str, None] = OrderedDict()
        self._recent: dict[str, deque[float]] = {}

    def take(
        self, *, sender: str, text: str, attributes: Mapping[str, str], stream_id: str
    ) -> TypedMessage | Refusal:
        """The message to act on, or why it is refused (counted here)."""
        id_ = message_id(attributes, stream_id)
        refusal = self._check(sender, text, id_)
        if refusal is not None:
            metrics.CHAT_MESSAGES.labels(refusal).inc()
            return refusal
        metrics.CHAT_MESSAGES.labels("taken").inc()
        return TypedMessage(id=id_, sender=sender, text=text.strip())

    async def receive(
        self, room: rtc.Room, *, sender: str, text: str, info: rtc.TextStreamInfo | None
    ) -> TypedMessage | None:
        """The message to act on; or None, the sender told why (and the refusal logged,
        without the text)."""
        attributes = dict(info.attributes or {}) if info else {}
        stream_id = info.stream_id if info else ""
        taken = self.take(sender=sender, text=text, attributes=attributes, stream_id=stream_id)
        if isinstance(taken, TypedMessage):
            return taken
        logger.info(
            "typed message refused", extra={"room": room.name, "why": taken, "chars": len(text)}
        )
        await tell_refused(room, sender, attributes, stream_id, taken)
        return None

    def _check(self, sender: str, text: str, id_: str) -> Refusal | None:
        if id_ in self._taken:
            return "duplicate"
        if not text.strip():
            return "empty"
        if len(text) > MAX_MESSAGE_CHARS:
            return "too_long"
        if _has_control_characters(text):
            return "control_characters"
        now = self._clock()
        recent = self._recent.setdefault(sender, deque())
        while recent and recent[0] <= now - MESSAGE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MESSAGES_PER_WINDOW:
            return "too_fast"
        recent.append(now)
        self._taken[id_] = None
        if len(self._taken) > REMEMBERED_IDS:
            self._taken.popitem(last=False)
        return None


async def tell_refused(
    room: rtc.Room, sender: str, attributes: Mapping[str, str], stream_id: str, why: Refusal
) -> None:
    """Tell the sender, and only the sender, that a message was not taken and why."""
    if not (notice := NOTICES[why]):
        return
    await room.local_participant.send_text(
        notice,
        topic=NOTICE_TOPIC,
        destination_identities=[sender],
        # The id the page's row for the message has (the one it would be stored under).
        attributes={SEGMENT_ID: message_id(attributes, stream_id), NOTICE_REASON: why},
    )
