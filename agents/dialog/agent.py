"""The agent's part in a scenario: what it says first, and what makes it answer sooner.

ScenarioAgent is the LiveKit `Agent` a dialog call runs. Beyond LiveKit's defaults it speaks
a reply's first clause at once, has the LLM server read the prompt ahead, replays the
scenario's opening line from a per-process cache, and gives no reply to a backchannel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Literal

from livekit import rtc
from livekit.agents import Agent, StopResponse, llm, tts
from livekit.agents.types import FlushSentinel
from livekit.agents.voice import ModelSettings, SpeechHandle, UserInputTranscribedEvent

from core.scenarios import Scenario
from core.tasks import TaskOwner

from ..tts.chunks import speakable_pieces
from .context import bounded, without_said
from .lines import is_backchannel, line
from .log import logger

# How long an answer waits for a read-ahead of its prompt still running (ScenarioAgent).
READ_AHEAD_WAIT_S = 1.0
# Leaving the session stops the agent's background work: a read-ahead (one token) or the
# opening being kept; neither holds a network close worth waiting for.
AGENT_TASKS_STOP_S = 1.0

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
        history_tokens: int = 1400,
        **overrides: Any,
    ) -> None:
        super().__init__(instructions=scenario.system_prompt(), **overrides)
        self.scenario = scenario
        self.eager = eager
        self.history_tokens = history_tokens  # the conversation the LLM gets (context.py)
        self._reader = reader
        # The apology the call says when the LLM failed is the call's, not the model's: shown
        # it as its own turn, the small local model learned to answer with it, word for word
        # (after the server restarted, in a CI run). The history keeps it.
        self._unshown = frozenset({line(scenario.language, "sorry")})
        self._tasks = TaskOwner(logger, scenario=scenario.id)
        self._reading: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        if self._reader is not None:
            self.session.on("user_input_transcribed", self._on_transcribed)

    async def on_exit(self) -> None:
        if self._reader is not None:
            self.session.off("user_input_transcribed", self._on_transcribed)
        await self._tasks.aclose(AGENT_TASKS_STOP_S)

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
        chat_ctx = self.as_shown(chat_ctx)
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk

    def as_shown(self, chat: llm.ChatContext) -> llm.ChatContext:
        """The conversation as the LLM reads it: without the call's apologies, and bounded."""
        return bounded(without_said(chat, self._unshown), self.history_tokens)

    def greet(self, *, phone: bool = False) -> None:
        opening = self.scenario.opening_for(phone=phone)
        if isinstance(self.session.llm, llm.RealtimeModel):  # it speaks for itself
            self.session.generate_reply(
                instructions=f"Greet the caller by saying exactly: {opening}"
            )
            return
        self.read_ahead(opening, role="assistant")
        key = (self.scenario.language, opening)
        if (frames := _openings.get(key)) is not None:
            self.session.say(opening, audio=_replay(frames))
            return
        handle = self.session.say(opening)
        if self.session.tts is not None:
            self._tasks.spawn(_keep_opening(self.session.tts, key, handle), "keep-opening")

    def welcome_back(self) -> None:
        """Instead of the greeting, when this agent took the call over from a lost one."""
        text = line(self.scenario.language, "resume")
        if isinstance(self.session.llm, llm.RealtimeModel):
            self.session.generate_reply(instructions=f"Say exactly: {text}")
            return
        # No read-ahead: after the restored turns this would be a second assistant message
        # in a row, which the local server's chat template refuses.
        self.session.say(text)

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
        chat = self.as_shown(chat)  # as the answer will read it
        self._reading = self._tasks.spawn(self._read(self._reader, chat), "llm-read")
        return self._reading

    async def _read(self, reader: llm.LLM[Any], chat: llm.ChatContext) -> None:
        try:
            # One token (the reader is made so: roles.make_llm): reading the prompt is all
            # this is for.
            async with reader.chat(chat_ctx=chat) as stream:
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
