"""Fixed-window rate limits with counters in Redis, so a limit holds across API instances."""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, name: str, limit: int, window_s: int) -> None:
        self._redis = client
        self._name = name
        self._limit = limit
        self._window_s = window_s

    async def hit(self, key: str) -> int | None:
        """Count one request for `key`; return seconds to wait if over the limit, else None."""
        now = time.time()
        window = int(now // self._window_s)
        counter = f"kaiwa:ratelimit:{self._name}:{key}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, self._window_s * 2)
            count, _ = await pipe.execute()
        if int(count) > self._limit:
            return max(1, math.ceil((window + 1) * self._window_s - now))
        return None
