"""Webhook events shaped as livekit-server sends them, for store and endpoint tests."""

from __future__ import annotations

import json
import time
import uuid

from google.protobuf.json_format import MessageToJson
from livekit.protocol import models
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


def event(kind: str, **fields: object) -> WebhookEvent:
    return WebhookEvent(
        id=f"EV_{uuid.uuid4().hex[:12]}", event=kind, created_at=int(time.time()), **fields
    )


def as_body(evt: WebhookEvent) -> bytes:
    return MessageToJson(evt).encode()
