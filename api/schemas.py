"""Request and response bodies of the history API, as they appear in /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from core.payloads import Role, SegmentKind
from core.text import valid_unicode

# Server-side ids (uuid4 hex): the only form a conversation or recording id takes.
ServerId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


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
    participants: list[str] = Field(
        description="Identities, in order of joining; a phone caller's number masked."
    )
    matches: list[Match] | None = Field(
        default=None, description="Up to 3 matching segments; only when `q` was given."
    )


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ParticipantOut(BaseModel):
    """The one place a phone caller's number is shown whole (`identity`, `name`)."""

    identity: str
    name: str | None
    masked_identity: str = Field(
        description="`identity` as transcripts, recordings, lists and exports show it: "
        "a phone caller's number masked (`sip_+81 •• ••••5678`), any other as it is."
    )
    masked_name: str | None = Field(
        description="`name` as speaker labels show it: a phone caller's number masked."
    )
    kind: str
    language: str | None
    joined_at: datetime | None
    left_at: datetime | None


class SegmentOut(BaseModel):
    id: str
    participant_identity: str = Field(
        description="The speaker; a phone caller's number masked (`sip_+81 •• ••••5678`)."
    )
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
    kind: SegmentKind = Field(
        default="speech", description="Said aloud, or typed into the call's chat."
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Where the line's time went: seconds per stage, as the pipeline measured "
        'them ("final_transcript", "translation.ja", "first_frame.ja", "llm_first_token", '
        '"reply_first_frame", ...). Empty for lines stored before the ledger.',
    )


class RecordingOut(BaseModel):
    id: str
    kind: str = Field(description="room, participant or track")
    participant_identity: str | None = Field(
        description="Whose audio it is; a phone caller's number masked."
    )
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


class AdminLogin(BaseModel):
    password: Annotated[str, Field(max_length=1024), AfterValidator(valid_unicode)]


class AdminSession(BaseModel):
    token: str
    expires_at: datetime


class PlaybackUrl(BaseModel):
    url: str
    expires_at: datetime
