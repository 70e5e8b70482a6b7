"""`kaiwa bench nodes`: agent dispatch across two LiveKit nodes, and how soon LiveKit
accepts joins again after a Redis restart and after a node's death.

It starts a stack of its own with two nodes and one agent worker, registered with node 1
(the second worker is stopped), so every job goes to it. A room placed on node 1 is then
served from its own node, one placed on node 2 across nodes: the agent's signalling is
relayed through Redis, its media goes to node 2.

- **Dispatch.** A caller's join returns (the room exists) → the caller sees the agent's
  participant. Rooms are made 3 s apart (placement reads node stats written every 2 s), so
  they alternate between the nodes; each room's node is read from the servers' logs.
- **Redis restarted.** Redis stopped for 10 s, then started: Redis answering again → the
  first join LiveKit accepts (a token from the API, then LiveKit's signalling handshake up
  to its join response), tried every 0.2 s.
- **Node death.** Node 2 SIGKILLed → the first join accepted, tried the same way, which is
  then placed on node 1. Node 2 is started again after.

Each outage is repeated `outages` times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from livekit import rtc
from websockets.asyncio.client import connect

from agents.recorder.subscriber import signal_url
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack, ephemeral_config
from kaiwa.stack.workers import room_nodes

from .common import median

NODE_STATS_S = 3.0
TRY_EVERY_S = 0.2
ATTEMPT_TIMEOUT_S = 5.0
GIVE_UP_S = 60.0
REDIS_DOWN_S = 10.0
# No model's output is measured here: the small LLM starts soonest.
LLM = "qwen2.5-0.5b-instruct"


async def _dispatch(caller: SyntheticCaller) -> float:
    """Join, then wait for the agent: the seconds from the room's creation to the agent."""
    grant = await caller.request_token()
    await caller.connect(grant)
    created = time.monotonic()
    while not caller.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT):
        if time.monotonic() - created > GIVE_UP_S:
            raise TimeoutError(f"no agent in {caller.room_name}")
        await asyncio.sleep(0.01)
    return time.monotonic() - created


async def _first_join(stack: Stack, since: float) -> dict[str, Any]:
    """A new join every TRY_EVERY_S until LiveKit accepts one: seconds from `since`
    (monotonic), the failed tries, and the node the room went to.

    A join is the API's token, then LiveKit's signalling handshake, answered with the join
    response once the room is placed on a node: the SDK's own retries and backoff would
    measure themselves, not the server."""
    failed: list[str] = []
    async with httpx.AsyncClient(base_url=stack.cfg.api_url, timeout=ATTEMPT_TIMEOUT_S) as api:
        while time.monotonic() - since < GIVE_UP_S:
            tried_at = time.monotonic() - since
            try:
                answer = await api.post("/api/token", json={"name": "Probe", "mode": "interpret"})
                answer.raise_for_status()
                grant = answer.json()
                async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                    async with connect(signal_url(grant["url"], grant["token"])) as signal_ws:
                        await signal_ws.recv()  # the join response
            except Exception as exc:  # refused, unreachable or timed out: the next try
                failed.append(f"{tried_at:.1f} s: {exc.__class__.__name__} {str(exc)[:60]}")
                await asyncio.sleep(TRY_EVERY_S)
                continue
            return {
                "through_s": round(time.monotonic() - since, 2),
                "failed_tries": failed,
                "node": room_nodes(stack).get(grant["room"]),
            }
    return {"through_s": None, "failed_tries": failed, "node": None}


async def _measure(stack: Stack, rooms: int, outages: int) -> dict[str, Any]:
    callers: list[SyntheticCaller] = []
    try:
        # Every job to the worker of node 1.
        await asyncio.to_thread(stack.services["agent-2"].stop)
        dispatched: list[tuple[str, float]] = []
        for number in range(rooms):
            caller = SyntheticCaller(stack.cfg.api_url, name=f"Caller {number}", mode="interpret")
            callers.append(caller)
            seconds = await _dispatch(caller)
            dispatched.append((caller.room_name or "", seconds))
            await asyncio.sleep(NODE_STATS_S)
        nodes = room_nodes(stack)
        own = [s for room, s in dispatched if nodes.get(room) == 1]
        other = [s for room, s in dispatched if nodes.get(room) == 2]
        await _hang_up(callers)

        after_redis, after_node_death = [], []
        for _ in range(outages):
            after_redis.append(await _redis_restarted(stack))
            after_node_death.append(await _node_killed(stack))
    finally:
        await asyncio.gather(*(c.leave() for c in callers), return_exceptions=True)
    return {
        "rooms": rooms,
        "dispatch_own_node_s": _summary(own),
        "dispatch_other_node_s": _summary(other),
        "redis_back_to_first_join_s": _summary(_through(after_redis)),
        "node_killed_to_first_join_s": _summary(_through(after_node_death)),
        "redis_restarts": after_redis,
        "node_deaths": after_node_death,
    }


def _through(outcomes: list[dict[str, Any]]) -> list[float]:
    return [o["through_s"] for o in outcomes if o["through_s"] is not None]


async def _redis_restarted(stack: Stack) -> dict[str, Any]:
    """Redis stopped REDIS_DOWN_S, started: from its answering again to a join accepted."""
    redis = stack.services["redis"]
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(REDIS_DOWN_S)
    await asyncio.to_thread(redis.start)
    await asyncio.to_thread(redis.wait_ready)
    return await _first_join(stack, time.monotonic())


async def _node_killed(stack: Stack) -> dict[str, Any]:
    """Node 2 SIGKILLed: from the kill to a join accepted. Then node 2 starts again, and its
    stats are fresh before the next round."""
    second = stack.services["livekit-2"]
    assert second.proc is not None
    os.kill(second.proc.pid, signal.SIGKILL)
    outcome = await _first_join(stack, time.monotonic())
    await asyncio.to_thread(second.start)
    await asyncio.to_thread(second.wait_ready)
    await asyncio.sleep(NODE_STATS_S)
    return outcome


async def _hang_up(callers: list[SyntheticCaller]) -> None:
    await asyncio.gather(*(c.leave() for c in callers), return_exceptions=True)
    callers.clear()


def _summary(seconds: list[float]) -> dict[str, Any]:
    return {
        "median": median(seconds),
        "max": round(max(seconds), 3) if seconds else None,
        "n": len(seconds),
    }


async def run(rooms: int, outages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state_dir:
        cfg = replace(
            ephemeral_config(Path(state_dir), llm_model=LLM),
            livekit_nodes=2,
            extra_env={"TOKEN_RATE_LIMIT": "10000"},
        )
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            figures = await _measure(stack, rooms, outages)
        finally:
            await asyncio.to_thread(stack.stop)
    return figures | {"machine_cpus": os.cpu_count()}
