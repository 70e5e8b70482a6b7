"""What a dialog call keeps: each turn stored once, a summary of the call, its usage.

TurnLog posts each final turn to the history under its caption's id; `summarize` brings the
summary up to date from the turns since the last one; `usage_counters` totals the session's
usage as the history stores it; `TurnTimer` gives each turn its latency ledger, stored with
it, logged, and counted in the stage histograms.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import AgentSession, ConversationItemAddedEvent, llm
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage

from .. import metrics
from ..chat import TypedMessage
from ..history_client import SegmentStore
from ..roles import chat_text
from .log import logger
from .turn_captions import TurnCaptions

# Typed messages taken and not yet seen as turns: a few at most, unless turns are lost.
TYPED_PENDING = 32


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
    # Whether the agent's replies are spoken now (the caller may read them only).
    voice_replies: Callable[[], bool] = lambda: True
    turns: int = 0
    transcript: list[tuple[str, str]] = field(default_factory=list)
    timer: TurnTimer = field(init=False)
    # Typed messages stored, oldest first, until the session adds them as user turns (not
    # to be stored again): it gives each an item id of its own, so they are known by text.
    _typed: deque[TypedMessage] = field(default_factory=lambda: deque(maxlen=TYPED_PENDING))

    def __post_init__(self) -> None:
        self.timer = TurnTimer(self.language)

    def _spoken(self, role: str) -> bool:
        return role == "user" or self.voice_replies()

    def typed(self, message: TypedMessage) -> None:
        """The caller's typed message was taken: captioned and stored now, as typed, under
        its own id, whatever becomes of the reply (a message typed over it may cancel the
        reply before the session has added it to the conversation)."""
        start_s = round(self.captions.call_time(), 3)
        self.captions.typed_turn(message, start_s)
        self._typed.append(message)
        self._keep(
            {
                "id": message.id,
                "participant_identity": message.sender,
                "language": self.language,
                "text": message.text[:4000],
                "start_s": start_s,
                "end_s": start_s,
                "role": "user",
                "engine": self.engine(),
                "kind": "text",
                "timings": {},
            }
        )

    def _typed_turn(self, text: str) -> bool:
        """Whether a user turn with `text` is a typed message, stored already."""
        for message in self._typed:
            if message.text == text:
                self._typed.remove(message)
                return True
        return False

    def on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        text = (item.text_content or "").strip()
        if not text:
            return
        role = "user" if item.role == "user" else "agent"
        if role == "user" and self._typed_turn(text):
            self.timer.timings(item)  # the reply's ledger starts from it
            return
        started = item.metrics.get("started_speaking_at") or item.created_at
        stopped = item.metrics.get("stopped_speaking_at") or max(started, item.created_at)
        start_s = max(0.0, started - self.call_started_at)
        if role == "user":
            turn_id = self.captions.user_turn(text, round(start_s, 3))
        else:
            turn_id = self.captions.reply.claim() or f"turn-{item.id}"
        timings = self.timer.timings(item)
        # For operators reading the logs: where the turn's time went.
        logger.info("turn", extra={"role": role, **timings})
        self._keep(
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
                # A reply written and not spoken is text too.
                "kind": "speech" if self._spoken(role) else "text",
                "timings": timings,
            }
        )

    def _keep(self, turn: dict[str, Any]) -> None:
        self.store.add(turn)
        self.turns += 1
        self.transcript.append((turn["role"], turn["text"]))


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
    # The latest 4500 bytes (about 1500 tokens, as dialog/context.py estimates): within the
    # server's 2048 a slot, in Japanese as in English.
    recent = (so_far + lines).encode()[-4500:].decode(errors="ignore")
    chat.add_message(role="user", content=recent)
    return (await chat_text(model, chat)).strip() or previous


def stage_seconds(report: llm.MetricsReport) -> dict[metrics.Stage, float]:
    """A turn's latency stages, from LiveKit's measures of it (ChatMessage.metrics), each
    from the end of the stage before, so that they add up:

    - a caller's turn: end of speech → final transcript (`transcription_delay`), then →
      the decision that the turn is over (the rest of `end_of_turn_delay`);
    - a reply: → the LLM's first token (`llm_node_ttft`), then → the reply's first frame
      out (the rest of `e2e_latency`, from the end of the caller's speech: the first
      sentence's tokens, and its synthesis): `TurnTimer` works that one out, as
      `e2e_latency` spans the caller's turn, which the session reports first."""
    stages: dict[metrics.Stage, float] = {}
    transcription = report.get("transcription_delay")
    end_of_turn = report.get("end_of_turn_delay")
    if transcription is not None:
        stages["final_transcript"] = transcription
    if end_of_turn is not None:
        stages["end_of_turn"] = max(0.0, end_of_turn - (transcription or 0.0))
    ttft = report.get("llm_node_ttft")
    if ttft is not None:
        stages["llm_first_token"] = ttft
    return stages


@dataclass
class TurnTimer:
    """Each turn's ledger (agents/metrics.py), counted in the stage histograms once."""

    language: str
    # The caller's last turn: its end of speech → end of turn, which the reply's
    # `e2e_latency` includes.
    _caller_turn_s: float | None = None

    def timings(self, message: llm.ChatMessage) -> dict[str, float]:
        report = message.metrics
        stages = stage_seconds(report)
        if message.role == "user":
            self._caller_turn_s = report.get("end_of_turn_delay")
        elif (e2e := report.get("e2e_latency")) is not None and self._caller_turn_s is not None:
            stages["reply_first_frame"] = max(
                0.0, e2e - self._caller_turn_s - stages.get("llm_first_token", 0.0)
            )
        return {
            stage: metrics.observe_stage("dialog", stage, self.language, seconds)
            for stage, seconds in stages.items()
        }


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
