"""A dialog's captions, under the ids its turns are stored by.

LiveKit's room transcription output gives each caption a segment id of its own, and a new
one for each STT final, so a caller's turn can span several of them. None of these ids is
what the history stores the turn under. Here, instead:
- a caller's turn is one segment, from its first word to its commit;
- each reply is one segment, from its first word to its flush.
The TurnLog stores each turn under the same id as its caption. A page that reloads can
then merge what it saw live with the history, by id (docs/web-caller.md).

The reply's text comes through LiveKit's TranscriptSynchronizer, so it is still published
word by word as it is spoken. A caller's captions are sent as coming from the caller, the
way LiveKit sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from livekit import rtc
from livekit.agents import UserInputTranscribedEvent
from livekit.agents.voice import io

from core.payloads import SegmentKind
from core.protocol import CAPTION_TOPIC, FINAL
from core.tasks import TaskOwner

from ..captions import Caption
from ..chat import TypedMessage
from .log import logger

# Replies kept for a caller who rejoins: more than end in a reload's few seconds.
ENDED_KEPT = 4
# The agent hears that a caller left a moment after their page stopped reading (an unload,
# a clean disconnect, the SFU's notice): a reply that ended in that moment went to a page
# that was going. Such replies are sent again too; pages merge captions by segment id.
LEAVE_NOTICE_S = 2.0


def _new_id(role: str) -> str:
    return f"turn-{role}-{uuid.uuid4().hex[:12]}"


class TurnCaptions:
    def __init__(
        self,
        room: rtc.Room,
        *,
        language: str,
        caller_identity: Callable[[], str],
        call_started_at: float,
    ) -> None:
        self.room = room
        self.language = language
        self._caller_identity = caller_identity
        self._call_started_at = call_started_at
        self.reply = ReplyCaptions(self)
        self._turn_id: str | None = None
        self._turn_started = 0.0
        self._finals: list[str] = []
        # Captions go out in the order they were made: each send waits for the one before.
        self._sends = TaskOwner(logger, room=room.name)
        self._last_send: asyncio.Task[None] | None = None

    def call_time(self, at: float | None = None) -> float:
        return max(0.0, (time.time() if at is None else at) - self._call_started_at)

    def caption(
        self, segment_id: str, speaker: str, text: str, *, final: bool, start_s: float
    ) -> Caption:
        return Caption(
            segment_id=segment_id,
            track_id=_microphone_sid(self.room, speaker),
            speaker=speaker,
            language=self.language,
            text=text,
            final=final,
            start_s=start_s,
            end_s=max(start_s, self.call_time()),
        )

    def send_in_order(self, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        previous = self._last_send

        async def after_previous() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            try:
                await send()
            except Exception:  # a caption lost is not worth the call
                logger.warning("a caption could not be sent", exc_info=True)

        self._last_send = self._sends.spawn(after_previous(), "dialog-caption")

    async def aclose(self, timeout_s: float) -> None:
        """Let the captions already made go out, within `timeout_s`; then stop the rest."""
        await self._sends.wait(timeout_s)
        await self._sends.aclose(timeout_s)

    # --- the caller -------------------------------------------------------------------------

    def on_user_transcribed(self, event: UserInputTranscribedEvent) -> None:
        """An interim or final transcript of the caller's current turn."""
        if self._turn_id is None:
            self._turn_id = _new_id("user")
            self._turn_started = self.call_time(event.created_at)
            self._finals = []
        if event.is_final:
            self._finals.append(event.transcript.strip())
            text = " ".join(t for t in self._finals if t)
        else:
            text = " ".join([*self._finals, event.transcript.strip()]).strip()
        if text:
            self._send_user(self._turn_id, text, final=False)

    def user_turn(self, text: str, start_s: float) -> str:
        """The caller's turn was committed with `text`, said from `start_s`: its final
        caption, and its id."""
        turn_id = self._turn_id or _new_id("user")
        self._turn_started = start_s
        self._send_user(turn_id, text, final=True, start_s=start_s)
        self._turn_id = None
        return turn_id

    def typed_turn(self, message: TypedMessage, start_s: float) -> None:
        """The caller's typed message, taken as a turn: its caption, under its own id. A
        spoken turn under way keeps its id: it is a turn of its own."""
        self._send_user(message.id, message.text, final=True, start_s=start_s, kind="text")

    def _send_user(
        self,
        segment_id: str,
        text: str,
        *,
        final: bool,
        start_s: float | None = None,
        kind: SegmentKind = "speech",
    ) -> None:
        speaker = self._caller_identity()
        caption = replace(
            self.caption(
                segment_id,
                speaker,
                text,
                final=final,
                start_s=self._turn_started if start_s is None else start_s,
            ),
            kind=kind,
        )

        async def send() -> None:
            writer = await self.room.local_participant.stream_text(
                topic=CAPTION_TOPIC, attributes=caption.attributes(), sender_identity=speaker
            )
            await writer.write(caption.text)
            await writer.aclose()

        self.send_in_order(send)


class ReplyCaptions(io.TextOutput):
    """The agent's words, one stream per reply, fed by the TranscriptSynchronizer as the
    audio plays (or, with voice replies off, as the LLM writes them); the stream's trailer
    marks it final. A caller who rejoins (a reload) gets streams of their own for what they
    missed: the replies that ended while they were away, and the one under way, with its
    words so far (a text stream's start is not sent again to someone who joins after it)."""

    def __init__(self, captions: TurnCaptions) -> None:
        super().__init__(label="kaiwa-reply-captions", next_in_chain=None)
        self._captions = captions
        # The reply being captioned: its streams (opened in order: the room's, then one per
        # caller who rejoined during it), caption, text so far, and whether the TurnLog has
        # already taken its id.
        self._writers: list[asyncio.Future[rtc.TextStreamWriter]] = []
        self._caption: Caption | None = None
        self._text = ""
        self._segment_id = ""
        self._claimed = False
        # Replies whose captions ended but whose turn the TurnLog has not stored yet.
        self._unclaimed: list[str] = []
        # The last replies that ended, with when (monotonic): for a caller who was away.
        self._ended: deque[tuple[Caption, str, float]] = deque(maxlen=ENDED_KEPT)

    def _open(
        self, to: list[str] | None = None, text: str = "", caption: Caption | None = None
    ) -> asyncio.Future[rtc.TextStreamWriter]:
        """Open a stream for the reply (to everyone, or to `to`), starting with `text`."""
        caption = caption or self._caption
        assert caption is not None
        attributes = caption.attributes()
        room = self._captions.room
        writer: asyncio.Future[rtc.TextStreamWriter] = asyncio.get_running_loop().create_future()

        async def open_stream() -> None:
            try:
                stream = await room.local_participant.stream_text(
                    topic=CAPTION_TOPIC, attributes=attributes, destination_identities=to
                )
            except BaseException as exc:  # the writes and the close waiting on it give up
                writer.set_exception(exc)
                raise
            writer.set_result(stream)
            if text:
                await stream.write(text)

        self._captions.send_in_order(open_stream)
        return writer

    async def capture_text(self, text: str) -> None:
        if not text:
            return
        if self._caption is None:
            self._segment_id, self._claimed, self._text = _new_id("agent"), False, ""
            self._caption = self._captions.caption(
                self._segment_id,
                self._captions.room.local_participant.identity,
                "",
                final=False,
                start_s=self._captions.call_time(),
            )
            self._writers.append(self._open())
        writers = list(self._writers)
        chunk = str(text)
        self._text += chunk

        async def write() -> None:
            for writer in writers:
                await (await writer).write(chunk)

        self._captions.send_in_order(write)

    def rejoined(self, identity: str, away_since: float) -> None:
        """`identity` is back in the room, away since `away_since` (monotonic, when the
        agent heard it): the replies that ended meanwhile or just before, and the one under
        way so far (the rest follows)."""
        for caption, text, ended in self._ended:
            if ended >= away_since - LEAVE_NOTICE_S:
                self._close([self._open(to=[identity], text=text, caption=caption)])
        if self._caption is not None:
            self._writers.append(self._open(to=[identity], text=self._text))

    def flush(self) -> None:
        if self._caption is None:
            return
        self._ended.append((self._caption, self._text, time.monotonic()))
        writers, self._writers, self._caption = self._writers, [], None
        if not self._claimed:
            self._unclaimed.append(self._segment_id)
        self._close(writers)

    def _close(self, writers: list[asyncio.Future[rtc.TextStreamWriter]]) -> None:
        """Close the streams, in order after what was written to them, marked final."""

        async def close() -> None:
            for writer in writers:
                await (await writer).aclose(attributes={FINAL: "true"})

        self._captions.send_in_order(close)

    def claim(self) -> str | None:
        """The id of the reply the agent just finished (or is finishing): the TurnLog stores
        the reply under it. Older unclaimed ones are replies no turn was stored for."""
        if self._unclaimed:
            latest = self._unclaimed[-1]
            self._unclaimed.clear()
            return latest
        if self._caption is not None and not self._claimed:
            # Stored before its captions were flushed: the flush must not offer it again.
            self._claimed = True
            return self._segment_id
        return None


def _microphone_sid(room: rtc.Room, identity: str) -> str:
    """The sid of the participant's audio track (`lk.transcribed_track_id`), once known."""
    participant: rtc.Participant | None = (
        room.local_participant
        if identity == room.local_participant.identity
        else room.remote_participants.get(identity)
    )
    if participant is None:
        return ""
    publications = participant.track_publications.values()
    return next((p.sid for p in publications if p.kind == rtc.TrackKind.KIND_AUDIO), "")
