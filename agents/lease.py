"""A call's lease: proof, in Redis, that a live agent serves the room.

Open-source LiveKit restarts no agent after its worker dies (a dead worker's jobs are
dropped), and a SIGKILLed agent stays in the room ~15 s before LiveKit notices. So each job
holds `kaiwa:call:<room sid>` with a short expiry and refreshes it every second; the watchdog
(agents/watchdog) dispatches a new agent to a room whose caller has no live lease.

Every agent of a room has a generation, counted in `kaiwa:call:<room sid>:gen`: each job
takes the next one when it starts, and the watchdog counts one more before it dispatches (so
the agent it replaces is fenced out at once). A job whose generation is behind the room's
has been replaced (it was paused, not dead, or its node died and the room was re-created on
another) and leaves at once; the history API fences its writes the same way (409).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis.asyncio as aioredis

from core.protocol import (
    CALL_GENERATION_TTL_S,
    CALL_LEASE_REFRESH_S,
    CALL_LEASE_TTL_S,
    call_generation_key,
    call_lease_key,
)

logger = logging.getLogger("kaiwa.agents.lease")

# Takes or refreshes the lease unless the room has moved on to a newer agent: its counter is
# past ours, or another job of our generation holds the lease (a duplicate dispatch).
# KEYS: lease, generation counter. ARGV: lease JSON, our generation, our job id, expiry ms.
# Returns 1 when held, 0 when lost.
_HOLD = """
local generation = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') > generation then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local held = cjson.decode(current)
  if held.generation > generation then return 0 end
  if held.generation == generation and held.job_id ~= ARGV[3] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return 1
"""
# The room's next generation (0 for its first agent), and never one below the dispatch's (a
# counter lost with Redis's data must not put a new agent behind the one it replaces).
# KEYS: counter. ARGV: our generation, the counter's expiry in seconds.
_NEXT_GENERATION = """
local generation = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  generation = redis.call('INCR', KEYS[1])
else
  redis.call('SET', KEYS[1], 0)
end
if generation < tonumber(ARGV[1]) then
  generation = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], generation)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return generation
"""
# Deletes the lease only while it is ours: a successor's must stay.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).job_id == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class LeaseHolder:
    worker_id: str
    job_id: str
    agent_identity: str
    generation: int

    def json(self) -> str:
        return json.dumps(
            {
                "worker_id": self.worker_id,
                "job_id": self.job_id,
                "agent_identity": self.agent_identity,
                "generation": self.generation,
            }
        )


class CallLease:
    """Holds the room's lease for this job until released; calls `on_lost` (once) when a
    newer agent has the room."""

    def __init__(
        self,
        redis: aioredis.Redis,
        room_sid: str,
        holder: LeaseHolder,
        *,
        on_lost: Callable[[], None],
        ttl_s: float = CALL_LEASE_TTL_S,
        refresh_s: float = CALL_LEASE_REFRESH_S,
    ) -> None:
        self._redis = redis
        self._keys = [call_lease_key(room_sid), call_generation_key(room_sid)]
        self.holder = holder
        self._on_lost = on_lost
        self._ttl_ms = int(ttl_s * 1000)
        self._refresh_s = refresh_s
        self.lost = False

    async def take_next_generation(self) -> int:
        """Become the room's newest agent: the next generation from its counter. Any agent
        before this one is then behind and leaves at its next refresh. A Redis error
        propagates, and the job keeps the generation it was dispatched with."""
        generation = await self._redis.eval(
            _NEXT_GENERATION,
            1,
            self._keys[1],
            str(self.holder.generation),
            str(CALL_GENERATION_TTL_S),
        )
        self.holder = replace(self.holder, generation=int(generation))
        return self.holder.generation

    async def hold_once(self) -> bool:
        """Take or refresh the lease. False once a newer agent has the room. A Redis error
        propagates: the caller keeps serving and tries again (the call is not the lease's)."""
        held = await self._redis.eval(
            _HOLD,
            2,
            *self._keys,
            self.holder.json(),
            str(self.holder.generation),
            self.holder.job_id,
            str(self._ttl_ms),
        )
        if not held and not self.lost:
            self.lost = True
            logger.warning(
                "a newer agent has this call; leaving it",
                extra={"job_id": self.holder.job_id, "generation": self.holder.generation},
            )
            self._on_lost()
        return bool(held)

    async def hold(self) -> None:
        """Refresh every `refresh_s` until the lease is lost or the task is cancelled."""
        failing = False
        while not self.lost:
            try:
                await self.hold_once()
                if failing:
                    logger.info("call lease refreshed again")
                failing = False
            except aioredis.RedisError as exc:
                if not failing:
                    # The call goes on; the watchdog cannot see it until Redis is back.
                    logger.warning("call lease not refreshed", extra={"error": str(exc)})
                failing = True
            await asyncio.sleep(self._refresh_s)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def release(self) -> None:
        """The call ended normally: nobody needs to take it over."""
        try:
            await self._redis.eval(_RELEASE, 1, self._keys[0], self.holder.job_id)
        except aioredis.RedisError as exc:  # it expires on its own within the TTL
            logger.warning("call lease not released", extra={"error": str(exc)})
