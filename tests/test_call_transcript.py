"""A caller's page reads the transcript of its own call, with the token it joined with, and
nothing else."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from api.tokens import TokenRequest, mint_caller_token
from core.service_auth import mint_service_token

from .support.apiclient import admin_headers, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration


def _caller(settings: Settings, room: str) -> dict[str, str]:
    token = mint_caller_token(settings, TokenRequest(name="Aiko", room=room)).token
    return {"Authorization": f"Bearer {token}"}


def test_caller_reads_own_room_transcript(client: TestClient, settings: Settings) -> None:
    said = [
        seg("c-1", "Hello there", 0.5, translations={"ja": "こんにちは"}),
        seg("c-2", "A table for two", 2.0),
    ]
    post_segments(client, settings, "RM_call_a", said, room_name="room-a")
    post_segments(client, settings, "RM_call_b", [seg("c-9", "Elsewhere", 1.0)], "room-b")

    response = client.get("/api/call/transcript", headers=_caller(settings, "room-a"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    segments = response.json()["segments"]
    assert [s["id"] for s in segments] == ["c-1", "c-2"]
    assert segments[0]["translations"] == {"ja": "こんにちは"}


def test_a_reused_room_name_gives_its_newest_call(client: TestClient, settings: Settings) -> None:
    post_segments(client, settings, "RM_old", [seg("o-1", "Yesterday", 0.5)], room_name="reused")
    time.sleep(0.01)  # started_at orders the two calls
    post_segments(client, settings, "RM_new", [seg("n-1", "Today", 0.5)], room_name="reused")
    response = client.get("/api/call/transcript", headers=_caller(settings, "reused"))
    assert [s["id"] for s in response.json()["segments"]] == ["n-1"]


def test_unknown_room_is_not_found(client: TestClient, settings: Settings) -> None:
    response = client.get("/api/call/transcript", headers=_caller(settings, "never-used"))
    assert response.status_code == 404


def test_tokens_that_grant_no_room_are_refused(client: TestClient, settings: Settings) -> None:
    assert client.get("/api/call/transcript").status_code == 401
    service = mint_service_token(settings.livekit_api_key, settings.livekit_api_secret)
    assert (
        client.get(
            "/api/call/transcript", headers={"Authorization": f"Bearer {service}"}
        ).status_code
        == 403
    )
    assert client.get("/api/call/transcript", headers=admin_headers(settings)).status_code == 401
    now = int(time.time())
    forged = jwt.encode(
        {"iss": settings.livekit_api_key, "sub": "x", "exp": now + 60, "video": {"room": "r"}},
        "not-the-secret",
        algorithm="HS256",
    )
    assert (
        client.get("/api/call/transcript", headers={"Authorization": f"Bearer {forged}"})
    ).status_code == 401
    expired = jwt.encode(
        {
            "iss": settings.livekit_api_key,
            "sub": "x",
            "exp": now - 3600,
            "video": {"room": "r", "roomJoin": True},
        },
        settings.livekit_api_secret,
        algorithm="HS256",
    )
    assert (
        client.get("/api/call/transcript", headers={"Authorization": f"Bearer {expired}"})
    ).status_code == 401
