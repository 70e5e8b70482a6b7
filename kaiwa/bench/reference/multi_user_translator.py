"""The reference design `kaiwa bench interpret --compare` measures the interpreter against.

It follows LiveKit's multi-user translator examples as they are documented: one
`AgentSession` per (speaking participant, listening language), each bound to its speaker
through room I/O, with the framework's default turn handling (a VAD, and the reply waits for
the end of the speaker's turn). The agent's instructions ask for the translation only; the
session then runs STT → LLM → TTS on each turn and speaks the reply on its own track.

It runs with the same engines as the interpreter and names its tracks the same way
(`{source track}-{language}`), so the bench's callers subscribe to it unchanged. It is not
an alternative product path: only the reference worker (worker.py) runs it, for the
interpreted rooms the bench dispatches to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, llm, room_io, stt, tts, vad

from agents.interpret.session import PEOPLE, language_of
from core.languages import language_name
from core.tasks import TaskOwner

logger = logging.getLogger("kaiwa.bench.reference")


class TranslatorAgent(Agent):
    def __init__(self, source: str, target: str) -> None:
        super().__init__(
            instructions=(
                f"You are a translator. Translate everything the user says from "
                f"{language_name(source)} into {language_name(target)}. "
                "Respond only with the translation."
            )
        )


async def run(
    room: rtc.Room,
    done: asyncio.Event,
    *,
    make_stt: Callable[[str], stt.STT[Any]],
    make_llm: Callable[[], llm.LLM[Any]],
    make_tts: Callable[[str], tts.TTS[Any]],
    vad_model: vad.VAD,
) -> None:
    sessions: dict[tuple[str, str], AgentSession[Any]] = {}

    async def start(participant: rtc.RemoteParticipant, track_sid: str) -> None:
        source = language_of(participant)
        targets = {
            language_of(p)
            for p in room.remote_participants.values()
            if p.kind in PEOPLE and p.identity != participant.identity
        } - {source}
        for target in sorted(targets):
            if (participant.identity, target) in sessions:
                continue
            session: AgentSession[Any] = AgentSession(
                stt=make_stt(source), llm=make_llm(), tts=make_tts(target), vad=vad_model
            )
            sessions[(participant.identity, target)] = session
            await session.start(
                agent=TranslatorAgent(source, target),
                room=room,
                room_options=room_io.RoomOptions(
                    participant_identity=participant.identity,
                    audio_output=room_io.AudioOutputOptions(track_name=f"{track_sid}-{target}"),
                    close_on_disconnect=False,
                ),
            )
            logger.info(
                "translator session started",
                extra={"identity": participant.identity, "target": target},
            )

    tasks = TaskOwner(logger, room=room.name)

    def on_track_published(
        publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if publication.kind == rtc.TrackKind.KIND_AUDIO and participant.kind in PEOPLE:
            tasks.spawn(start(participant, publication.sid), "translator-start")

    room.on("track_published", on_track_published)
    for participant in room.remote_participants.values():
        for publication in participant.track_publications.values():
            on_track_published(publication, participant)
    try:
        await done.wait()
    finally:
        await tasks.aclose()
        for session in sessions.values():
            with contextlib.suppress(Exception):
                await session.aclose()
