"""One dialog call: the agent plays a scenario with the caller, and the call is kept.

The conversation itself runs in LiveKit's `AgentSession` (turn detection, interruptions,
and the `lk.agent.state` attribute). Captions on `lk.transcription`, synchronised to the
audio, come from captions.py under the ids the turns are stored by. This module adds what
a call on our platform needs around it: the scenario's part and opening line, every turn
stored once in the history, usage and a summary reported as the call goes, and a polite
end when the caller is idle or the call runs too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    StopResponse,
    UserStateChangedEvent,
    llm,
    room_io,
    tts,
)
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.types import FlushSentinel
from livekit.agents.voice import ModelSettings, SpeechHandle, UserInputTranscribedEvent
from livekit.agents.voice.transcription import TranscriptSynchronizer
from livekit.agents.voice.turn import TurnHandlingOptions

from core.protocol import CALLER_ENDED_ATTRIBUTE
from core.scenarios import Scenario

from .. import engines, roles, turns
from ..history import SegmentStore
from ..settings import AgentSettings
from ..tts.chunks import speakable_pieces
from .captions import TurnCaptions

logger = logging.getLogger("kaiwa.dialog")

# Refresh the stored summary every this many turns, so a long call has one before it ends;
# only while the caller listens, and dropped when they speak: the conversation comes first.
SUMMARY_EVERY_TURNS = 10
SUMMARY_MID_CALL_S = 30.0
# Shares of the 15 s LiveKit gives a job to end: the summary, then delivering the history.
END_SUMMARY_S = 6.0
END_FLUSH_S = 5.0
# Words that acknowledge ("yes, go on") rather than take the turn: no reply to them.
BACKCHANNELS = frozenset(
    "un uh-huh uhhuh mhm mm hmm yeah yes yep ok okay right sure".split()
    + "はい うん ええ そう なるほど".split()
)
# What the agent says, unprompted, when it ends a call or cannot answer.
SPOKEN_LINES = {
    "en": {
        "idle": "It seems you have stepped away. Let's talk again soon. Goodbye!",
        "limit": "We have reached the end of our time today. Thank you, and goodbye!",
        "sorry": "Sorry, I lost my train of thought. Could you say that again?",
    },
    "ja": {
        "idle": "お話がないようなので、今日はここまでにしましょう。またお話ししましょうね。",
        "limit": "今日の時間はここまでです。ありがとうございました。",
        "sorry": "すみません、もう一度言っていただけますか？",
    },
}


def line(language: str, kind: str) -> str:
    return SPOKEN_LINES.get(language.split("-")[0], SPOKEN_LINES["en"])[kind]


def is_backchannel(text: str) -> bool:
    words = [w.strip(".,!?。、！？…~ー") for w in text.lower().split()]
    words = [w for w in words if w]
    return 0 < len(words) <= 2 and all(w in BACKCHANNELS for w in words)


# How long an answer waits for a read-ahead of its prompt still running (ScenarioAgent).
READ_AHEAD_WAIT_S = 1.0

# A scenario's opening line is the same in every call: its audio is synthesized once per
# worker process and replayed, so the caller hears the greeting without waiting for TTS.
# Keyed by (language, text); jobs are threads of one process, and frames are only read.
OPENINGS_KEPT = 64
_openings: dict[tuple[str, str], list[rtc.AudioFrame]] = {}


async def _replay(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame


async def _keep_opening(model: tts.TTS[Any], key: tuple[str, str], after: SpeechHandle) -> None:
    """Synthesize the opening for the next calls, once this call's greeting has played."""
    await after.wait_for_playout()
    frames: list[rtc.AudioFrame] = []
    try:
        async with model.synthesize(key[1]) as stream:
            async for audio in stream:
                frames.append(audio.frame)
    except Exception as exc:  # the next call synthesizes it live, and tries again
        logger.warning("opening not kept", extra={"error": repr(exc)})
        return
    if len(_openings) < OPENINGS_KEPT:
        _openings[key] = frames


class ScenarioAgent(Agent):
    """The agent's part in the scenario; it greets first (DialogCall says when).

    Two things make it answer sooner than LiveKit's defaults (the plain reference session
    of `kaiwa bench dialog --compare` has neither):
    - with a voice that speaks whole texts, it starts speaking at the reply's first clause
      (agents/tts/chunks.py), unless `eager` is off;
    - given a `reader` (a client of the local LLM server that is not the session's, so it
      adds nothing to the call's usage), it has the server read the prompt ahead: the
      instructions while the greeting plays, and the caller's words while they speak. The
      server keeps what it read (its prompt cache), so an answer starts with only the
      caller's last words left to read.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        eager: bool = True,
        reader: llm.LLM[Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(instructions=scenario.system_prompt(), **overrides)
        self.scenario = scenario
        self.eager = eager
        self._reader = reader
        self._keeping: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        if self._reader is not None:
            self.session.on("user_input_transcribed", self._on_transcribed)

    async def on_exit(self) -> None:
        if self._reader is not None:
            self.session.off("user_input_transcribed", self._on_transcribed)

    async def tts_node(
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterator[rtc.AudioFrame]:
        model = self.session.tts
        if not self.eager or model is None or model.capabilities.streaming:
            async for frame in Agent.default.tts_node(self, text, model_settings):
                yield frame
            return
        conn_options = self.session.conn_options.tts_conn_options
        # One piece after another: the voice synthesizes far faster than the audio plays,
        # so each piece is ready before the one before it has been heard.
        async for piece in speakable_pieces(text):
            async with model.synthesize(piece, conn_options=conn_options) as stream:
                async for audio in stream:
                    yield audio.frame

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
        # A read-ahead still running holds the server's slot that has this conversation
        # cached: wait for it (a fraction of a second) rather than go to another slot and
        # read the whole prompt again.
        if self._reading is not None and not self._reading.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reading), READ_AHEAD_WAIT_S)
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk

    def greet(self) -> None:
        if isinstance(self.session.llm, llm.RealtimeModel):  # it speaks for itself
            self.session.generate_reply(
                instructions=f"Greet the caller by saying exactly: {self.scenario.opening}"
            )
            return
        self.read_ahead(self.scenario.opening, role="assistant")
        key = (self.scenario.language, self.scenario.opening)
        if (frames := _openings.get(key)) is not None:
            self.session.say(self.scenario.opening, audio=_replay(frames))
            return
        handle = self.session.say(self.scenario.opening)
        if self.session.tts is not None:
            self._keeping = asyncio.create_task(
                _keep_opening(self.session.tts, key, handle), name="keep-opening"
            )

    def _on_transcribed(self, event: UserInputTranscribedEvent) -> None:
        # Only while the agent listens: over a reply, the server is busy writing it.
        if not event.is_final and self.session.agent_state == "listening":
            self.read_ahead(event.transcript, role="user")

    def read_ahead(
        self, text: str, *, role: Literal["user", "assistant"]
    ) -> asyncio.Task[None] | None:
        """Have the server read the conversation so far plus `text`; one read at a time, so
        None while one runs (or with no reader)."""
        if self._reader is None or not text.strip():
            return None
        if self._reading is not None and not self._reading.done():
            return None
        chat = self.chat_ctx.copy()
        chat.add_message(role=role, content=text)
        self._reading = asyncio.create_task(self._read(self._reader, chat), name="llm-read")
        return self._reading

    async def _read(self, reader: llm.LLM[Any], chat: llm.ChatContext) -> None:
        try:
            # One token: reading the prompt is all this is for.
            async with reader.chat(chat_ctx=chat, extra_kwargs={"max_tokens": 1}) as stream:
                async for _chunk in stream:
                    pass
        except Exception as exc:  # the answer reads the prompt itself
            logger.info("the LLM did not read ahead", extra={"error": repr(exc)})

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        # "Un", "hai", "yeah": the caller is listening, not asking for a new reply.
        if is_backchannel(new_message.text_content or ""):
            raise StopResponse()


@dataclass
class CallLimits:
    idle_s: float = 1800.0
    max_call_s: float = 3600.0
    # How long the call waits for a caller whose page left (a reload, a lost network) to
    # come back; a phone call that hangs up is over at once.
    rejoin_s: float = 20.0


def local_engines(settings: AgentSettings, scenario: Scenario) -> dict[str, Any]:
    """The offline pipeline: Whisper → the local LLM → the local voice, streamed; for a
    session, or for an agent taking over from Gemini mid-call."""
    return {
        "stt": roles.make_stt(settings, scenario.language),
        "llm": roles.make_llm(settings),
        "tts": roles.make_tts(settings, scenario.language),
        "vad": engines.vad(),
        "turn_handling": TurnHandlingOptions(
            # LiveKit's end-of-turn model where it knows the language (en, ja), VAD else.
            turn_detection=turns.turn_detection(scenario.language),
            endpointing={"max_delay": scenario.max_turn_pause_s},
            # Talking over the agent pauses it at once (VAD) and clears it when words
            # follow; a cough that brings no words lets it resume.
            interruption={"min_duration": 0.05, "false_interruption_timeout": 1.5},
            # Start the reply on the final transcript, before end of turn is confirmed, and
            # synthesize its speech too, so it is ready to play when the turn ends.
            preemptive_generation={"enabled": True, "preemptive_tts": True},
        ),
    }


def local_session(
    settings: AgentSettings, scenario: Scenario, *, idle_s: float
) -> AgentSession[Any]:
    return AgentSession(**local_engines(settings, scenario), user_away_timeout=idle_s)


# The reference `kaiwa bench dialog --compare` measures against: a plain AgentSession with
# the same engines and LiveKit's default turn handling. Not a product path.
PLAIN_DESIGN = "livekit-example"


def plain_session(
    settings: AgentSettings, scenario: Scenario, *, idle_s: float
) -> AgentSession[Any]:
    engines_ = local_engines(settings, scenario)
    del engines_["turn_handling"]
    return AgentSession(**engines_, user_away_timeout=idle_s)


@dataclass
class TurnLog:
    """Each final turn of the call, posted once to the history (keyed by its item id)."""

    store: SegmentStore
    captions: TurnCaptions  # each turn is stored under its caption's id
    call_started_at: float  # unix time the room was created: offsets are from it
    language: str
    engine: Callable[[], str]
    caller_identity: Callable[[], str]
    agent_identity: str
    turns: int = 0
    transcript: list[tuple[str, str]] = field(default_factory=list)

    def on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        text = (item.text_content or "").strip()
        if not text:
            return
        started = item.metrics.get("started_speaking_at") or item.created_at
        stopped = item.metrics.get("stopped_speaking_at") or max(started, item.created_at)
        start_s = max(0.0, started - self.call_started_at)
        role = "user" if item.role == "user" else "agent"
        if role == "user":
            turn_id = self.captions.user_turn(text, round(start_s, 3))
        else:
            turn_id = self.captions.reply.claim() or f"turn-{item.id}"
        self.store.add(
            {
                "id": turn_id,
                "participant_identity": (
                    self.caller_identity() if role == "user" else self.agent_identity
                ),
                "language": self.language,
                "text": text[:4000],
                "start_s": round(start_s, 3),
                "end_s": round(max(start_s, stopped - self.call_started_at), 3),
                "role": role,
                "engine": self.engine(),
                "interrupted": bool(item.interrupted),
            }
        )
        self.turns += 1
        self.transcript.append((role, text))


async def summarize(
    model: llm.LLM[Any], previous: str | None, turns: list[tuple[str, str]]
) -> str | None:
    """Two or three sentences on what the call was about, for the history and admins.

    Incremental: the summary so far and the turns since, so each refresh costs the same
    however long the call (the local LLM is shared with the conversation itself).
    """
    if not turns:
        return previous
    speaker = {"user": "Caller", "agent": "Agent"}
    lines = "\n".join(f"{speaker[role]}: {text}" for role, text in turns)
    chat = llm.ChatContext()
    chat.add_message(
        role="system",
        content="Summarise a spoken conversation in English in at most three sentences: "
        "what the caller wanted and how it went. Reply with the summary only.",
    )
    so_far = f"The summary so far: {previous}\n\nWhat was said since:\n" if previous else ""
    chat.add_message(role="user", content=(so_far + lines)[-4000:])
    parts: list[str] = []
    async with model.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                parts.append(chunk.delta.content)
    return "".join(parts).strip() or previous


def usage_counters(session: AgentSession[Any]) -> dict[str, float]:
    """The call's usage totals, as the history stores them."""
    totals: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        totals[name] = round(totals.get(name, 0.0) + value, 3)

    for usage in session.usage.model_usage:
        if isinstance(usage, LLMModelUsage):
            add("llm_input_tokens", usage.input_tokens)
            add("llm_output_tokens", usage.output_tokens)
        elif isinstance(usage, STTModelUsage):
            add("audio_in_s", usage.audio_duration)
        elif isinstance(usage, TTSModelUsage):
            add("audio_out_s", usage.audio_duration)
            add("tts_characters", usage.characters_count)
    return totals


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
    ) -> None:
        self.room = room
        self.scenario = scenario
        self.session = session
        self._make_agent = make_agent
        self.summary_model = summary_model
        self.store = store
        self.engine = engine
        self.limits = limits
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
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ending = False
        self.summary: str | None = None
        self._summarised_turns = 0  # turns of the transcript the summary covers
        self._summary_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._rejoin_wait: asyncio.TimerHandle | None = None

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            room_options=room_io.RoomOptions(
                participant_kinds=[
                    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
                    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
                ],
                # 20 ms frames (LiveKit's default is 50): the VAD hears the caller start and
                # stop sooner, which is when barge-in and the end of a turn begin.
                audio_input=room_io.AudioInputOptions(frame_size_ms=20),
                # Captions are ours (captions.py), under the ids the turns are stored by.
                text_output=False,
                # A caller who leaves may be reloading the page: the session waits for
                # them (RoomIO links them again when they return), and _on_caller_left
                # says how long.
                close_on_disconnect=False,
            ),
        )
        self.room.on("participant_disconnected", self._on_caller_left)
        self.room.on("participant_connected", self._on_caller_back)
        # As RoomIO does for its own captions: the reply's text follows its audio.
        if session.output.audio is not None:
            synchronizer = TranscriptSynchronizer(
                next_in_chain_audio=session.output.audio, next_in_chain_text=self.captions.reply
            )
            session.output.audio = synchronizer.audio_output
            session.output.transcription = synchronizer.text_output
        # Only now: what the agent says must go through the outputs above.
        if isinstance(agent := session.current_agent, ScenarioAgent):
            agent.greet()
        if linked := session.room_io.linked_participant:
            self._caller = linked.identity
        limit = asyncio.get_running_loop().call_later(
            self.limits.max_call_s, lambda: self._spawn(self.end("limit"), "call-limit")
        )
        try:
            await done.wait()
        finally:
            limit.cancel()
            if self._rejoin_wait is not None:
                self._rejoin_wait.cancel()
            await self.aclose()

    def _on_caller_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._caller_identity() or self._rejoin_wait is not None:
            return
        phone = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        ended = participant.attributes.get(CALLER_ENDED_ATTRIBUTE) == "true"
        wait_s = 0.0 if phone or ended else self.limits.rejoin_s
        logger.info(
            "the caller left; the call ends unless they return",
            extra={"room": self.room.name, "within_s": wait_s},
        )
        self._rejoin_wait = asyncio.get_running_loop().call_later(wait_s, self._done.set)
        # What the agent was saying goes unheard: stop it there, so the stored turn is what
        # the caller heard, marked interrupted, as when they talk over it. Back from a
        # reload, they lead again.
        with contextlib.suppress(RuntimeError):  # nothing said, or a goodbye that must play
            self.session.interrupt()

    def _on_caller_back(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self._caller and self._rejoin_wait is not None:
            logger.info("the caller is back", extra={"room": self.room.name})
            self._rejoin_wait.cancel()
            self._rejoin_wait = None

    def _caller_identity(self) -> str:
        if not self._caller and (linked := self.session.room_io.linked_participant):
            self._caller = linked.identity
        return self._caller or "caller"

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        self.log.on_item(event)
        if isinstance(event.item, llm.ChatMessage):
            # The stages of each reply's latency, for operators reading the logs.
            metrics = {
                name: round(value, 3)
                for name, value in event.item.metrics.items()
                if isinstance(value, float) and name.endswith(("_delay", "_ttft", "_ttfb"))
            }
            if metrics:
                logger.info("turn", extra={"role": event.item.role, **metrics})
        self._summary_when_quiet()

    def _summary_when_quiet(self) -> None:
        due = len(self.log.transcript) - self._summarised_turns >= SUMMARY_EVERY_TURNS
        quiet = self.session.agent_state == "listening" and self.session.user_state != "speaking"
        if not quiet and self._summary_task is not None:
            self._summary_task.cancel()  # tried again at the next quiet moment
        elif due and quiet and (self._summary_task is None or self._summary_task.done()):
            self._summary_task = asyncio.create_task(self._refresh_summary(), name="summary")
            self._tasks.add(self._summary_task)
            self._summary_task.add_done_callback(self._tasks.discard)

    async def _refresh_summary(self) -> None:
        await self.report(summary=True, within_s=SUMMARY_MID_CALL_S)

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        logger.info("agent state", extra={"state": event.new_state})
        self._summary_when_quiet()

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        logger.info("user state", extra={"state": event.new_state})
        if event.new_state == "away":
            self._spawn(self.end("idle"), "idle-end")
        self._summary_when_quiet()

    def _on_error(self, event: ErrorEvent) -> None:
        """Keep the call going: Gemini gives way to the local pipeline; a failed local LLM
        reply gets an apology and the caller is heard again."""
        error = event.error
        if getattr(error, "recoverable", True):
            logger.warning("dialog engine error, retried", extra={"error": str(error)})
            return
        # Marked recoverable here (the session reads it after this handler) so the session
        # is not closed: the call continues.
        if isinstance(error, llm.RealtimeModelError) and self._fallback is not None:
            fallback, self._fallback = self._fallback, None
            error.recoverable = True
            logger.error(
                "Gemini failed mid-call; the local pipeline takes over",
                extra={"error": str(error.error), "room": self.room.name},
            )
            self.engine = self._fallback_engine
            agent = ScenarioAgent(
                self.scenario,
                chat_ctx=self.session.current_agent.chat_ctx,
                **fallback(),
            )
            self.session.update_agent(agent)
            self._spawn(self._say(line(self.scenario.language, "sorry")), "apology")
        elif isinstance(error, llm.LLMError):
            error.recoverable = True
            logger.error("the LLM failed a reply; apologising", extra={"error": str(error)})
            self._spawn(self._say(line(self.scenario.language, "sorry")), "apology")
        else:
            logger.error("dialog engine failed", extra={"error": str(error)})

    async def _say(self, text: str) -> None:
        with contextlib.suppress(Exception):
            await self.session.say(text).wait_for_playout()

    async def end(self, why: str) -> None:
        """Say goodbye, let it play, then end the call for everyone in it."""
        if self._ending:
            return
        self._ending = True
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
                        self.log.transcript[self._summarised_turns : covered],
                    ),
                    within_s,
                )
                self._summarised_turns = covered
            except Exception as exc:  # the usage still goes out; the summary waits
                logger.warning("summary not refreshed", extra={"error": repr(exc)})
        await self.store.report(usage=usage_counters(self.session), summary=self.summary)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.session.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # The turns first: they are what was said. Then the summary and usage, then leave.
        await self.store.flush(END_FLUSH_S)
        await self.report(summary=True)
        await self.store.aclose(timeout_s=1.0)
