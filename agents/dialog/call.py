"""One dialog call: the agent plays a scenario with the caller, and the call is kept.

The conversation itself runs in LiveKit's `AgentSession` (turn detection, interruptions,
and the `lk.agent.state` attribute). Captions on `lk.transcription`, synchronised to the
audio, come from turn_captions.py under the ids the turns are stored by. DialogCall adds
what a call on our platform needs around it: the scenario's opening line once the outputs
are in place, every turn stored once in the history (record.py), usage and a summary
reported as the call goes, a caller who left waited for, and a polite end when the caller
is idle or the call runs too long. What to do and when is CallPolicy's (policy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    UserStateChangedEvent,
    llm,
    room_io,
)
from livekit.agents.voice.transcription import TranscriptSynchronizer

from core.payloads import CallState
from core.protocol import CALLER_ENDED_ATTRIBUTE, CHAT_TOPIC, VOICE_REPLIES_ATTRIBUTE
from core.scenarios import Scenario
from core.tasks import TaskOwner

from .. import metrics
from ..chat import ChatInbox
from ..history_client import SegmentStore
from ..phone import first_caller, until_answered
from .agent import ScenarioAgent
from .lines import line
from .log import logger
from .policy import CallLimits, CallPolicy, EndReason
from .record import TurnLog, summarize, usage_counters
from .sessions import room_options
from .turn_captions import TurnCaptions

# The time a summary refreshed mid-call may take.
SUMMARY_MID_CALL_S = 30.0
# Shares of the 15 s LiveKit gives a job to end: the summary, then delivering the history.
END_SUMMARY_S = 6.0
END_FLUSH_S = 5.0
# The bridge answers an incoming call once the agent's track is subscribed, and marks it
# active at the phone's first audio or 1 s later; a phone called out to rings until someone
# picks up. Past this, the greeting goes out regardless.
ANSWER_WAIT_S = 60.0
# Cancelled tasks stop at once; a stuck one must not eat into the shares above.
TASKS_STOP_S = 1.0
# LiveKit's own handling of typed input, once the inbox has read and taken a message: it interrupts
# the agent and answers, in the session's turn (the reply's voice, or its text alone).
ANSWER_TYPED = room_io.TextInputOptions().text_input_cb


class DialogCall:
    """Runs the dialog in a room until the call ends."""

    def __init__(
        self,
        room: rtc.Room,
        *,
        scenario: Scenario,
        session: AgentSession[Any],
        make_agent: Callable[[], Agent],
        summary_model: llm.LLM[Any],
        store: SegmentStore,
        engine: str,
        call_started_at: float,
        limits: CallLimits,
        end_call: Callable[[], Awaitable[None]],
        fallback: Callable[[], dict[str, Any]] | None = None,
        fallback_engine: str = "",
        resumed: CallState | None = None,
    ) -> None:
        self.room = room
        self.scenario = scenario
        self.session = session
        self._make_agent = make_agent
        self.summary_model = summary_model
        self.store = store
        self.engine = engine
        self.limits = limits
        self.policy = CallPolicy(limits, has_fallback=fallback is not None)
        self._end_call = end_call
        # The local engines that take over if Gemini fails mid-call (once).
        self._fallback = fallback
        self._fallback_engine = fallback_engine
        self._caller = ""
        self.captions = TurnCaptions(
            room,
            language=scenario.language,
            caller_identity=self._caller_identity,
            call_started_at=call_started_at,
        )
        self.log = TurnLog(
            store=store,
            captions=self.captions,
            call_started_at=call_started_at,
            language=scenario.language,
            engine=lambda: self.engine,
            caller_identity=self._caller_identity,
            agent_identity=room.local_participant.identity,
            voice_replies=lambda: self.session.output.audio_enabled,
        )
        self._tasks = TaskOwner(logger, room=room.name)
        self.inbox = ChatInbox()
        # Taken over from a lost agent: it says so instead of greeting, and the summary so
        # far is carried on.
        self.resumed = resumed
        self.summary: str | None = resumed.summary if resumed else None
        self._summary_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._rejoin_wait: asyncio.TimerHandle | None = None
        # When the caller started talking over the agent (monotonic), until its audio stops.
        self._barge_in_at: float | None = None
        # When the caller last left (monotonic): what they missed is sent them on return.
        self._caller_left_at = 0.0

    async def run(self, done: asyncio.Event) -> None:
        self._done = done
        session = self.session
        session.on("conversation_item_added", self._on_item)
        session.on("user_state_changed", self._on_user_state)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("error", self._on_error)
        session.on("close", lambda _e: done.set())
        session.on("user_input_transcribed", self.captions.on_user_transcribed)
        self.store.start()
        await session.start(
            agent=self._make_agent(),
            room=self.room,
            room_options=room_options(),
            # The caller talks to the agent, not to its session: see CallSession.
            session_host=False,
        )
        self.room.register_text_stream_handler(CHAT_TOPIC, self._on_chat_stream)
        self.room.on("participant_disconnected", self._on_caller_left)
        self.room.on("participant_connected", self._on_caller_back)
        # As RoomIO does for its own captions: the reply's text follows its audio.
        if session.output.audio is not None:
            synchronizer = TranscriptSynchronizer(
                next_in_chain_audio=session.output.audio, next_in_chain_text=self.captions.reply
            )
            session.output.audio = synchronizer.audio_output
            session.output.transcription = synchronizer.text_output
        # Only now: what the agent says must go through the outputs above. A phone hears the
        # room only once the bridge has answered it.
        caller = await first_caller(self.room, timeout_s=ANSWER_WAIT_S)
        phone = caller is not None and caller.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        await until_answered(self.room, timeout_s=ANSWER_WAIT_S)
        if isinstance(agent := session.current_agent, ScenarioAgent):
            if self.resumed is not None:
                agent.welcome_back()
            else:
                agent.greet(phone=phone)
        if linked := session.room_io.linked_participant:
            self._caller = linked.identity
            self._voice_replies(linked)
        self.room.on("participant_attributes_changed", self._on_attributes)
        loop = asyncio.get_running_loop()
        self.policy.start(loop.time())
        limit = loop.call_later(
            self.policy.until_limit(loop.time()),
            lambda: self._tasks.spawn(self.end("limit"), "call-limit"),
        )
        try:
            await done.wait()
        finally:
            limit.cancel()
            if self._rejoin_wait is not None:
                self._rejoin_wait.cancel()
            await self.aclose()

    def _on_caller_left(self, participant: rtc.RemoteParticipant) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.policy.caller_left(
            loop.time(),
            is_caller=participant.identity == self._caller_identity(),
            phone=participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
            ended=participant.attributes.get(CALLER_ENDED_ATTRIBUTE) == "true",
        )
        if wait_s is None:
            return
        self._caller_left_at = time.monotonic()
        logger.info(
            "the caller left; the call ends unless they return",
            extra={"room": self.room.name, "within_s": wait_s},
        )
        self._rejoin_wait = loop.call_later(wait_s, self._done.set)
        # What the agent was saying goes unheard: stop it there, so the stored turn is what
        # the caller heard, marked interrupted, as when they talk over it. Back from a
        # reload, they lead again. A reply the caller reads instead goes on: back, they
        # read it whole (ReplyCaptions.rejoined).
        if self.session.output.audio_enabled:
            with contextlib.suppress(RuntimeError):  # nothing said, or a goodbye that plays
                self.session.interrupt()

    def _on_caller_back(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self._caller:
            # (Not its voice replies: a new connection has the token's attributes only, and
            # the page says its choice again, which the attribute's change brings.)
            self.captions.reply.rejoined(participant.identity, self._caller_left_at)
        if self.policy.caller_back(is_caller=participant.identity == self._caller):
            logger.info("the caller is back", extra={"room": self.room.name})
            if self._rejoin_wait is not None:
                self._rejoin_wait.cancel()
                self._rejoin_wait = None

    def _on_chat_stream(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self._tasks.spawn(self._take_typed(reader, identity), "typed")

    async def _take_typed(self, reader: rtc.TextStreamReader, identity: str) -> None:
        """A typed message from the caller: a turn like a spoken one (it interrupts the
        agent, and is answered), once the inbox has read it and it passes its checks."""
        participant = self.room.remote_participants.get(identity)
        linked = self.session.room_io.linked_participant
        if participant is None or (linked is not None and identity != linked.identity):
            # As RoomIO's own text input: only the caller's. Not read, so not kept either.
            reader.close()
            return
        taken = await self.inbox.read(self.room, reader, identity)
        if taken is None:
            return
        self.log.typed(taken)
        event = room_io.TextInputEvent(text=taken.text, info=reader.info, participant=participant)
        answered = ANSWER_TYPED(self.session, event)
        if answered is not None:
            await answered

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if VOICE_REPLIES_ATTRIBUTE in changed and participant.identity == self._caller:
            self._voice_replies(participant)

    def _voice_replies(self, caller: rtc.Participant) -> None:
        """Speak the replies, or (the caller's choice) stream their text alone: with the
        audio output off, LiveKit skips the synthesis and the text is not held back to
        follow audio."""
        on = caller.attributes.get(VOICE_REPLIES_ATTRIBUTE) != "off"
        if self.session.output.audio_enabled != on:
            logger.info("voice replies", extra={"room": self.room.name, "on": on})
            self.session.output.set_audio_enabled(on)

    def _caller_identity(self) -> str:
        if not self._caller and (linked := self.session.room_io.linked_participant):
            self._caller = linked.identity
        return self._caller or "caller"

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        self.log.on_item(event)
        self._summary_when_quiet()

    def _summary_when_quiet(self) -> None:
        step = self.policy.summary_step(
            turns=len(self.log.transcript),
            agent_state=self.session.agent_state,
            user_state=self.session.user_state,
        )
        if step == "yield" and self._summary_task is not None:
            self._summary_task.cancel()  # tried again at the next quiet moment
        elif step == "refresh" and (self._summary_task is None or self._summary_task.done()):
            self._summary_task = self._tasks.spawn(self._refresh_summary(), "summary")

    async def _refresh_summary(self) -> None:
        await self.report(summary=True, within_s=SUMMARY_MID_CALL_S)

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        logger.info("agent state", extra={"state": event.new_state})
        if event.old_state == "speaking" and self._barge_in_at is not None:
            metrics.observe_stage(
                "dialog", "barge_in", self.scenario.language, time.monotonic() - self._barge_in_at
            )
        if event.old_state == "speaking" or event.new_state == "speaking":
            self._barge_in_at = None
        self._summary_when_quiet()

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        logger.info("user state", extra={"state": event.new_state})
        if event.new_state == "speaking" and self.session.agent_state == "speaking":
            self._barge_in_at = time.monotonic()
        if self.policy.on_user_state(event.new_state) == "idle":
            self._tasks.spawn(self.end("idle"), "idle-end")
        self._summary_when_quiet()

    def _on_error(self, event: ErrorEvent) -> None:
        """Keep the call going: Gemini gives way to the local pipeline; a failed local LLM
        reply gets an apology and the caller is heard again."""
        error = event.error
        step = self.policy.engine_error(
            recoverable=getattr(error, "recoverable", True),
            realtime=isinstance(error, llm.RealtimeModelError),
            llm=isinstance(error, llm.LLMError),
        )
        if isinstance(error, llm.LLMError):
            metrics.LLM_ERRORS.labels("dialog", metrics.llm_error_reason(error)).inc()
        if step == "retried":
            logger.warning("dialog engine error, retried", extra={"error": str(error)})
        # Marked recoverable here (the session reads it after this handler) so the session
        # is not closed: the call continues.
        elif step == "fallback" and isinstance(error, llm.RealtimeModelError):
            fallback, self._fallback = self._fallback, None
            assert fallback is not None  # the policy offers it once, and only if there is one
            error.recoverable = True
            logger.error(
                "Gemini failed mid-call; the local pipeline takes over",
                extra={"error": str(error.error), "room": self.room.name},
            )
            self.engine = self._fallback_engine
            metrics.GEMINI_FALLBACKS.inc()
            agent = ScenarioAgent(
                self.scenario,
                chat_ctx=self.session.current_agent.chat_ctx,
                **fallback(),
            )
            self.session.update_agent(agent)
            self._tasks.spawn(self._say(line(self.scenario.language, "sorry")), "apology")
        elif step == "apologise" and isinstance(error, llm.LLMError):
            error.recoverable = True
            logger.error("the LLM failed a reply; apologising", extra={"error": str(error)})
            self._tasks.spawn(self._say(line(self.scenario.language, "sorry")), "apology")
        else:
            logger.error("dialog engine failed", extra={"error": str(error)})

    async def _say(self, text: str) -> None:
        with contextlib.suppress(Exception):
            await self.session.say(text).wait_for_playout()

    async def end(self, why: EndReason) -> None:
        """Say goodbye, let it play, then end the call for everyone in it."""
        if not self.policy.end(why):
            return
        logger.info("ending the call", extra={"room": self.room.name, "why": why})
        with contextlib.suppress(Exception):
            handle = self.session.say(line(self.scenario.language, why), allow_interruptions=False)
            await handle.wait_for_playout()
        await self._end_call()

    async def report(self, *, summary: bool, within_s: float = END_SUMMARY_S) -> None:
        """Report usage, and first bring the summary up to date (within `within_s`)."""
        if summary:
            covered = len(self.log.transcript)
            try:
                self.summary = await asyncio.wait_for(
                    summarize(
                        self.summary_model,
                        self.summary,
                        self.log.transcript[self.policy.summary_covers : covered],
                    ),
                    within_s,
                )
                self.policy.summarised(covered)
            except Exception as exc:  # the usage still goes out; the summary waits
                logger.warning("summary not refreshed", extra={"error": repr(exc)})
        await self.store.report(usage=usage_counters(self.session), summary=self.summary)

    async def aclose(self) -> None:
        self.room.unregister_text_stream_handler(CHAT_TOPIC)
        with contextlib.suppress(Exception):
            await self.session.aclose()
        await self._tasks.aclose(TASKS_STOP_S)
        # The turns first: they are what was said. Then the summary and usage, then leave.
        await self.store.flush(END_FLUSH_S)
        await self.report(summary=True)
        await self.store.aclose(timeout_s=1.0)
        await self.captions.aclose(TASKS_STOP_S)
