"""The interpreter of one room: who speaks or types, who listens in which language, and the
voices."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import stt, tts

from core.errors import UnsupportedLanguage
from core.languages import language_name
from core.phone import mask_identity
from core.protocol import (
    AGENT_STATE_ATTRIBUTE,
    CAPTION_TOPIC,
    CHAT_TOPIC,
    DROPPED_SENTENCES_ATTRIBUTE,
    LANGUAGE_ATTRIBUTE,
    NOTICE_TOPIC,
    TYPING_ATTRIBUTE,
)
from core.tasks import TaskOwner

from .. import metrics
from ..captions import Caption
from ..chat import ChatInbox
from ..history_client import SegmentStore
from ..translate import Translator, unavailable_notice
from .log import logger
from .phones import PhoneMix, UpdateSubscriptions
from .speaker import FinalText, SpeakerPipeline
from .typed import typed_voice
from .voice import TranslatedVoice

PEOPLE = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
)
# Final sentences of one speaker waiting for translation; beyond it they are stored and
# captioned untranslated, so a stuck translator never grows memory.
MAX_UNTRANSLATED = 64
# Shares of the 15 s LiveKit allows a job to end in: finish the last sentences, then store.
END_DRAIN_S = 8.0
END_FLUSH_S = 5.0
# What is left after the drain is cancelled; a task that takes longer to stop is named in the
# log and left behind rather than holding up the store's flush.
END_CANCEL_S = 1.0
# A sentence is stored once its voices have started (their first frames are in its ledger);
# a voice that has not started by then is not waited for.
VOICED_WAIT_S = 15.0
# Telling the room the agent's state: how long one try may take, and the pause before the next.
STATE_PUBLISH_TIMEOUT_S = 5.0
STATE_RETRY_S = 1.0


def _named(language: str) -> str:
    try:
        return language_name(language)
    except UnsupportedLanguage:
        return language


def language_of(participant: rtc.Participant) -> str:
    return (participant.attributes.get(LANGUAGE_ATTRIBUTE) or "en").strip() or "en"


class Interpreter:
    def __init__(
        self,
        room: rtc.Room,
        *,
        translator: Translator,
        store: SegmentStore,
        make_stt: Callable[[str], stt.STT[Any]],
        make_tts: Callable[[str], tts.TTS[Any]],
        call_started_at: float,
        update_subscriptions: UpdateSubscriptions,
        max_lag_s: float = 4.0,
    ) -> None:
        self.room = room
        self.translator = translator
        self.store = store
        self._make_stt = make_stt
        self._make_tts = make_tts
        self.call_started_at = call_started_at
        self.max_lag_s = max_lag_s
        # By track sid; one per person, whatever number of audio tracks they publish
        # (`_on_track_subscribed`).
        self.speakers: dict[str, SpeakerPipeline] = {}
        # People who type with no microphone track to speak their translations on: their
        # voice (`chat-<identity>`, typed.py), by identity.
        self.typists: dict[str, str] = {}
        self.inbox = ChatInbox()
        # By (voice, language): a voice is a speaker's track sid, or a typist's.
        self.voices: dict[tuple[str, str], TranslatedVoice] = {}
        # Each voice's sentences waiting for translation, and the task translating them.
        self._queues: dict[str, asyncio.Queue[FinalText]] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tts: dict[str, tts.TTS[Any] | None] = {}
        self._noticed: set[tuple[str, str]] = set()
        self._warmed: set[tuple[str, str]] = set()
        self.tasks = TaskOwner(logger, room=room.name)
        # Speakers whose last sentences are still being finished (see `aclose`).
        self._ending: set[asyncio.Task[None]] = set()
        self._voices_changed = asyncio.Event()
        self._translating = 0
        self._speaking = 0
        # What the agent is doing (`_note_state`), set when it changes for `_publish_state`.
        self._state = ""
        self._state_changed = asyncio.Event()
        self.dropped = 0
        self.phones = PhoneMix(
            room,
            update=update_subscriptions,
            language_of=language_of,
            voice_language=self._voice_language,
        )

    # --- the room ---------------------------------------------------------------------------

    async def run(self, done: asyncio.Event) -> None:
        room = self.room
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_unsubscribed)
        room.on("participant_connected", lambda _p: self._voices_changed.set())
        room.on("participant_disconnected", self._on_participant_left)
        room.register_text_stream_handler(CHAT_TOPIC, self._on_typed)
        room.on("participant_attributes_changed", self._on_attributes_changed)
        # A phone hears every track it is subscribed to: keep it to its own language's.
        room.on("track_published", lambda _pub, _p: self.phones.changed())
        room.on("local_track_published", lambda _pub, _t: self.phones.changed())
        room.on("participant_connected", lambda _p: self.phones.changed())
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.subscribed:
                    self._on_track_subscribed(publication.track, publication, participant)
        self.store.start()
        self._note_state()
        self.tasks.spawn(self._publish_state(), "publish-state")
        reconcile = self.tasks.spawn(self._reconcile_voices(), "reconcile-voices")
        try:
            await done.wait()
        finally:
            reconcile.cancel()
            await self.aclose()

    def _people(self) -> list[rtc.RemoteParticipant]:
        return [p for p in self.room.remote_participants.values() if p.kind in PEOPLE]

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or participant.kind not in PEOPLE:
            return
        if not isinstance(track, rtc.RemoteAudioTrack) or publication.sid in self.speakers:
            return
        if self._speaker_of(participant.identity) is not None:
            # One microphone per person: each track heard is a speech-to-text stream, a
            # translation queue and a voice per listening language, and a second one only
            # says again what the first does (or what its publisher wants said twice). It is
            # not heard, nor even received, until the one heard ends (`_hear_another`).
            publication.set_subscribed(False)
            logger.info(
                "microphone track not heard",
                extra={
                    "room": self.room.name,
                    "identity": mask_identity(participant.identity),
                    "track": publication.sid,
                },
            )
            return
        self._start_speaker(participant, track, publication.sid)

    def _on_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self._end_speaker(publication.sid):
            self._hear_another(participant, ended=publication.sid)

    def _hear_another(self, participant: rtc.RemoteParticipant, ended: str) -> None:
        """The microphone heard has ended (unpublished, as a page does when its person
        switches microphones; or its person is leaving): another audio track the person
        still publishes is heard instead. Those let go are subscribed to again, and the first
        to arrive is heard (`_on_track_subscribed` lets the others go again)."""
        if participant.identity not in self.room.remote_participants:
            return
        for publication in list(participant.track_publications.values()):
            if publication.sid == ended or publication.kind != rtc.TrackKind.KIND_AUDIO:
                continue
            if isinstance(track := publication.track, rtc.RemoteAudioTrack):
                self._on_track_subscribed(track, publication, participant)
            else:
                publication.set_subscribed(True)

    def _speaker_of(self, identity: str) -> str | None:
        """The track sid of the person's microphone heard, if any."""
        for track_sid, speaker in self.speakers.items():
            if speaker.identity == identity:
                return track_sid
        return None

    def _start_speaker(
        self, participant: rtc.RemoteParticipant, track: rtc.RemoteAudioTrack, track_sid: str
    ) -> None:
        language = language_of(participant)
        speaker = SpeakerPipeline(
            identity=participant.identity,
            track=track,
            track_sid=track_sid,
            language=language,
            engine=self._make_stt(language),
            call_offset_s=max(0.0, time.time() - self.call_started_at),
            send_caption=self._send_caption,
            on_final=self._on_final,
        )
        self.speakers[track_sid] = speaker
        metrics.QUEUE_DEPTHS.track("speaker_audio", speaker, SpeakerPipeline.audio_depth)
        self._open_queue(track_sid)
        speaker.start()
        self._voices_changed.set()
        logger.info(
            "interpreting speaker",
            # A phone caller's identity is their number: logs get it masked.
            extra={
                "identity": mask_identity(participant.identity),
                "track": track_sid,
                "language": language,
            },
        )

    def _end_speaker(self, track_sid: str) -> bool:
        """Stop hearing a track; whether it was heard."""
        speaker = self.speakers.pop(track_sid, None)
        if speaker is None:
            return False
        self._voices_changed.set()
        speaker.end_input()
        # The track's end flushes the open sentence; then its translations drain.
        self._close_queue(track_sid, after=speaker.wait_closed())
        return True

    def _open_queue(self, voice: str) -> None:
        """The sentences of one voice, translated and spoken in order by one task."""
        queue: asyncio.Queue[FinalText] = asyncio.Queue(MAX_UNTRANSLATED)
        metrics.QUEUE_DEPTHS.track("untranslated", queue, asyncio.Queue.qsize)
        self._queues[voice] = queue
        self._loops[voice] = self.tasks.spawn(self._translate_loop(queue), f"translate-{voice}")

    def _close_queue(self, voice: str, after: Awaitable[None] | None = None) -> None:
        """Let a voice's sentences drain (once `after` is done), then stop its task. (Its
        voices close at once: nobody hears a person who has left.)"""

        # Taken now: a speaker restarted in a new language opens a new queue for the same
        # voice while this one drains.
        queue, loop = self._queues.get(voice), self._loops.get(voice)
        if queue is None or loop is None:
            return

        async def finish() -> None:
            try:
                if after is not None:
                    await after
                await queue.join()
            finally:
                if self._queues.get(voice) is queue:
                    del self._queues[voice], self._loops[voice]
                loop.cancel()

        ending = self.tasks.spawn(finish(), f"end-voice-{voice}")
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if (voice := self.typists.pop(participant.identity, None)) is not None:
            self._close_queue(voice)
        self._voices_changed.set()

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if not isinstance(participant, rtc.RemoteParticipant) or participant.kind not in PEOPLE:
            return
        if changed.get(TYPING_ATTRIBUTE) == "true":
            # Someone starts typing: their voices are made now, so that listeners have
            # subscribed to them before the message's translation is spoken.
            self._voice_of(participant)
        if LANGUAGE_ATTRIBUTE not in changed:
            return
        # A speaker's new language needs a new STT stream: restart their pipelines.
        for track_sid, speaker in list(self.speakers.items()):
            if speaker.identity == participant.identity and speaker.language != language_of(
                participant
            ):
                track = speaker.track
                self._end_speaker(track_sid)
                self._start_speaker(participant, track, track_sid)
        self._voices_changed.set()
        self.phones.changed()

    # --- voices -----------------------------------------------------------------------------

    def _listening_languages(self, identity: str, own_language: str) -> set[str]:
        """The languages other people in the room listen in, besides the person's own."""
        return {
            language
            for person in self._people()
            if person.identity != identity and (language := language_of(person)) != own_language
        }

    def _wanted_voices(self) -> set[tuple[str, str]]:
        people = {person.identity: person for person in self._people()}
        sources = [(s.track_sid, s.identity, s.language) for s in self.speakers.values()] + [
            (voice, identity, language_of(people[identity]))
            for identity, voice in self.typists.items()
            if identity in people
        ]
        return {
            (voice, language)
            for voice, identity, own in sources
            for language in self._listening_languages(identity, own)
        }

    async def _reconcile_voices(self) -> None:
        while True:
            await self._voices_changed.wait()
            self._voices_changed.clear()
            wanted = self._wanted_voices()
            self._warm_translations()
            await self._close_voices([key for key in self.voices if key not in wanted])
            for track_sid, language in sorted(wanted - set(self.voices)):
                engine = self._voice_engine(language)
                if engine is None:
                    continue
                voice = TranslatedVoice(
                    self.room,
                    name=f"{track_sid}-{language}",
                    language=language,
                    engine=engine,
                    max_lag_s=self.max_lag_s,
                    on_speaking=self._on_speaking,
                    on_drop=self._on_drop,
                )
                self.voices[(track_sid, language)] = voice
                await voice.start()

    def _voice_language(self, track_name: str) -> str | None:
        for (_voice, language), voice in self.voices.items():
            if voice.name == track_name:
                return language
        return None

    def _warm_translations(self) -> None:
        """Prepare each translation direction the room needs as soon as it appears: when
        people join, before anyone speaks."""
        languages = {language_of(person) for person in self._people()}
        for source in languages:
            for target in languages - {source}:
                direction = (source, target)
                if direction in self._warmed:
                    continue
                self._warmed.add(direction)
                self.tasks.spawn(self._warm(*direction), "warm-translation")

    async def _warm(self, source: str, target: str) -> None:
        try:
            language_name(source)
            language_name(target)
            await self.translator.warm(source, target)
        except Exception:  # only an optimisation: the first sentence pays instead
            logger.warning("translation warm-up failed", extra={"source": source, "target": target})

    async def _close_voices(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            voice = self.voices.pop(key)
            await voice.aclose()

    def _voice_engine(self, language: str) -> tts.TTS[Any] | None:
        if language not in self._tts:
            try:
                self._tts[language] = self._make_tts(language)
            except UnsupportedLanguage:
                self._tts[language] = None
                self._notice(language, f"No voice speaks {language}: captions only.")
        return self._tts[language]

    def _notice(self, language: str, text: str) -> None:
        if (language, text) in self._noticed:
            return
        self._noticed.add((language, text))
        logger.warning("interpretation notice", extra={"language": language, "notice": text})
        self.tasks.spawn(
            self.room.local_participant.send_text(
                text, topic=NOTICE_TOPIC, attributes={"language": language}
            ),
            "notice",
        )

    # --- sentences --------------------------------------------------------------------------

    async def _send_caption(self, caption: Caption) -> None:
        with contextlib.suppress(Exception):  # a caption lost to a closing room is not fatal
            await self.room.local_participant.send_text(
                caption.text, topic=CAPTION_TOPIC, attributes=caption.attributes()
            )

    def _on_final(self, final: FinalText) -> None:
        logger.debug(
            "final sentence",
            extra={"segment_id": final.segment_id, "text": final.text, "language": final.language},
        )
        self.tasks.spawn(self._send_caption(final.caption()), "caption")
        if final.language_setting is not None:
            # Transcribed as heard, it is still not what the listeners were promised: a
            # sentence in an unexpected language, or a misheard one. Not translated, so no
            # voice says a confident translation of it; the caption shows it as heard.
            metrics.OTHER_LANGUAGE_SPEECH.labels(final.language_setting, final.language).inc()
            self._notice(
                final.language_setting,
                f"Heard {_named(final.language)} from a speaker set to "
                f"{_named(final.language_setting)}: captioned as heard, not translated.",
            )
            self.store.add(final.segment({}))
            return
        queue = self._queues.get(final.voice)
        if queue is not None and not queue.full():
            queue.put_nowait(final)
            return
        logger.warning("translation behind: sentence stored untranslated")
        metrics.QUEUE_DROPPED.labels("untranslated").inc()
        self.store.add(final.segment({}))

    async def _translate_loop(self, queue: asyncio.Queue[FinalText]) -> None:
        """One voice's sentences, translated and spoken in the order they were said."""
        while True:
            final = await queue.get()
            try:
                await self._translate(final)
            except Exception:
                # Not the model's (each language's failure is caught in _translate_into): the
                # sentence is stored as it stands.
                logger.exception("sentence failed", extra={"segment_id": final.segment_id})
                self.store.add(final.segment({}))
            finally:
                queue.task_done()

    async def _translate(self, final: FinalText) -> None:
        targets = sorted(self._listening_languages(final.speaker, final.language))
        translations: dict[str, str] = {}
        # Each voice's sentence, with when its translation was ready (monotonic).
        voiced: dict[str, tuple[float, asyncio.Future[float | None]]] = {}
        self._translating += 1
        self._note_state()
        try:
            # Every language at once: the LLM server has a slot for each, and a listener's
            # caption and voice go out as soon as their own translation is ready.
            await asyncio.gather(
                *(
                    self._translate_into(final, language, translations, voiced)
                    for language in targets
                )
            )
        finally:
            self._translating -= 1
            self._note_state()
        if not voiced:
            self.store.add(final.segment(translations))
            return
        # Off this voice's translation loop: the next sentence must not wait for this one's
        # voices.
        self.tasks.spawn(self._store_when_voiced(final, translations, voiced), "voiced")

    async def _translate_into(
        self,
        final: FinalText,
        language: str,
        translations: dict[str, str],
        voiced: dict[str, tuple[float, asyncio.Future[float | None]]],
    ) -> None:
        """One listening language's translation of `final`: captioned, spoken, and noted in
        `translations` (and `voiced`, with its voice's first frame to come)."""
        try:
            language_name(language)
            language_name(final.language)
        except UnsupportedLanguage:
            self._notice(language, f"No translation into or from {language}.")
            return
        try:
            text = await self.translator.translate_one(final.text, final.language, language)
        except Exception as error:
            # This language goes without; the others and the sentence itself go on.
            logger.exception(
                "translation failed", extra={"segment_id": final.segment_id, "language": language}
            )
            metrics.LLM_ERRORS.labels("interpret", metrics.llm_error_reason(error)).inc()
            text = None
        if text is None:
            # No translation (the model failed, or no output passed the checks): the caption
            # says so, nothing is spoken, and the sentence is stored without this translation.
            await self._send_caption(
                final.translation_caption(language, unavailable_notice(language))
            )
            return
        if not text:
            return
        ready = time.monotonic()
        final.timings[f"translation.{language}"] = metrics.observe_stage(
            "interpret", "translation", language, ready - final.at
        )
        translations[language] = text
        logger.debug(
            "translated",
            extra={"segment_id": final.segment_id, "language": language, "text": text},
        )
        await self._send_caption(final.translation_caption(language, text))
        voice = self.voices.get((final.voice, language))
        if voice is not None:
            voiced[language] = (ready, voice.say(f"{final.segment_id}-{language}", text))

    async def _store_when_voiced(
        self,
        final: FinalText,
        translations: dict[str, str],
        voiced: dict[str, tuple[float, asyncio.Future[float | None]]],
    ) -> None:
        """Store the sentence with its voices' first frames in its ledger; stored whatever
        happens to the voices (or to this task, at the call's end)."""
        try:
            futures = [future for _ready, future in voiced.values()]
            await asyncio.wait(futures, timeout=VOICED_WAIT_S)
            for language, (ready, future) in voiced.items():
                first_frame = future.result() if future.done() else None
                if first_frame is not None:
                    final.timings[f"first_frame.{language}"] = metrics.observe_stage(
                        "interpret", "first_frame", language, first_frame - ready
                    )
        finally:
            self.store.add(final.segment(translations))

    # --- typed messages ---------------------------------------------------------------------

    def _on_typed(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self.tasks.spawn(self._take_typed(reader, identity), "typed")

    async def _take_typed(self, reader: rtc.TextStreamReader, identity: str) -> None:
        """A typed message: a final sentence of its sender, captioned, translated into every
        language listened in, spoken on the sender's voices and stored, as speech is."""
        participant = self.room.remote_participants.get(identity)
        if participant is None or participant.kind not in PEOPLE:
            reader.close()  # an agent's, or from someone gone: not read, so not kept either
            return
        taken = await self.inbox.read(self.room, reader, identity)
        if taken is None:
            return
        now_s = round(max(0.0, time.time() - self.call_started_at), 3)
        self._on_final(
            FinalText(
                segment_id=taken.id,
                speaker=identity,
                voice=self._voice_of(participant),
                text=taken.text,
                language=language_of(participant),
                start_s=now_s,
                end_s=now_s,
                at=time.monotonic(),
                kind="text",
            )
        )

    def _voice_of(self, participant: rtc.RemoteParticipant) -> str:
        """Where a person's typed messages are spoken: on the voices of their microphone's
        track, or, with none, on voices of their own, made here."""
        if (track_sid := self._speaker_of(participant.identity)) is not None:
            return track_sid
        if participant.identity not in self.typists:
            voice = typed_voice(participant.identity)
            self.typists[participant.identity] = voice
            self._open_queue(voice)
            self._voices_changed.set()
        return self.typists[participant.identity]

    # --- state ------------------------------------------------------------------------------

    def _on_speaking(self, speaking: bool) -> None:
        self._speaking = max(0, self._speaking + (1 if speaking else -1))
        self._note_state()

    def _on_drop(self) -> None:
        self.dropped += 1
        self.tasks.spawn(
            self.room.local_participant.set_attributes(
                {DROPPED_SENTENCES_ATTRIBUTE: str(self.dropped)}
            ),
            "dropped",
        )

    def _note_state(self) -> None:
        """LiveKit's agent-state convention: what the agent is doing, for clients to show.
        Published by `_publish_state`: a sentence never waits on the room's signalling for it
        (a round trip each time, and as long as a reconnection takes)."""
        if self._speaking:
            state = "speaking"
        elif self._translating:
            state = "translating"
        else:
            state = "listening"
        if state != self._state:
            self._state = state
            self._state_changed.set()

    async def _publish_state(self) -> None:
        """One writer, so the room hears the states in order; a state that lasted less than
        the last one's round trip is skipped, as clients would not have seen it anyway."""
        published = ""
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            state = self._state
            if state == published:
                continue
            try:
                await asyncio.wait_for(
                    self.room.local_participant.set_attributes({AGENT_STATE_ATTRIBUTE: state}),
                    STATE_PUBLISH_TIMEOUT_S,
                )
                published = state
            except Exception:  # a room reconnecting: try again shortly, with the latest state
                await asyncio.sleep(STATE_RETRY_S)
                self._state_changed.set()

    async def aclose(self) -> None:
        with contextlib.suppress(ValueError):  # never registered: the run did not start
            self.room.unregister_text_stream_handler(CHAT_TOPIC)
        for track_sid in list(self.speakers):
            self._end_speaker(track_sid)
        for voice in list(self.typists.values()):
            self._close_queue(voice)
        self.typists.clear()
        # LiveKit gives a job 15 s to end once its room closes: the last sentences get most of
        # it to be transcribed and translated, the store the rest to deliver them.
        if self._ending:
            await asyncio.wait(self._ending, timeout=END_DRAIN_S)
        await self.tasks.aclose(timeout_s=END_CANCEL_S)
        await self.phones.aclose()
        await self._close_voices(list(self.voices))
        await self.store.aclose(timeout_s=END_FLUSH_S)
