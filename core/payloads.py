"""What agents post to the API's internal routes: segments and call reports.

Both sides validate with these models, so a bad segment fails at its source (the agent) and
alone, rather than costing the batch it travels in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from .languages import LANGUAGE_TAG, Language
from .text import valid_unicode

SegmentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-:.]{1,64}$")]
RoomSid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Any LiveKit identity our platform makes (callers, agent-AJ_..., sip_+1555...), and
# nothing that would need escaping in a WebVTT voice tag.
ParticipantIdentity = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:+@=-]{1,128}$")]
# Longer texts are cut to this at their source (an agent), not refused.
MAX_SEGMENT_TEXT = 4000
SegmentText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SEGMENT_TEXT),
    AfterValidator(valid_unicode),
]
# A dialog turn's speaker: the caller, or the agent.
Role = Literal["user", "agent"]
# How a line came into the call: said aloud, or typed (on LiveKit's `lk.chat` topic).
SegmentKind = Literal["speech", "text"]
# The posting agent's place in its room's line of agents (agents/lease.py).
AgentGeneration = Annotated[
    int,
    Field(
        ge=0,
        le=1_000_000,
        description="The posting agent's place in the room's line of agents (0, then one more "
        "per re-dispatch): a lower one than the conversation has seen is refused (409).",
    ),
]
EngineName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]

MAX_SEGMENTS_PER_BATCH = 100
MAX_TRANSLATIONS_PER_SEGMENT = 8

# The stages of a call's latency: each stored turn's or segment's ledger, and the stage
# histograms of agents/metrics.py (which says where each starts and ends), use these names.
LatencyStage = Literal[
    "final_transcript",
    "end_of_turn",
    "translation",
    "first_frame",
    "llm_first_token",
    "reply_first_frame",
    "barge_in",
]
LATENCY_STAGES: tuple[LatencyStage, ...] = get_args(LatencyStage)
# A ledger key: a stage, or a stage in one target language ("translation.ja").
TimingName = Annotated[
    str,
    StringConstraints(pattern=r"^(" + "|".join(LATENCY_STAGES) + r")(\." + LANGUAGE_TAG + ")?$"),
]
Timings = Annotated[
    dict[TimingName, Annotated[float, Field(ge=0, le=3600)]],
    Field(
        default_factory=dict,
        max_length=2 + 4 * MAX_TRANSLATIONS_PER_SEGMENT,
        description="Where the line's time went, in seconds per stage, as measured in the "
        'pipeline ("final_transcript", "translation.ja", "first_frame.ja", '
        '"llm_first_token", ...: docs/operations.md).',
    ),
]


class SegmentIn(BaseModel):
    id: SegmentId = Field(description="Chosen by the agent; posting it again is a no-op.")
    participant_identity: ParticipantIdentity
    participant_sid: RoomSid | None = None
    language: Language
    text: SegmentText
    start_s: float = Field(ge=0, le=7 * 24 * 3600, description="Seconds from the call's start.")
    end_s: float = Field(ge=0, le=7 * 24 * 3600)
    translations: dict[Language, SegmentText] = Field(
        default_factory=dict, max_length=MAX_TRANSLATIONS_PER_SEGMENT
    )
    role: Role | None = Field(default=None, description="Dialog turns: who spoke.")
    engine: EngineName | None = Field(
        default=None, description="Dialog turns: the engine that heard or spoke it."
    )
    interrupted: bool = Field(
        default=False, description="Dialog turns: the caller talked over this reply."
    )
    kind: SegmentKind = Field(
        default="speech", description="Said aloud, or typed into the call's chat."
    )
    timings: Timings

    @model_validator(mode="after")
    def _ends_after_start(self) -> SegmentIn:
        if self.end_s < self.start_s:
            raise ValueError("end_s is before start_s")
        return self


class InvalidSegment(BaseModel):
    """An item of a batch that is not a valid segment. It is refused on its own: the rest of
    the batch is stored."""

    id: str | None = Field(description="The item's id, when that at least was valid.")
    reason: str = Field(description="The fields at fault and why; never their values.")


_segment_id = TypeAdapter(SegmentId)


def _segment_or_invalid(value: Any) -> SegmentIn | InvalidSegment:
    try:
        return SegmentIn.model_validate(value)
    except ValidationError as exc:
        raw_id = value.get("id") if isinstance(value, dict) else None
        try:
            valid_id: str | None = _segment_id.validate_python(raw_id)
        except ValidationError:
            valid_id = None
        return InvalidSegment(id=valid_id, reason=validation_summary(exc))


def validation_summary(exc: ValidationError) -> str:
    """Each failed field and the rule it broke: the input itself is never echoed back."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )[:500]


# A batch item: validated alone, so that one bad segment does not cost the others.
BatchItem = Annotated[
    SegmentIn | InvalidSegment,
    PlainValidator(_segment_or_invalid, json_schema_input_type=SegmentIn),
]


class SegmentBatch(BaseModel):
    room_sid: RoomSid
    room_name: str | None = Field(
        default=None, max_length=128, description="Shown until LiveKit's room event arrives."
    )
    generation: AgentGeneration = 0
    segments: list[BatchItem] = Field(
        min_length=1,
        max_length=MAX_SEGMENTS_PER_BATCH,
        description="Each is settled on its own: see the answer's `results`.",
    )


SegmentResult = Literal["stored", "duplicate", "refused"]


class SegmentOutcome(BaseModel):
    id: str | None = Field(description="The segment's id; null when it had no valid id.")
    result: SegmentResult = Field(
        description="stored: new; duplicate: already held (new translations kept); "
        "refused: not stored, see `reason`."
    )
    reason: str | None = Field(default=None, description="Why it was refused.")


class SegmentsStored(BaseModel):
    stored: int = Field(description="Segments new to the store.")
    duplicates: int = Field(description="Segments it already had (their new translations kept).")
    refused: int = Field(description="Segments refused; the others were settled.")
    results: list[SegmentOutcome] = Field(description="One per posted segment, in order.")


# A usage counter: "stt_audio_s", "tts_characters", "llm_input_tokens", ...
UsageName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
MAX_USAGE_COUNTERS = 32


class CallReport(BaseModel):
    """What an agent says about a call: a summary and the usage it counted."""

    room_sid: RoomSid
    room_name: str | None = Field(
        default=None, max_length=128, description="Shown until LiveKit's room event arrives."
    )
    generation: AgentGeneration = 0
    summary: str | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description="Replaces the stored summary; left out, the summary stays as it is.",
    )
    usage: dict[UsageName, Annotated[float, Field(ge=0, le=1e12)]] = Field(
        default_factory=dict,
        max_length=MAX_USAGE_COUNTERS,
        description="The call's totals so far: each counter named replaces the stored one, "
        "so a report sent twice counts once.",
    )


class CallReportStored(BaseModel):
    summary: str | None
    usage: dict[str, float]


# The most turns a re-dispatched dialog agent restores: the summary covers what came before.
MAX_RESUMED_TURNS = 200


class ResumedTurn(BaseModel):
    role: Role
    text: str
    interrupted: bool = False


class LastSegment(BaseModel):
    id: str
    end_s: float


class CallClaim(BaseModel):
    """An agent joining a call (POST /api/internal/conversations/{room_sid}/claim)."""

    generation: AgentGeneration


class CallState(BaseModel):
    """What an agent joining a call already under way needs to carry it on (the answer to
    its claim)."""

    room_sid: str
    started_at: float = Field(description="Unix time the call started.")
    generation: int = Field(description="The newest agent generation that wrote to it.")
    summary: str | None = None
    engine: str | None = Field(default=None, description="The dialog engine that served last.")
    turns: list[ResumedTurn] = Field(
        default_factory=list, description=f"The dialog's last {MAX_RESUMED_TURNS} turns, in order."
    )
    last_segments: dict[str, LastSegment] = Field(
        default_factory=dict, description="Each speaker's last stored segment."
    )
