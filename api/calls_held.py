"""The calls one client address holds: each new room brings an agent, so an address may hold
only so many at once (CALLS_PER_ADDRESS), and a new one past that is refused with 429.

A call is held from its token's minting until it ends: while its room is in LiveKit, and
before that while its token could still create it (a token is a promise of a room). One that
started and is gone, or whose token expired unused, is forgotten. The rooms an address made
live in Redis (a sorted set by minting time), so the cap holds across API instances.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection

import redis.asyncio as aioredis

# No call is held longer than this (the rejoin ticket's life): entries past it are dropped
# whatever LiveKit says, so a lost room-finished never holds an address's place for ever.
MAX_CALL_S = 6 * 3600
# What a refused client is told to wait: calls end in minutes, not seconds.
RETRY_AFTER_S = 60

RoomsLookup = Callable[[list[str]], Awaitable[Collection[str]]]


class CallsHeld:
    def __init__(self, client: aioredis.Redis, *, limit: int, pending_s: int) -> None:
        self._redis = client
        self._limit = limit
        self._pending_s = pending_s

    async def admit(
        self, address: str, room: str, *, live: RoomsLookup, started: RoomsLookup
    ) -> int | None:
        """Count `room` as one more call held by `address`; None if within the limit, else
        the seconds to wait (and `room` is not counted). `live` says which rooms are in
        LiveKit now, `started` which ever began (the history's rooms).

        Raises RedisError: without the shared count the cap cannot hold (the route fails
        closed, as the rate limits do)."""
        key = f"kaiwa:calls-held:{address}"
        now = time.time()
        # Counted before the others are looked at: two requests at once both see each other,
        # and both may be refused, never both admitted past the cap.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - MAX_CALL_S)
            pipe.zadd(key, {room: now})
            pipe.expire(key, MAX_CALL_S)
            pipe.zrange(key, 0, -1, withscores=True)
            *_, entries = await pipe.execute()
        others = {
            (name.decode() if isinstance(name, bytes) else str(name)): float(minted)
            for name, minted in entries
        }
        others.pop(room, None)
        if len(others) + 1 <= self._limit:
            return None  # within the cap even if every other one is still held
        held = await self._still_held(others, now, live=live, started=started)
        if gone := set(others) - held:
            await self._redis.zrem(key, *gone)
        if len(held) + 1 <= self._limit:
            return None
        await self._redis.zrem(key, room)
        return RETRY_AFTER_S

    async def _still_held(
        self, minted_at: dict[str, float], now: float, *, live: RoomsLookup, started: RoomsLookup
    ) -> set[str]:
        if not minted_at:
            return set()
        names = sorted(minted_at)
        held = set(await live(names))
        waiting = [n for n in names if n not in held and minted_at[n] > now - self._pending_s]
        if waiting:
            # A room not yet in LiveKit whose token could still create it, unless it already
            # began and ended.
            held |= set(waiting) - set(await started(waiting))
        return held
