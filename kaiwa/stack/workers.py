"""Several agent workers on one stack, and which of them serves a call: for the tests and
benches that kill, pause or drain the worker under a live call."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import redis.asyncio as aioredis
from livekit import api as lkapi

from core.livekit_nodes import NodeAPIs
from core.presence import registered_workers_async
from core.protocol import call_lease_key

from .process import ManagedProcess
from .services import Stack, agent_service

WORKERS = 2


def start_worker(stack: Stack, number: int, **env: str) -> ManagedProcess:
    """Worker `number` of the stack, started (again) with `env` over the stack's settings."""
    cfg = replace(stack.cfg, extra_env={**stack.cfg.extra_env, **env})
    service = agent_service(cfg, number)
    stack.services[service.name] = service
    service.start()
    service.wait_ready()
    return service


async def ensure_workers(stack: Stack, count: int = WORKERS) -> None:
    """Workers 1 to `count` running: a test may have killed one."""
    for number in range(1, count + 1):
        name = "agent" if number == 1 else f"agent-{number}"
        service = stack.services.get(name)
        if service is None or not service.running():
            await asyncio.to_thread(start_worker, stack, number)


async def room_sid(stack: Stack, room_name: str) -> str:
    cfg = stack.cfg
    livekit = NodeAPIs(
        cfg.livekit_node_urls, cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
    )
    try:
        listed = await (await livekit.api()).room.list_rooms(
            lkapi.ListRoomsRequest(names=[room_name])
        )
        (room,) = listed.rooms
        return str(room.sid)
    finally:
        await livekit.aclose()


async def serving_worker(stack: Stack, room_name: str, timeout_s: float = 15) -> ManagedProcess:
    """The worker whose agent holds the call's lease."""
    sid = await room_sid(stack, room_name)
    client = aioredis.Redis.from_url(stack.cfg.redis_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            lease = await client.get(call_lease_key(sid))
            if lease is not None:
                worker_id = json.loads(lease)["worker_id"]
                pids = {w["worker_id"]: w["pid"] for w in await registered_workers_async(client)}
                for service in stack.services.values():
                    if service.proc is not None and service.proc.pid == pids.get(worker_id):
                        return service
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no worker holds the lease of {room_name} ({sid})")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def room_nodes(stack: Stack) -> dict[str, int]:
    """Each room's LiveKit node (1 or 2), from the servers' own logs: no API names a room's
    node. Node ids are random per start, so each node's id is read from its start-up line."""
    ids: dict[str, int] = {}
    placements: list[tuple[float, str, str]] = []
    for node, name in ((1, "livekit"), (2, "livekit-2")):
        for line in Path(stack.services[name].log_path).read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("msg") == "starting LiveKit server":
                ids[entry["nodeID"]] = node
            elif entry.get("msg") == "selected node for room":
                placements.append((entry["ts"], entry["room"], entry["selectedNodeID"]))
    # A room re-created after its node died is placed again: the latest placement counts.
    placed = {room: node_id for _, room, node_id in sorted(placements)}
    return {room: ids[node_id] for room, node_id in placed.items() if node_id in ids}
