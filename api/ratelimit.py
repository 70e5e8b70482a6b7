"""Fixed-window rate limits with counters in Redis, so a limit holds across API instances."""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis
from fastapi import HTTPException, Request, status
from redis.exceptions import RedisError


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


def client_address(request: Request) -> str:
    """The address a limit counts under (the proxy's view when FORWARDED_ALLOW_IPS trusts it)."""
    return request.client.host if request.client else "unknown"


async def enforce(limiter: RateLimiter, key: str, what: str) -> None:
    """Count a request under `key` (a client's address, a caller's identity) against
    `limiter`: 429 with Retry-After when over the limit, 503 when Redis is away. Fails
    closed: without the shared counter the limit cannot be enforced, and unlimited guessing
    is worse than no service for a while."""
    try:
        retry_after = await limiter.hit(key)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "rate limiter unavailable"
        ) from exc
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many {what}; try again later",
            headers={"Retry-After": str(retry_after)},
        )
