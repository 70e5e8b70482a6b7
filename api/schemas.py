"""Request and response bodies of the history API, as they appear in /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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

from .text import valid_unicode
from .tokens import Language

# Server-side ids (uuid4 hex): the only form a conversation or recording id takes.
ServerId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
SegmentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-:.]{1,64}$")]
RoomSid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Any LiveKit identity our platform makes (callers, agent-AJ_..., sip_+1555...), and
# nothing that would need escaping in a WebVTT voice tag.
ParticipantIdentity = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:+@=-]{1,128}$")]
SegmentText = Annotated[
    str, StringConstraints(min_length=1, max_length=4000), AfterValidator(valid_unicode)
]
# A dialog turn's speaker: the caller, or the agent.
Role = Literal["user", "agent"]
EngineName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")]

MAX_SEGMENTS_PER_BATCH = 100
MAX_TRANSLATIONS_PER_SEGMENT = 8


class Match(BaseModel):
    """A segment (or one of its translations) that matched the search."""

    segment_id: str
    language: str = Field(description="The language of `text`: the source or a translation.")
    text: str
    start_s: float


class ConversationFields(BaseModel):
    id: str
    room_name: str
    room_sid: str
    mode: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    languages: list[str] = Field(description="Participants' and segments' languages.")
    has_recording: bool = Field(description="Some recording of it has a stored file.")
    recording_status: str | None = Field(
        description="The newest room recording's status, else the latest recording's."
    )
    recording_partial: bool = Field(
        default=False, description="Part of the call's room recording ends early (a restart)."
    )
    segment_count: int


class ConversationSummary(ConversationFields):
    participants: list[str] = Field(description="Identities, in order of joining.")
    matches: list[Match] | None = Field(
        default=None, description="Up to 3 matching segments; only when `q` was given."
    )


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ParticipantOut(BaseModel):
    identity: str
    name: str | None
    kind: str
    language: str | None
    joined_at: datetime | None
    left_at: datetime | None


class SegmentOut(BaseModel):
    id: str
    participant_identity: str
    language: str
    text: str
    start_s: float
    end_s: float
    translations: dict[str, str]
    role: Role | None = Field(default=None, description="Dialog turns: who spoke.")
    engine: str | None = Field(default=None, description="Dialog turns: the engine used.")
    interrupted: bool = Field(
        default=False, description="Dialog turns: the caller talked over this reply."
    )


class RecordingOut(BaseModel):
    id: str
    kind: str = Field(description="room, participant or track")
    participant_identity: str | None
    status: str = Field(
        description="starting, active, ending, complete, failed, aborted or limit_reached"
    )
    partial: bool = Field(description="Failed or aborted, but a file was stored.")
    error: str | None
    started_at: datetime | None
    ended_at: datetime | None
    offset_s: float | None = Field(
        description="Seconds after the room recording started (0 for the room mix itself)."
    )
    duration_s: float | None
    size: int | None


class ConversationDetail(ConversationFields):
    participants: list[ParticipantOut]
    transcript: list[SegmentOut]
    summary: str | None
    usage: dict[str, Any] | None
    recordings: list[RecordingOut]


class Transcript(BaseModel):
    conversation_id: str
    segments: list[SegmentOut]


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


class AdminLogin(BaseModel):
    password: Annotated[str, Field(max_length=1024), AfterValidator(valid_unicode)]


class AdminSession(BaseModel):
    token: str
    expires_at: datetime


class PlaybackUrl(BaseModel):
    url: str
    expires_at: datetime
