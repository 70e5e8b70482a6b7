"""The history API's side of a call taken over by a new agent: its claim fences older agents'
writes off (409) at once, and answers what it must restore."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.settings import Settings

from .support.apiclient import agent_headers, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration


def post(client: TestClient, settings: Settings, path: str, body: dict[str, Any]) -> int:
    return client.post(path, json=body, headers=agent_headers(settings)).status_code


def turn(id: str, role: str, text: str, start_s: float, **extra: Any) -> dict[str, Any]:
    return {
        **seg(id, text, start_s, identity="caller-1" if role == "user" else "agent-1"),
        "role": role,
        "engine": "local/qwen",
        **extra,
    }


def test_a_stale_generation_is_refused_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    room = {"room_sid": "RM_fence", "room_name": "fence"}
    assert (
        post(
            client,
            settings,
            "/api/internal/segments",
            {**room, "segments": [seg("g0-a", "Before the crash", 1.0)]},
        )
        == 200
    )
    assert (
        post(
            client,
            settings,
            "/api/internal/segments",
            {**room, "generation": 1, "segments": [seg("g1-a", "After it", 5.0)]},
        )
        == 200
    )
    # The paused first agent wakes up and writes: refused, whole.
    body = {**room, "generation": 0, "segments": [seg("g0-b", "Late words", 3.0)]}
    response = client.post("/api/internal/segments", json=body, headers=agent_headers(settings))
    assert response.status_code == 409 and "stale generation" in response.text
    assert (
        post(
            client,
            settings,
            "/api/internal/reports",
            {**room, "generation": 0, "summary": "Old view", "usage": {}},
        )
        == 409
    )
    assert (
        post(
            client,
            settings,
            "/api/internal/reports",
            {**room, "generation": 1, "summary": "New view", "usage": {}},
        )
        == 200
    )
    state = claim(client, settings, "RM_fence", 1).json()
    assert state["generation"] == 1 and state["summary"] == "New view"
    assert set(state["last_segments"]["caller-1"].values()) == {"g1-a", 6.5}


def claim(client: TestClient, settings: Settings, room_sid: str, generation: int) -> Any:
    return client.post(
        f"/api/internal/conversations/{room_sid}/claim",
        json={"generation": generation},
        headers=agent_headers(settings),
    )


def test_a_claim_fences_the_older_agent_out_before_the_new_one_writes(
    client: TestClient, settings: Settings
) -> None:
    room = {"room_sid": "RM_claim", "room_name": "claim"}
    first = {**room, "generation": 1, "segments": [seg("c-a", "Before the node died", 1.0)]}
    assert post(client, settings, "/api/internal/segments", first) == 200
    # The room is re-created on another node, and its new agent claims the call first.
    assert claim(client, settings, "RM_claim", 2).status_code == 200
    # The old agent, still reconnecting to the dead node, ends its call: refused, whole.
    late = {**room, "generation": 1, "summary": "Old view", "usage": {}}
    assert post(client, settings, "/api/internal/reports", late) == 409
    # An older agent's claim is refused too; the newer one's stands.
    assert claim(client, settings, "RM_claim", 1).status_code == 409
    assert claim(client, settings, "RM_claim", 2).json()["generation"] == 2


def test_the_resume_state_has_the_dialog_turns_in_order(
    client: TestClient, settings: Settings
) -> None:
    turns = [
        turn("t-3", "agent", "Osaka is lovely.", 6.0, interrupted=True),
        turn("t-1", "agent", "Hello! What is your name?", 0.5),
        turn("t-2", "user", "I am Ken and I live in Osaka.", 3.0),
    ]
    post_segments(client, settings, "RM_resume", turns)
    response = claim(client, settings, "RM_resume", 0)
    assert response.status_code == 200, response.text
    state = response.json()
    assert [(t["role"], t["text"], t["interrupted"]) for t in state["turns"]] == [
        ("agent", "Hello! What is your name?", False),
        ("user", "I am Ken and I live in Osaka.", False),
        ("agent", "Osaka is lovely.", True),
    ]
    assert state["engine"] == "local/qwen" and state["generation"] == 0


def test_the_claim_route_is_for_agents_and_known_calls_only(
    client: TestClient, settings: Settings
) -> None:
    anonymous = client.post("/api/internal/conversations/RM_none/claim", json={"generation": 1})
    assert anonymous.status_code == 401
    assert claim(client, settings, "RM_none", 1).status_code == 404
    assert claim(client, settings, "..%2Fetc", 1).status_code in (404, 422)
    assert claim(client, settings, "RM_none", -1).status_code == 422
