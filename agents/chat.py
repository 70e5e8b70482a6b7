"""Typed messages into a call: which are taken, under what id, and a notice for the rest.

A caller's page, or a native app (docs/mobile.md), sends a typed message as a text stream on
`lk.chat`, LiveKit's topic for user text input. Before an agent acts on one, the inbox
checks it:
- its stream is read up to just past MAX_MESSAGE_CHARS, for at most READ_TIMEOUT_S, and at
  most MAX_READING_PER_SENDER of one sender's at once; then it is closed, so whatever a
  sender streams, an agent holds a bounded amount of it;
- it is taken once, by its sender's id for it, so a send retried after a reconnect is not
  answered twice, and an id one sender used is never another's;
- it is at most MAX_MESSAGE_CHARS long, with no control characters but line breaks and tabs;
- a sender sends at most MESSAGES_PER_WINDOW in MESSAGE_WINDOW_S, refused ones included.

What is refused is counted and its sender told why, on `kaiwa.notice`. A message's text is
never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
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
# Ids remembered per sender to take a retried send once: far more than one person's
# messages within any retry's reach. Per sender, so that nobody can make the inbox forget
# another's ids by sending many of their own.
REMEMBERED_IDS = 1000
# Past this, a message is too long whatever follows: the rest is not read into memory.
READ_LIMIT = MAX_MESSAGE_CHARS + 1
# A typed message arrives at once (one or two chunks; the page gives a send up after 5 s and
# sends it again: web/src/call/chat.js): a stream still open after this is not waited for.
READ_TIMEOUT_S = 10.0
# One sender's streams read at once: as many as the rate lets through in a window. Each
# holds up to READ_LIMIT characters until it ends or times out.
MAX_READING_PER_SENDER = MESSAGES_PER_WINDOW

Refusal = Literal[
    "empty", "too_long", "control_characters", "too_fast", "duplicate", "id_taken", "incomplete"
]

NOTICES: dict[Refusal, str] = {
    "empty": "The message was empty.",
    "too_long": f"The message was longer than {MAX_MESSAGE_CHARS} characters, so it was not sent.",
    "control_characters": "The message had control characters in it, so it was not sent.",
    "too_fast": f"More than {MESSAGES_PER_WINDOW} messages in {MESSAGE_WINDOW_S:g} seconds: "
    "wait a moment, then send it again.",
    "duplicate": "",  # a retry of a message already taken: nothing to tell
    # Another sender's id (they can read it on its caption): its row is theirs. No page
    # reuses another's id, so there is nobody to explain it to.
    "id_taken": "",
    "incomplete": "",  # still arriving after READ_TIMEOUT_S: the page sends it again
}


@dataclass(frozen=True)
class TypedMessage:
    id: str  # the id it is captioned and stored under
    sender: str  # the sender's identity
    text: str


def _sender_tag(sender: str) -> str:
    return hashlib.blake2s(sender.encode(), digest_size=4).hexdigest()


def message_id(attributes: Mapping[str, str], stream_id: str, sender: str) -> str:
    """The id a message is stored under: the page's own id where it gave a valid one (so a
    retry is the same message, and the page's row is found by it: docs/mobile.md), else the
    stream's, under its sender's tag. (The `.` before the stream's id is in no page's id,
    so the two kinds never meet: a sender who names a stream after someone's message id
    gets an id of their own.)"""
    given = attributes.get(MESSAGE_ID, "")
    if _CLIENT_ID.match(given):
        return f"chat-{given}"
    stream = re.sub(r"[^A-Za-z0-9_-]", "", stream_id)[:50] or "x"
    return f"chat-{_sender_tag(sender)}.{stream}"


def _has_control_characters(text: str) -> bool:
    return any(
        (unicodedata.category(ch) == "Cc" and ch not in "\n\t") or ch in BIDI_CONTROLS
        for ch in text
    )


async def read_capped(reader: rtc.TextStreamReader) -> str | None:
    """The message's text, up to READ_LIMIT characters (enough to know it is too long); None
    if its stream was still open after READ_TIMEOUT_S. The reader is closed whatever
    happens: one left open stays subscribed, and every chunk its sender goes on streaming
    piles up in its unbounded queue for the life of the process (livekit.rtc's
    TextStreamReader)."""
    text = ""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            async for chunk in reader:
                text += chunk
                if len(text) >= READ_LIMIT:
                    break
    except rtc.StreamError:  # its sender left mid-message: what arrived is all there is
        pass
    except TimeoutError:
        return None
    finally:
        reader.close()
    return text[:READ_LIMIT]


class ChatInbox:
    """The typed messages one agent takes in one call."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Each sender's ids taken, oldest first; and whose each id is.
        self._taken: dict[str, OrderedDict[str, None]] = {}
        self._owners: dict[str, str] = {}
        self._recent: dict[str, deque[float]] = {}
        self._reading: dict[str, int] = {}

    def take(
        self, *, sender: str, text: str, attributes: Mapping[str, str], stream_id: str
    ) -> TypedMessage | Refusal:
        """The message to act on, or why it is refused (counted here)."""
        id_ = message_id(attributes, stream_id, sender)
        refusal = self._check(sender, text, id_)
        if refusal is not None:
            metrics.CHAT_MESSAGES.labels(refusal).inc()
            return refusal
        metrics.CHAT_MESSAGES.labels("taken").inc()
        return TypedMessage(id=id_, sender=sender, text=text.strip())

    async def read(
        self, room: rtc.Room, reader: rtc.TextStreamReader, sender: str
    ) -> TypedMessage | None:
        """Read a typed message's stream (closing it) and take it; or None, the sender told
        why it was refused."""
        info = reader.info
        if self._reading.get(sender, 0) >= MAX_READING_PER_SENDER:
            reader.close()
            self._within_rate(sender)  # counted all the same: it was sent
            metrics.CHAT_MESSAGES.labels("too_fast").inc()
            await self._refused(room, sender, info, "too_fast", chars=0)
            return None
        self._reading[sender] = self._reading.get(sender, 0) + 1
        try:
            text = await read_capped(reader)
        finally:
            self._reading[sender] -= 1
            if not self._reading[sender]:
                del self._reading[sender]
        if text is None:
            metrics.CHAT_MESSAGES.labels("incomplete").inc()
            await self._refused(room, sender, info, "incomplete", chars=0)
            return None
        return await self.receive(room, sender=sender, text=text, info=info)

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
        await self._refused(room, sender, info, taken, chars=len(text))
        return None

    async def _refused(
        self,
        room: rtc.Room,
        sender: str,
        info: rtc.TextStreamInfo | None,
        why: Refusal,
        *,
        chars: int,
    ) -> None:
        logger.info("typed message refused", extra={"room": room.name, "why": why, "chars": chars})
        attributes = dict(info.attributes or {}) if info else {}
        stream_id = info.stream_id if info else ""
        await tell_refused(room, sender, attributes, stream_id, why)

    def _check(self, sender: str, text: str, id_: str) -> Refusal | None:
        owner = self._owners.get(id_)
        if owner == sender:
            return "duplicate"  # a retry: not counted against the rate
        # Counted from here on, refused or not: one who floods bad messages is held to the
        # rate as one who floods good ones.
        if not self._within_rate(sender):
            return "too_fast"
        if owner is not None:
            return "id_taken"
        if not text.strip():
            return "empty"
        if len(text) > MAX_MESSAGE_CHARS:
            return "too_long"
        if _has_control_characters(text):
            return "control_characters"
        self._remember(sender, id_)
        return None

    def _within_rate(self, sender: str) -> bool:
        """Whether one more message from `sender` is within the rate (and if so, noted)."""
        now = self._clock()
        recent = self._recent.setdefault(sender, deque())
        while recent and recent[0] <= now - MESSAGE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MESSAGES_PER_WINDOW:
            return False
        recent.append(now)
        return True

    def _remember(self, sender: str, id_: str) -> None:
        taken = self._taken.setdefault(sender, OrderedDict())
        taken[id_] = None
        self._owners[id_] = sender
        if len(taken) > REMEMBERED_IDS:
            forgotten, _ = taken.popitem(last=False)
            del self._owners[forgotten]


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
        attributes={SEGMENT_ID: message_id(attributes, stream_id, sender), NOTICE_REASON: why},
    )
