"""Worker presence in Redis, so /healthz and `kaiwa up` can tell a worker is registered.

The open-source LiveKit server has no API that lists agent workers, so each worker writes a
short-lived key after it registers and refreshes it; a dead worker's key expires. This module
imports nothing from livekit so the API can read the same keys.
"""

from __future__ import annotations

import json
from typing import Any

import redis

KEY_PREFIX = "kaiwa:agent-workers:"
TTL_S = 15
REFRESH_S = 5


def worker_key(worker_id: str) -> str:
    return f"{KEY_PREFIX}{worker_id}"


def registered_workers(client: redis.Redis) -> list[dict[str, Any]]:
    workers = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=100):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    return workers
