"""Which agent workers are registered: the keys each worker refreshes in Redis.

The open-source LiveKit server has no API that lists agent workers, so each worker writes a
short-lived key after it registers (agents/worker.py Heartbeat); a dead worker's key expires.
The API's /healthz, `kaiwa up` and the tests read them here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio

from .protocol import WORKER_KEY_PREFIX


def _decoded(values: Iterable[bytes | str | None]) -> list[dict[str, Any]]:
    # A key may expire between the scan and the read: its worker has just gone.
    return [json.loads(raw) for raw in values if raw]


def registered_workers(client: redis.Redis) -> list[dict[str, Any]]:
    keys = list(client.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100))
    return _decoded(client.mget(keys)) if keys else []


async def registered_workers_async(client: redis.asyncio.Redis) -> list[dict[str, Any]]:
    keys = [key async for key in client.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100)]
    return _decoded(await client.mget(keys)) if keys else []
