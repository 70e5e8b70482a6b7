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
from pydantic import BaseModel, Field
from sqlalchemy import text

from core.presence import registered_workers_async

from ..deps import Deps, Resources
from ..sip_health import bridge_health

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


class ComponentHealth(BaseModel):
    ok: bool
    latency_ms: float
    detail: str = ""
    degraded: bool = Field(
        default=False,
        description="Up but short of something (the SIP bridge over its CPU limit); `ok` "
        "stays true.",
    )


class Health(BaseModel):
    ok: bool
    components: dict[str, ComponentHealth]


async def _livekit(r: Resources) -> str:
    rooms = await (await r.livekit.api()).room.list_rooms(lkapi.ListRoomsRequest())
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
    # A draining worker (stopping) finishes its calls but takes no new one.
    taking = [w for w in workers if not w.get("draining")]
    calls = sum(int(w.get("calls", 0)) for w in taking)
    slots = sum(int(w.get("max_calls", 0)) for w in taking)
    detail = f"{len(workers)} registered, {calls} of {slots} call slots in use"
    if draining := len(workers) - len(taking):
        detail += f", {draining} draining"
    if not taking:
        raise RuntimeError(f"{detail}: every worker is draining, a new call gets no agent")
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


async def _sip(r: Resources) -> ComponentHealth | None:
    """The bridge (when SIP_HEALTH_URL is set) and any open dispatch rule in LiveKit, which
    is reported even with no bridge configured here: the bridge may run elsewhere."""
    started = time.perf_counter()
    url = r.settings.sip_health_url
    bridge = await bridge_health(url, CHECK_TIMEOUT_S) if url else None
    try:
        open_rules = await r.sip_rules.labels(await r.livekit.api(), CHECK_TIMEOUT_S)
        rules_detail = ""
    except Exception as exc:
        # LiveKit away is the livekit component's failure; with no SIP store (no Redis)
        # there can be no rule either.
        open_rules, rules_detail = [], f"rules not checked ({exc.__class__.__name__})"
    if bridge is None and not open_rules:
        return None  # SIP is not configured
    details = [bridge.detail if bridge else "bridge not configured (SIP_HEALTH_URL)"]
    if open_rules:
        details.append("open dispatch rule: " + ", ".join(open_rules))
    elif rules_detail:
        details.append(rules_detail)
    return ComponentHealth(
        ok=(bridge is None or bridge.state != "down") and not open_rules,
        degraded=bridge is not None and bridge.state == "degraded",
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        detail="; ".join(details),
    )


@router.get("/livez")
async def livez() -> dict[str, Any]:
    return {"ok": True}


@router.get("/healthz", responses={503: {"model": Health}})
async def healthz(deps: Deps, response: Response) -> Health:
    results, sip = await asyncio.gather(
        asyncio.gather(*(_run(check, deps) for check in CHECKS.values())), _sip(deps)
    )
    components = dict(zip(CHECKS, results, strict=True))
    if sip is not None:
        components["sip"] = sip
    ok = all(c.ok for c in components.values())
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(ok=ok, components=components)
