"""Webhook events shaped as livekit-server sends them, for store and endpoint tests."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from google.protobuf.json_format import MessageToJson
from livekit.protocol import egress, models
from livekit.protocol.webhook import WebhookEvent


def room(sid: str = "RM_test", name: str = "dialog-abc", mode: str = "dialog") -> models.Room:
    return models.Room(
        sid=sid, name=name, metadata=json.dumps({"mode": mode}), creation_time=int(time.time())
    )


def participant(
    sid: str = "PA_caller", identity: str = "caller-1", kind: int = 0, language: str = "en"
) -> models.ParticipantInfo:
    return models.ParticipantInfo(
        sid=sid,
        identity=identity,
        name=identity,
        kind=kind,  # type: ignore[arg-type]
        joined_at_ms=int(time.time() * 1000),
        attributes={"language": language},
    )


def event(kind: str, **fields: Any) -> WebhookEvent:
    return WebhookEvent(
        id=f"EV_{uuid.uuid4().hex[:12]}", event=kind, created_at=int(time.time()), **fields
    )


def as_body(evt: WebhookEvent) -> bytes:
    return MessageToJson(evt).encode()


SECOND_NS = 1_000_000_000


def egress_info(
    status: str,
    *,
    updated_s: float,
    egress_id: str = "EG_test",
    room_id: str = "RM_test",
    kind: str = "room",
    identity: str = "",
    started_s: float = 0,
    ended_s: float = 0,
    filename: str = "",
    size: int = 0,
    duration_s: float = 0,
    error: str = "",
    manifest: str = "",
) -> egress.EgressInfo:
    """An EgressInfo as LiveKit Egress (or Kaiwa's recorder) reports it; times in seconds
    since the epoch here, nanoseconds in the message."""
    info = egress.EgressInfo(
        egress_id=egress_id,
        room_id=room_id,
        room_name="dialog-abc",
        status=f"EGRESS_{status.upper()}",
        started_at=int(started_s * SECOND_NS),
        ended_at=int(ended_s * SECOND_NS),
        updated_at=int(updated_s * SECOND_NS),
        error=error,
        manifest_location=manifest,
    )
    if kind == "room":
        info.room_composite.room_name = "dialog-abc"
        info.room_composite.audio_only = True
    elif kind == "participant":
        info.participant.room_name = "dialog-abc"
        info.participant.identity = identity
    else:
        info.track.room_name = "dialog-abc"
        info.track.track_id = "TR_test"
    if filename:
        info.file_results.append(
            egress.FileInfo(
                filename=filename,
                size=size,
                duration=int(duration_s * SECOND_NS),
                location=f"s3://kaiwa-recordings/{filename}",
                started_at=int(started_s * SECOND_NS),
                ended_at=int(ended_s * SECOND_NS),
            )
        )
    return info


def egress_event(kind: str, info: egress.EgressInfo) -> WebhookEvent:
    """As LiveKit sends egress events: egress_info and no room."""
    return event(kind, egress_info=info)
