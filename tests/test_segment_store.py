"""Each posted segment is settled on its own, and an agent's segments outlive a refused key.

The API answers per segment (stored, duplicate, refused with a reason); the agent's
`SegmentStore` drops only what was refused, and keeps retrying through auth failures until
the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from agents.history_client import SegmentStore
from api.admin_auth import mint_admin_token
from api.settings import Settings
from kaiwa.stack.config import StackConfig
from kaiwa.stack.postgres import PostgresCluster, fresh_postgres_database, postgres_cluster
from kaiwa.stack.process import free_port
from kaiwa.stack.services import api_service

from .support.apiclient import admin_headers, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration


def stored_ids(client: TestClient, settings: Settings, room_sid: str) -> list[str]:
    listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
    (conversation,) = [c for c in listing["items"] if c["room_sid"] == room_sid]
    transcript = client.get(
        f"/api/conversations/{conversation['id']}/transcript", headers=admin_headers(settings)
    ).json()
    return [str(s["id"]) for s in transcript["segments"]]


def test_an_invalid_and_a_foreign_segment_cost_no_other(
    client: TestClient, settings: Settings
) -> None:
    post_segments(client, settings, "RM_other", [seg("taken", "Elsewhere", 0.0)])
    batch = [seg(f"s-{i}", f"line {i}", float(i)) for i in range(50)]
    batch[10] = {**batch[10], "text": "x" * 4001}  # too long
    batch[30] = seg("taken", "Hello", 30.0)  # an id another conversation holds

    answer = post_segments(client, settings, "RM_a", batch)

    assert (answer["stored"], answer["duplicates"], answer["refused"]) == (48, 0, 2)
    results = answer["results"]
    assert [r["id"] for r in results] == [s["id"] for s in batch]
    refused = {r["id"]: r["reason"] for r in results if r["result"] == "refused"}
    assert refused.keys() == {"s-10", "taken"}
    # The reason names the field and the rule, never the value posted.
    assert refused["s-10"].startswith("text:") and "xxxx" not in refused["s-10"]
    assert "another conversation" in refused["taken"]
    expected = [s["id"] for i, s in enumerate(batch) if i not in (10, 30)]
    assert stored_ids(client, settings, "RM_a") == expected
    # Posting the batch again: the 48 are duplicates, the same two refused.
    again = post_segments(client, settings, "RM_a", batch)
    assert (again["stored"], again["duplicates"], again["refused"]) == (0, 48, 2)


def test_an_item_without_a_valid_id_is_refused_by_position(
    client: TestClient, settings: Settings
) -> None:
    batch = [seg("s-1", "Hello", 0.0), {**seg("s-2", "Hi", 1.0), "id": "../x"}, {"text": 3}]
    answer = post_segments(client, settings, "RM_a", batch)
    assert [(r["id"], r["result"]) for r in answer["results"]] == [
        ("s-1", "stored"),
        (None, "refused"),
        (None, "refused"),
    ]
    assert "../x" not in answer["results"][1]["reason"]


@pytest.fixture
def api_config(services_config: StackConfig, redis_url: str, tmp_path: Path) -> StackConfig:
    """A standalone API process on the session's Redis, with a database of its own."""
    return replace(
        services_config,
        state_dir=tmp_path,
        ports=replace(services_config.ports, api=free_port()),
        database_url=f"sqlite:///{tmp_path / 'kaiwa.db'}",
    )


@contextlib.asynccontextmanager
async def running_api(config: StackConfig) -> AsyncIterator[None]:
    """The API as its own process, as agents reach it over HTTP."""
    api = api_service(config)
    await asyncio.to_thread(api.start)
    try:
        await asyncio.to_thread(api.wait_ready)
        yield
    finally:
        await asyncio.to_thread(api.stop)


def rotated(config: StackConfig) -> StackConfig:
    """The same stack after its service key was rotated (on the API's side only)."""
    secrets = config.secrets
    return replace(
        config, secrets=replace(secrets, livekit_api_secret=secrets.livekit_api_secret[::-1])
    )


def started_store(config: StackConfig, room_sid: str) -> SegmentStore:
    """An agent's store, holding the service key from before any rotation."""
    secrets = config.secrets
    store = SegmentStore(
        config.api_url,
        secrets.livekit_api_key,
        secrets.livekit_api_secret,
        room_sid=room_sid,
        room_name=room_sid.lower(),
    )
    store.start()
    return store


async def test_a_key_rotated_mid_call_loses_no_segment(api_config: StackConfig) -> None:
    """The API restarts with a new service key; the agent still has the old one. Segments
    are kept and retried, and all are stored once the keys agree again."""
    store = started_store(api_config, "RM_rotated")
    try:
        async with running_api(api_config):
            for i in range(10):
                store.add(seg(f"before-{i}", f"line {i}", float(i)))
            await store.flush(timeout_s=20)
            assert store.stored == 10

        async with running_api(rotated(api_config)):
            for i in range(20):
                store.add(seg(f"during-{i}", f"line {i}", 10.0 + i))
            await asyncio.sleep(2.0)  # several posts, each refused: 401
            assert store.pending == 20 and store.stored == 10 and store.refused == 0

        # The key is right again (here: the API back on the key the agent has).
        async with running_api(api_config):
            await store.aclose(timeout_s=30)
            assert store.pending == 0 and store.stored == 30 and store.refused == 0
    finally:
        await store.aclose(timeout_s=0)


async def test_segments_left_when_the_call_ends_are_counted_as_lost(
    api_config: StackConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A key that never comes right: the store gives up at the end of the call, and says how
    many segments it could not deliver."""
    async with running_api(rotated(api_config)):
        store = started_store(api_config, "RM_lost")
        for i in range(3):
            store.add(seg(f"s-{i}", f"line {i}", float(i)))
        with caplog.at_level("ERROR", logger="kaiwa.history"):
            await store.aclose(timeout_s=1.5)
    (record,) = [r for r in caplog.records if "segments lost" in r.getMessage()]
    assert record.__dict__["lost"] == 3
    assert store.stored == 0


async def test_a_batch_over_the_body_limit_is_posted_in_smaller_ones(
    api_config: StackConfig,
) -> None:
    """Long texts: the API's body limit (413) makes the store post fewer at a time, and
    nothing is dropped."""
    async with running_api(
        replace(api_config, extra_env={**api_config.extra_env, "MAX_BODY_BYTES": "20000"})
    ):
        store = started_store(api_config, "RM_long")
        for i in range(30):
            store.add(seg(f"long-{i}", "word " * 400, float(i)))  # 2 KB each, 60 KB in all
        await store.aclose(timeout_s=30)
    assert store.pending == 0 and store.stored == 30 and store.refused == 0


async def transcript_ids(config: StackConfig, room_sid: str) -> list[str]:
    """The stored segment ids of a room, read as an admin from the API process."""
    token, _ = mint_admin_token(
        config.secrets.livekit_api_secret, config.secrets.admin_password, 600
    )
    async with httpx.AsyncClient(
        base_url=config.api_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        listing = (await client.get("/api/conversations")).json()
        (conversation,) = [c for c in listing["items"] if c["room_sid"] == room_sid]
        body = (await client.get(f"/api/conversations/{conversation['id']}/transcript")).json()
    return [str(s["id"]) for s in body["segments"]]


async def test_the_api_down_10_s_mid_call_loses_no_segment_and_stores_each_once(
    api_config: StackConfig,
) -> None:
    store = started_store(api_config, "RM_api_down")
    try:
        async with running_api(api_config):
            for i in range(5):
                store.add(seg(f"before-{i}", f"line {i}", float(i)))
            await store.flush(timeout_s=20)
        # The API is gone (a restart, a deploy) while the call goes on.
        for i in range(5):
            store.add(seg(f"during-{i}", f"line {i}", 5.0 + i))
            await asyncio.sleep(2.0)
        assert store.pending == 5
        async with running_api(api_config):
            await store.flush(timeout_s=30)
            ids = await transcript_ids(api_config, "RM_api_down")
        assert store.pending == 0 and store.stored == 10 and store.refused == 0
        assert sorted(ids) == sorted({*ids}) and len(ids) == 10
    finally:
        await store.aclose(timeout_s=0)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL of this module's own, which a test stops and starts again."""
    with postgres_cluster() as cluster:
        yield cluster


async def test_postgresql_down_30_s_is_a_503_and_loses_no_acknowledged_row(
    api_config: StackConfig, postgres: PostgresCluster
) -> None:
    database = await asyncio.to_thread(fresh_postgres_database, postgres.url, "kaiwa_outage")
    config = replace(api_config, database_url=database)
    store = started_store(config, "RM_pg_down")
    token, _ = mint_admin_token(
        config.secrets.livekit_api_secret, config.secrets.admin_password, 600
    )
    admin = {"Authorization": f"Bearer {token}"}
    try:
        async with running_api(config), httpx.AsyncClient(base_url=config.api_url) as client:
            for i in range(5):
                store.add(seg(f"before-{i}", f"line {i}", float(i)))
            await store.flush(timeout_s=20)
            assert store.stored == 5  # acknowledged

            await asyncio.to_thread(postgres.server.stop)
            started = asyncio.get_running_loop().time()
            down = await client.get("/api/conversations", headers=admin)
            assert down.status_code == 503, down.text  # never a 500
            assert down.headers["retry-after"]
            for i in range(5):
                store.add(seg(f"during-{i}", f"line {i}", 5.0 + i))
            await asyncio.sleep(30 - (asyncio.get_running_loop().time() - started))
            assert store.pending == 5 and store.stored == 5  # kept, retried

            await asyncio.to_thread(postgres.server.start)
            await asyncio.to_thread(postgres.server.wait_ready)
            await store.flush(timeout_s=40)
            ids = await transcript_ids(config, "RM_pg_down")
        assert store.pending == 0 and store.stored == 10 and store.refused == 0
        assert len(ids) == len(set(ids)) == 10
    finally:
        await store.aclose(timeout_s=0)


@pytest.mark.parametrize(
    "timings",
    [
        {"speech_to_text": 0.5},  # not a stage of the ledger
        {"translation.<b>": 0.5},  # not a language
        {"final_transcript": -1.0},
        {"final_transcript": 1e9},
        {f"translation.l{i:02d}": 0.1 for i in range(40)},
    ],
)
def test_a_ledger_out_of_shape_is_refused_on_its_own(
    client: TestClient, settings: Settings, timings: dict[str, float]
) -> None:
    batch = [seg("s-1", "Hello", 0.0), {**seg("s-2", "Hi", 1.0), "timings": timings}]
    answer = post_segments(client, settings, "RM_a", batch)
    assert [(r["id"], r["result"]) for r in answer["results"]] == [
        ("s-1", "stored"),
        ("s-2", "refused"),
    ]
    assert answer["results"][1]["reason"].startswith("timings")
