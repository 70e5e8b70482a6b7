"""The whole stack as users run it: token, join, agent dispatch, webhooks into the store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import redis
from livekit import api as lkapi
from livekit import rtc

from core.presence import registered_workers
from core.protocol import WORKER_KEY_REFRESH_S
from core.webhooks import sign_webhook
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack

from .support import events

pytestmark = pytest.mark.e2e


def db_rows(cfg: StackConfig, query: str, *args: object) -> list[tuple[object, ...]]:
    path = cfg.effective_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


async def wait_until(predicate: object, timeout_s: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_healthz_reports_every_component(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.cfg.api_url) as client:
        response = await client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["components"]) == {
        "livekit",
        "redis",
        "s3",
        "database",
        "llm",
        "agent_worker",
        "sip",
    }
    assert all(c["ok"] for c in body["components"].values())


async def test_caller_joins_agent_is_dispatched_and_webhooks_land_once(stack: Stack) -> None:
    cfg = stack.cfg
    caller = SyntheticCaller(cfg.api_url, name="Aiko", mode="dialog", language="ja")
    await caller.join()
    try:
        agent = await caller.wait_for_agent(timeout_s=30)
        await wait_until(lambda: agent.attributes.get("lk.agent.state") == "listening")
        assert agent.attributes.get("kaiwa.mode") == "dialog"
        room_name = caller.room_name

        # Calls are recorded by default: the recorder joins too, hidden from callers.
        def recording_active() -> bool:
            return bool(
                db_rows(
                    cfg,
                    "SELECT 1 FROM recordings r JOIN conversations c ON c.id = r.conversation_id "
                    "WHERE c.room_name = ? AND r.kind = 'room' AND r.status = 'active'",
                    room_name,
                )
            )

        await wait_until(recording_active, timeout_s=30)
    finally:
        await caller.leave()

    # End the room now rather than waiting out departure_timeout.
    async with lkapi.LiveKitAPI(
        cfg.livekit_url.replace("ws", "http"),
        cfg.secrets.livekit_api_key,
        cfg.secrets.livekit_api_secret,
    ) as lk:
        await lk.room.delete_room(lkapi.DeleteRoomRequest(room=room_name))

    def conversation_finished() -> bool:
        rows = db_rows(cfg, "SELECT ended_at FROM conversations WHERE room_name = ?", room_name)
        return bool(rows) and rows[0][0] is not None

    await wait_until(conversation_finished, timeout_s=30)
    (conversation,) = db_rows(
        cfg, "SELECT id, room_sid, mode FROM conversations WHERE room_name = ?", room_name
    )
    conversation_id, room_sid, mode = conversation
    assert mode == "dialog"
    people = db_rows(
        cfg,
        "SELECT identity, kind, language, joined_at IS NOT NULL FROM participants "
        "WHERE conversation_id = ? ORDER BY kind",
        conversation_id,
    )
    kinds = sorted(str(kind) for _, kind, _, _ in people)
    assert kinds == ["agent", "standard"], people
    caller_row = next(p for p in people if p[1] == "standard")
    assert caller_row[0] == caller.identity and caller_row[2] == "ja" and caller_row[3] == 1
    # Every delivered event is there once; the ones users rely on are there at all.
    counted = db_rows(
        cfg,
        "SELECT event, COUNT(*) FROM webhook_events WHERE room_sid = ? GROUP BY event",
        room_sid,
    )
    by_event = {row[0]: row[1] for row in counted}
    assert by_event.get("room_started") == 1
    # The caller, the agent and the recorder; the recorder is not a participant of the call.
    assert by_event.get("participant_joined") == 3
    assert by_event.get("room_finished") == 1
    ids = db_rows(cfg, "SELECT id FROM webhook_events WHERE room_sid = ?", room_sid)
    assert len(ids) == len(set(ids))


async def test_forged_and_replayed_webhooks_at_the_endpoint(stack: Stack) -> None:
    cfg = stack.cfg
    key, secret = cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
    room = events.room(sid="RM_forgery", name="forgery")
    evt = events.event("room_started", room=room)
    body = events.as_body(evt)
    headers = {"Content-Type": "application/webhook+json"}
    async with httpx.AsyncClient(base_url=cfg.api_url) as client:

        async def post(data: bytes, auth: str) -> httpx.Response:
            return await client.post(
                "/livekit/webhook", content=data, headers={**headers, "Authorization": auth}
            )

        tampered = body.replace(b"forgery", b"forgerx")
        assert (await post(tampered, sign_webhook(body, key, secret))).status_code == 401
        expired = sign_webhook(body, key, secret, ttl_s=-600)
        assert (await post(body, expired)).status_code == 401
        assert (await post(body, sign_webhook(body, key, "f" * 40))).status_code == 401
        assert (await post(body, "")).status_code == 401
        assert db_rows(cfg, "SELECT 1 FROM webhook_events WHERE id = ?", evt.id) == []
        assert db_rows(cfg, "SELECT 1 FROM conversations WHERE room_sid = 'RM_forgery'") == []

        huge = b"{" + b" " * (2 << 20) + b"}"
        assert (await post(huge, sign_webhook(huge, key, secret))).status_code == 413

        first = await post(body, sign_webhook(body, key, secret))
        again = await post(body, sign_webhook(body, key, secret))
        assert first.status_code == again.status_code == 200
        assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert len(db_rows(cfg, "SELECT 1 FROM webhook_events WHERE id = ?", evt.id)) == 1
    assert len(db_rows(cfg, "SELECT 1 FROM conversations WHERE room_sid = 'RM_forgery'")) == 1


async def test_room_code_must_name_a_call_with_room_to_join(stack: Stack) -> None:
    cfg = stack.cfg
    secrets = cfg.secrets
    async with httpx.AsyncClient(base_url=cfg.api_url) as client:
        missing = await client.post("/api/token", json={"name": "Noa", "room": "no-such-call"})
        assert missing.status_code == 404
        assert "no-such-call" in missing.json()["detail"]

        name = f"full-{time.monotonic_ns()}"
        async with lkapi.LiveKitAPI(
            cfg.livekit_url, secrets.livekit_api_key, secrets.livekit_api_secret
        ) as lk:
            await lk.room.create_room(lkapi.CreateRoomRequest(name=name, max_participants=1))
            first = rtc.Room()
            token = (
                lkapi.AccessToken(secrets.livekit_api_key, secrets.livekit_api_secret)
                .with_identity("first")
                .with_grants(lkapi.VideoGrants(room_join=True, room=name))
                .to_jwt()
            )
            await first.connect(cfg.livekit_url, token)
            try:
                full = await client.post("/api/token", json={"name": "Noa", "room": name})
                assert full.status_code == 409, full.text
            finally:
                await first.disconnect()
                await lk.room.delete_room(lkapi.DeleteRoomRequest(room=name))


async def test_token_for_room_a_cannot_enter_room_b(stack: Stack) -> None:
    cfg = stack.cfg
    # Each makes a room of their own.
    alice = SyntheticCaller(cfg.api_url, name="Alice", mode="interpret")
    bob = SyntheticCaller(cfg.api_url, name="Bob", mode="interpret")
    await alice.join()
    await bob.join()
    try:
        assert alice.room_name and bob.room_name and alice.room_name != bob.room_name
        assert alice.room.name == alice.room_name and bob.room.name == bob.room_name
        await asyncio.sleep(1)
        assert bob.identity not in {p.identity for p in alice.remote()}
        assert alice.identity not in {p.identity for p in bob.remote()}

        # Rewriting the room claim breaks the signature: the server refuses the token.
        header, payload, signature = alice.grant["token"].split(".")
        claims = json.loads(_b64decode(payload))
        claims["video"]["room"] = bob.room_name
        forged = ".".join([header, _b64encode(json.dumps(claims).encode()), signature])
        intruder = rtc.Room()
        with pytest.raises(Exception):  # noqa: B017 - the SDK raises ConnectError
            await intruder.connect(cfg.livekit_url, forged)
        assert alice.identity not in {p.identity for p in bob.remote()}
    finally:
        await alice.leave()
        await bob.leave()


async def test_caller_token_opens_no_server_api(stack: Stack) -> None:
    cfg = stack.cfg
    caller = SyntheticCaller(cfg.api_url, name="Eve")
    grant = await caller.request_token()
    http = cfg.livekit_url.replace("ws://", "http://")
    async with httpx.AsyncClient(base_url=http) as client:
        for method in ("ListRooms", "DeleteRoom"):
            response = await client.post(
                f"/twirp/livekit.RoomService/{method}",
                json={"room": grant["room"]},
                headers={"Authorization": f"Bearer {grant['token']}"},
            )
            assert response.status_code in (401, 403), (method, response.text)
        response = await client.post(
            "/twirp/livekit.Egress/StartRoomCompositeEgress",
            json={"room_name": grant["room"]},
            headers={"Authorization": f"Bearer {grant['token']}"},
        )
        assert response.status_code in (401, 403, 404)


async def test_token_requests_are_validated(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.cfg.api_url) as client:
        bad_room = await client.post("/api/token", json={"name": "x", "room": "../../etc"})
        assert bad_room.status_code == 422
        reserved = await client.post("/api/token", json={"name": "x", "identity": "agent-1"})
        assert reserved.status_code == 422
        good = await client.post("/api/token", json={"name": "x", "language": "vi"})
        assert good.status_code == 200
        assert good.headers["cache-control"] == "no-store"
        assert set(good.json()) == {"url", "token", "room", "identity", "expires_at", "rejoin"}


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_stack_logs_are_written_per_service(stack: Stack) -> None:
    for name in ("redis", "livekit", "s3", "llm", "api", "agent"):
        assert Path(stack.services[name].log_path).stat().st_size > 0, name


async def test_engines_load_once_per_worker_process(stack: Stack) -> None:
    """Two calls in a row: the worker that served them loaded each engine once, at start."""
    cfg = stack.cfg
    client = redis.Redis.from_url(cfg.redis_url)
    agent = stack.services["agent"].proc
    assert agent is not None
    expected = {"stt:whisper-base", "vad:silero", "tts:en", "tts:ja"}

    def worker() -> dict[str, object]:
        (info,) = [w for w in registered_workers(client) if w["pid"] == agent.pid]
        return info

    loads = []
    for call in range(2):
        caller = SyntheticCaller(cfg.api_url, name=f"Caller {call}", mode="dialog")
        await caller.join()
        try:
            await caller.wait_for_agent(timeout_s=30)
        finally:
            await caller.leave()
        await wait_until(lambda: expected <= set(worker()["engines"]), timeout_s=60)  # type: ignore[call-overload]
        await asyncio.sleep(WORKER_KEY_REFRESH_S + 1)  # let the presence record catch up
        info = worker()
        loads.append((info["loads"], len(info["engines"])))  # type: ignore[arg-type]
    # Each engine loaded once (earlier tests' calls may have loaded more languages' voices),
    # and the second call loaded nothing.
    assert loads[0] == loads[1] and loads[0][0] == loads[0][1], loads
