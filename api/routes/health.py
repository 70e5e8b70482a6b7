"""GET /livez (the process answers) and GET /healthz (every component it depends on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from livekit import api as lkapi
from pydantic import BaseModel
from sqlalchemy import text

from core.presence import registered_workers_async

from ..deps import Deps, Resources

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


class ComponentHealth(BaseModel):
    ok: bool
    latency_ms: float
    detail: str = ""


class Health(BaseModel):
    ok: bool
    components: dict[str, ComponentHealth]


async def _livekit(r: Resources) -> str:
    rooms = await r.livekit.room.list_rooms(lkapi.ListRoomsRequest())
    return f"{len(rooms.rooms)} rooms"


async def _redis(r: Resources) -> str:
    await r.redis.ping()
    return "ping"


async def _s3(r: Resources) -> str:
    await run_in_threadpool(r.s3.head_bucket, Bucket=r.settings.s3_bucket)
    return f"bucket {r.settings.s3_bucket}"


async def _database(r: Resources) -> str:
    def ping() -> None:
        with r.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    await run_in_threadpool(ping)
    return r.engine.dialect.name


async def _llm(r: Resources) -> str:
    if not r.settings.llm_base_url:
        return "not configured (cloud engines)"
    base = r.settings.llm_base_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
        response = await client.get(f"{base}/health")
        response.raise_for_status()
    return "ready"


async def _agent_worker(r: Resources) -> str:
    workers = await registered_workers_async(r.redis)
    if not workers:
        raise RuntimeError("no agent worker registered")
    calls = sum(int(w.get("calls", 0)) for w in workers)
    slots = sum(int(w.get("max_calls", 0)) for w in workers)
    detail = f"{len(workers)} registered, {calls} of {slots} call slots in use"
    if calls >= slots:
        # Healthy, but at capacity: LiveKit dispatches no agent to a call that starts now.
        detail += ": full, a new call gets no agent until one ends"
    return detail


CHECKS: dict[str, Callable[[Resources], Awaitable[str]]] = {
    "livekit": _livekit,
    "redis": _redis,
    "s3": _s3,
    "database": _database,
    "llm": _llm,
    "agent_worker": _agent_worker,
}


async def _run(check: Callable[[Resources], Awaitable[str]], r: Resources) -> ComponentHealth:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(r), CHECK_TIMEOUT_S)
        ok = True
    except Exception as exc:
        detail, ok = f"{exc.__class__.__name__}: {exc}"[:300], False
    return ComponentHealth(
        ok=ok, latency_ms=round((time.perf_counter() - started) * 1000, 1), detail=detail
    )


@router.get("/livez")
async def livez() -> dict[str, Any]:
    return {"ok": True}


@router.get("/healthz", responses={503: {"model": Health}})
async def healthz(deps: Deps, response: Response) -> Health:
    results = await asyncio.gather(*(_run(check, deps) for check in CHECKS.values()))
    components = dict(zip(CHECKS, results, strict=True))
    ok = all(c.ok for c in components.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(ok=ok, components=components)
