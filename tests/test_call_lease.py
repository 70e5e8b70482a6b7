"""A call's lease in a real Redis: held by one agent, taken over by a newer generation, and
the old agent told to leave."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from agents.lease import CallLease, LeaseHolder
from core.protocol import call_generation_key, call_lease_key

pytestmark = pytest.mark.integration


def holder(job: str, generation: int) -> LeaseHolder:
    return LeaseHolder(
        worker_id="AW_1", job_id=job, agent_identity=f"agent-{job}", generation=generation
    )


async def test_the_lease_is_held_refreshed_expires_and_is_released(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lost: list[str] = []
    lease = CallLease(client, "RM_lease1", holder("AJ_1", 0), on_lost=lambda: lost.append("1"))
    lease._ttl_ms = 400
    assert await lease.hold_once()
    held = json.loads(await client.get(call_lease_key("RM_lease1")))
    assert held == {
        "worker_id": "AW_1",
        "job_id": "AJ_1",
        "agent_identity": "agent-AJ_1",
        "generation": 0,
    }
    await asyncio.sleep(0.6)  # a dead agent's lease goes on its own
    assert await client.get(call_lease_key("RM_lease1")) is None
    assert await lease.hold_once()  # alive again after a pause: it takes it back
    await lease.release()
    assert await client.get(call_lease_key("RM_lease1")) is None
    assert lost == []
    await client.aclose()


async def test_a_newer_generation_fences_the_old_agent_out(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    lost: list[int] = []
    old = CallLease(client, "RM_lease2", holder("AJ_old", 0), on_lost=lambda: lost.append(0))
    assert await old.hold_once()
    # The watchdog counts the next generation before it dispatches: the old agent, paused
    # until now, loses the room at its next refresh, even before its successor joins.
    await client.incr(call_generation_key("RM_lease2"))
    assert not await old.hold_once()
    assert lost == [0] and old.lost
    new = CallLease(client, "RM_lease2", holder("AJ_new", 1), on_lost=lambda: lost.append(1))
    assert await new.hold_once()
    await old.release()  # the old one's release leaves its successor's lease alone
    assert json.loads(await client.get(call_lease_key("RM_lease2")))["job_id"] == "AJ_new"
    assert lost == [0]
    await client.aclose()


async def test_a_duplicate_dispatch_of_the_same_generation_leaves(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    first = CallLease(client, "RM_lease3", holder("AJ_a", 0), on_lost=lambda: None)
    second = CallLease(client, "RM_lease3", holder("AJ_b", 0), on_lost=lambda: None)
    assert await first.hold_once()
    assert not await second.hold_once()
    assert await first.hold_once()
    await client.aclose()


async def test_each_new_agent_takes_the_next_generation_and_the_old_one_leaves(
    redis_url: str,
) -> None:
    """A room re-created on another node after its node died is dispatched again by LiveKit
    with its first dispatch's metadata (generation 0), while the old agent still holds the
    lease, reconnecting to the dead node: the new job's own count puts it ahead."""
    client = aioredis.Redis.from_url(redis_url)
    old = CallLease(client, "RM_lease5", holder("AJ_old", 0), on_lost=lambda: None)
    assert await old.take_next_generation() == 0  # the room's first agent
    assert await old.hold_once()
    new = CallLease(client, "RM_lease5", holder("AJ_new", 0), on_lost=lambda: None)
    assert await new.take_next_generation() == 1
    assert await new.hold_once()
    assert not await old.hold_once() and old.lost
    # A watchdog's dispatch names the generation it counted: the job never goes below it.
    await client.set(call_generation_key("RM_lease5"), 1)
    sent = CallLease(client, "RM_lease5", holder("AJ_sent", 7), on_lost=lambda: None)
    assert await sent.take_next_generation() == 7
    assert int(await client.get(call_generation_key("RM_lease5"))) == 7
    await client.aclose()


async def test_the_holder_keeps_serving_through_a_redis_error(redis_url: str) -> None:
    """A lease that cannot be written is not a lost call: `hold` logs and tries again."""
    broken = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    lease = CallLease(broken, "RM_lease4", holder("AJ_x", 0), on_lost=lambda: None)
    lease._refresh_s = 0.05
    task = asyncio.create_task(lease.hold())
    await asyncio.sleep(0.3)
    assert not task.done() and not lease.lost
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await broken.aclose()
