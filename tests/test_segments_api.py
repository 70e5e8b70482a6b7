"""Agents post transcript segments once each, with a service token and nothing else."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from api.tokens import TokenRequest, mint_caller_token
from core.service_auth import mint_service_token
from kaiwa.stack.config import StackConfig

from .support.apiclient import admin_headers, agent_headers, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration


def transcript_of(client: TestClient, settings: Settings, room_sid: str) -> list[dict[str, object]]:
    listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
    (conversation,) = [c for c in listing["items"] if c["room_sid"] == room_sid]
    response = client.get(
        f"/api/conversations/{conversation['id']}/transcript", headers=admin_headers(settings)
    )
    segments: list[dict[str, object]] = response.json()["segments"]
    return segments


def counts(answer: dict[str, Any]) -> tuple[int, int]:
    return answer["stored"], answer["duplicates"]


def test_posting_twice_stores_once_and_adds_translations(
    client: TestClient, settings: Settings
) -> None:
    first = [seg("s-1", "Hello there", 0.5), seg("s-2", "I need a table", 2.0)]
    assert counts(post_segments(client, settings, "RM_a", first)) == (2, 0)
    again = [
        seg("s-1", "Hello there", 0.5, translations={"ja": "こんにちは"}),
        seg("s-2", "I need a table", 2.0),
        seg("s-3", "For two", 4.0),
    ]
    assert counts(post_segments(client, settings, "RM_a", again)) == (1, 2)
    # The translation arrives again, and a second language later: one row each.
    later = [seg("s-1", "Hello there", 0.5, translations={"ja": "こんにちは", "vi": "Xin chào"})]
    assert counts(post_segments(client, settings, "RM_a", later)) == (0, 1)

    segments = transcript_of(client, settings, "RM_a")
    assert [s["id"] for s in segments] == ["s-1", "s-2", "s-3"]
    assert segments[0]["translations"] == {"ja": "こんにちは", "vi": "Xin chào"}


def test_a_line_for_a_listener_with_a_script_and_region_tag_is_stored(
    client: TestClient, settings: Settings
) -> None:
    """A listener who joined as "ja-Jpan-JP" (as native apps send it) has their translation
    and its ledger keyed by that tag; the line is kept whole."""
    line = {
        **seg("s-1", "Good morning", 0.5, translations={"ja-Jpan-JP": "おはようございます"}),
        "timings": {"final_transcript": 0.4, "translation.ja-Jpan-JP": 0.9},
    }
    assert counts(post_segments(client, settings, "RM_a", [line])) == (1, 0)
    (stored,) = transcript_of(client, settings, "RM_a")
    assert stored["translations"] == {"ja-Jpan-JP": "おはようございます"}


def test_another_participants_line_under_a_known_id_adds_nothing(
    client: TestClient, settings: Settings
) -> None:
    """After a takeover, the new agent cannot know whose message ids are whose: a message
    typed under Emma's id must not add its text or translations to her line."""
    emma = seg("chat-abc12345", "Hello everyone", 0.5, identity="emma")
    assert counts(post_segments(client, settings, "RM_a", [emma])) == (1, 0)
    forged = seg(
        "chat-abc12345", "I owe you money", 9.0, identity="mallory", translations={"ja": "借金"}
    )
    answer = post_segments(client, settings, "RM_a", [forged])
    assert answer["refused"] == 1 and answer["stored"] == 0, answer
    (stored,) = transcript_of(client, settings, "RM_a")
    assert (stored["participant_identity"], stored["text"], stored["translations"]) == (
        "emma",
        "Hello everyone",
        {},
    )
    # The same in one batch: the first line's speaker keeps the id.
    both = [seg("s-9", "Mine", 10.0, identity="emma"), seg("s-9", "Also mine", 10.0, identity="x")]
    answer = post_segments(client, settings, "RM_a", both)
    assert (answer["stored"], answer["refused"]) == (1, 1), answer


def test_same_id_in_one_batch_counts_once(client: TestClient, settings: Settings) -> None:
    batch = [seg("s-1", "Hello", 0.0), seg("s-1", "Hello", 0.0)]
    assert counts(post_segments(client, settings, "RM_a", batch)) == (1, 1)


def test_concurrent_retries_store_each_segment_once(client: TestClient, settings: Settings) -> None:
    """An agent retries a post that timed out while the first is still being stored."""
    batch = [
        seg(f"s-{i}", f"line {i}", float(i), translations={"ja": f"行 {i}"}) for i in range(20)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: post_segments(client, settings, "RM_a", batch), range(4)))
    assert sum(r["stored"] for r in results) == 20
    segments = transcript_of(client, settings, "RM_a")
    assert len(segments) == 20
    assert all(s["translations"] == {"ja": f"行 {str(s['id'])[2:]}"} for s in segments)


def test_segment_id_of_another_conversation_is_refused(
    client: TestClient, settings: Settings
) -> None:
    post_segments(client, settings, "RM_a", [seg("s-1", "Hello", 0.0)])
    answer = post_segments(client, settings, "RM_b", [seg("s-1", "Hello", 0.0)])
    assert answer["refused"] == 1 and answer["results"][0]["result"] == "refused"
    assert transcript_of(client, settings, "RM_b") == []


def test_deleted_conversation_takes_no_more_text(
    s3_server: StackConfig, client: TestClient, settings: Settings
) -> None:
    post_segments(client, settings, "RM_a", [seg("s-1", "Hello", 0.0)])
    listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
    conversation_id = listing["items"][0]["id"]
    deleted = client.delete(
        f"/api/conversations/{conversation_id}", headers=admin_headers(settings)
    )
    assert deleted.status_code == 204
    response = client.post(
        "/api/internal/segments",
        json={"room_sid": "RM_a", "segments": [seg("s-2", "Still here?", 3.0)]},
        headers=agent_headers(settings),
    )
    assert response.status_code == 410


def _post(client: TestClient, headers: dict[str, str]) -> int:
    body = {"room_sid": "RM_a", "segments": [seg("s-1", "Hello", 0.0)]}
    return client.post("/api/internal/segments", json=body, headers=headers).status_code


def test_no_token_is_refused(client: TestClient) -> None:
    assert _post(client, {}) == 401
    assert _post(client, {"Authorization": "Bearer"}) == 401
    assert _post(client, {"Authorization": "Basic YWdlbnQ6c2VjcmV0"}) == 401


def test_caller_token_is_forbidden(client: TestClient, settings: Settings) -> None:
    """Signed with the same secret, but a LiveKit access token: the claim tells them apart."""
    caller = mint_caller_token(settings, TokenRequest(name="Aiko", room="r1")).token
    assert _post(client, {"Authorization": f"Bearer {caller}"}) == 403


def test_admin_token_is_not_a_service_token(client: TestClient, settings: Settings) -> None:
    assert _post(client, admin_headers(settings)) == 401


def _signed(settings: Settings, claims: dict[str, object]) -> dict[str, str]:
    token = jwt.encode(claims, settings.livekit_api_secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_expired_token_is_refused(client: TestClient, settings: Settings) -> None:
    now = int(time.time())
    expired = _signed(
        settings,
        {
            "iss": settings.livekit_api_key,
            "iat": now - 120,
            "exp": now - 60,
            "kaiwa": {"service": "agent"},
        },
    )
    assert _post(client, expired) == 401


@pytest.mark.parametrize(
    "claims,status",
    [
        ({"kaiwa": {"service": "recorder"}}, 403),
        ({"kaiwa": {"role": "admin"}}, 403),
        ({"kaiwa": "agent"}, 403),
        ({}, 403),
        ({"kaiwa": {"service": "agent"}, "video": {"roomJoin": True, "room": "r1"}}, 403),
        ({"kaiwa": {"service": "agent"}, "iss": "another-key"}, 401),
        ({"kaiwa": {"service": "agent"}, "exp": None}, 401),
        # A year-long token would be a standing credential if it leaked.
        ({"kaiwa": {"service": "agent"}, "exp": int(time.time()) + 365 * 86400}, 401),
    ],
)
def test_wrong_claims_are_refused(
    client: TestClient, settings: Settings, claims: dict[str, object], status: int
) -> None:
    base: dict[str, object] = {
        "iss": settings.livekit_api_key,
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    merged = {k: v for k, v in {**base, **claims}.items() if v is not None}
    assert _post(client, _signed(settings, merged)) == status


def test_token_signed_with_another_secret_is_refused(
    client: TestClient, settings: Settings
) -> None:
    token = mint_service_token(settings.livekit_api_key, "x" * 48)
    assert _post(client, {"Authorization": f"Bearer {token}"}) == 401


@pytest.mark.parametrize(
    "change",
    [
        {"id": "../../etc/passwd"},
        {"id": "x" * 65},
        {"id": ""},
        {"text": "x" * 4001},
        {"text": ""},
        {"language": "english"},
        {"translations": {"Japanese": "こんにちは"}},
        {"start_s": -1.0},
        {"start_s": 5.0, "end_s": 4.0},
        {"participant_identity": "<script>"},
    ],
)
def test_invalid_segments_are_refused(
    client: TestClient, settings: Settings, change: dict[str, object]
) -> None:
    answer = post_segments(client, settings, "RM_a", [{**seg("s-1", "Hello", 0.0), **change}])
    assert answer["stored"] == 0 and answer["refused"] == 1, answer
    assert transcript_of(client, settings, "RM_a") == []


def test_batch_size_is_limited(client: TestClient, settings: Settings) -> None:
    too_many = [seg(f"s-{i}", "x", float(i)) for i in range(101)]
    response = client.post(
        "/api/internal/segments",
        json={"room_sid": "RM_a", "segments": too_many},
        headers=agent_headers(settings),
    )
    assert response.status_code == 422
    assert post_segments(client, settings, "RM_a", too_many[:100])["stored"] == 100


def _report(client: TestClient, settings: Settings, **body: object) -> tuple[int, object]:
    response = client.post(
        "/api/internal/reports", json={"room_sid": "RM_a", **body}, headers=agent_headers(settings)
    )
    return response.status_code, response.json()


def _conversation(client: TestClient, settings: Settings) -> dict[str, object]:
    listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
    (item,) = [c for c in listing["items"] if c["room_sid"] == "RM_a"]
    detail: dict[str, object] = client.get(
        f"/api/conversations/{item['id']}", headers=admin_headers(settings)
    ).json()
    return detail


def test_report_sets_summary_and_usage_counted_once(client: TestClient, settings: Settings) -> None:
    first = {"stt_audio_s": 61.5, "tts_characters": 420}
    assert _report(client, settings, summary="Booked a table.", usage=first)[0] == 200
    # The same totals again (a retry), then later totals and a new counter: replaced, not added.
    assert _report(client, settings, usage=first)[0] == 200
    status, body = _report(client, settings, usage={"stt_audio_s": 90.0, "llm_output_tokens": 12})
    assert status == 200
    expected = {"stt_audio_s": 90.0, "tts_characters": 420, "llm_output_tokens": 12}
    assert body == {"summary": "Booked a table.", "usage": expected}
    detail = _conversation(client, settings)
    assert detail["summary"] == "Booked a table."
    assert detail["usage"] == expected


@pytest.mark.parametrize(
    "body",
    [
        {"usage": {"stt_audio_s": -1}},
        {"usage": {"Bad Name": 1}},
        {"usage": {"x": "lots"}},
        {"usage": {f"c{i}": 1 for i in range(33)}},
        {"summary": ""},
        {"summary": "x" * 20_001},
        {"room_sid": "../RM_a"},
    ],
)
def test_invalid_reports_are_refused(
    client: TestClient, settings: Settings, body: dict[str, object]
) -> None:
    assert _report(client, settings, **body)[0] == 422


def test_counters_are_bounded_per_call(client: TestClient, settings: Settings) -> None:
    assert _report(client, settings, usage={f"a{i}": 1 for i in range(32)})[0] == 200
    assert _report(client, settings, usage={"one_more": 1})[0] == 422
    assert _report(client, settings, usage={"a0": 2})[0] == 200


def test_report_needs_a_service_token(client: TestClient, settings: Settings) -> None:
    caller = mint_caller_token(settings, TokenRequest(name="Aiko", room="r1")).token
    body = {"room_sid": "RM_a", "summary": "forged"}
    for headers, expected in [
        ({}, 401),
        (admin_headers(settings), 401),
        ({"Authorization": f"Bearer {caller}"}, 403),
    ]:
        response = client.post("/api/internal/reports", json=body, headers=headers)
        assert response.status_code == expected
