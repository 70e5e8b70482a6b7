"""What a phone caller hears in an interpreted room: the translated voices in its language.

LiveKit's SIP bridge subscribes to every audio track published in its room and mixes them
all into the phone. Left alone, a phone caller would hear the other person's own voice plus
every translated voice in every language. So the interpreter keeps each phone subscribed
to exactly the voices translating the others into its language, through the server's
UpdateSubscriptions, whenever tracks, people or languages change.

Not through this agent's track permissions: LiveKit checks those for every subscriber,
hidden ones too, so an allow-list would also shut out the recorder (whose identity the agent
cannot see) and recordings would lose the translated voices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from livekit import rtc

from core.tasks import TaskOwner

from ..phone import phone_callers
from .log import logger

# (phone identity, track sids, subscribe?) → the server applies it.
UpdateSubscriptions = Callable[[str, list[str], bool], Awaitable[None]]
# The bridge subscribes to a new track itself when it hears of it, which may reach the
# server after our change: the phones are set again this long after each change.
SETTLE_S = 1.0


class PhoneMix:
    def __init__(
        self,
        room: rtc.Room,
        *,
        update: UpdateSubscriptions,
        language_of: Callable[[rtc.Participant], str],
        voice_language: Callable[[str], str | None],
    ) -> None:
        self.room = room
        self._update = update
        self._language_of = language_of
        # The language a local track speaks, by track name, or None if it is no voice.
        self._voice_language = voice_language
        self._applied: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._tasks = TaskOwner(logger, room=room.name)
        self._again: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        """Tracks, people or languages changed: set every phone's subscriptions now, and
        again once the bridge has acted on the change itself."""
        if not phone_callers(self.room):
            return
        self._tasks.spawn(self.apply(force=False), "phone-mix")
        if self._again is not None:
            self._again.cancel()
        self._again = asyncio.get_running_loop().call_later(
            SETTLE_S, lambda: self._tasks.spawn(self.apply(force=True), "phone-mix-settle")
        )

    def heard_by(self, phone: rtc.RemoteParticipant) -> tuple[set[str], set[str]]:
        """The audio tracks in the room a phone should hear, and those it should not."""
        language = self._language_of(phone)
        hear: set[str] = set()
        mute: set[str] = set()
        for publication in self.room.local_participant.track_publications.values():
            if publication.kind != rtc.TrackKind.KIND_AUDIO:
                continue
            speaks = self._voice_language(publication.name)
            (hear if speaks == language else mute).add(publication.sid)
        for person in self.room.remote_participants.values():
            if person.identity == phone.identity:
                continue
            mute.update(
                track.sid
                for track in person.track_publications.values()
                if track.kind == rtc.TrackKind.KIND_AUDIO
            )
        return hear, mute

    async def apply(self, *, force: bool) -> None:
        for phone in phone_callers(self.room):
            hear, mute = self.heard_by(phone)
            wanted = (frozenset(hear), frozenset(mute))
            if not force and self._applied.get(phone.identity) == wanted:
                continue
            self._applied[phone.identity] = wanted
            try:
                if mute:
                    await self._update(phone.identity, sorted(mute), False)
                if hear:
                    await self._update(phone.identity, sorted(hear), True)
            except Exception as exc:  # the next change tries again
                self._applied.pop(phone.identity, None)
                logger.warning(
                    "could not set what a phone caller hears", extra={"error": repr(exc)}
                )

    async def aclose(self) -> None:
        if self._again is not None:
            self._again.cancel()
        with contextlib.suppress(Exception):
            await self._tasks.aclose(1.0)
