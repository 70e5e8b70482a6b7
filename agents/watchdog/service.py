"""The watchdog's loop: one active instance (a Redis lock), each second a look at every room.

For an orphaned room (policy.py) it
1. counts the room's next generation (`kaiwa:call:<sid>:gen`), which fences the old agent
   out should it only have been paused;
2. removes the dead agent's participant, so callers stop showing its frozen state;
3. dispatches a new agent with the room's original dispatch metadata, plus `resume` and the
   generation: the agent restores the call from the history API instead of greeting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from livekit import api as lkapi
from prometheus_client import Counter, start_http_server
from pydantic import Field

from core.presence import registered_workers_async
from core.protocol import (
    AGENT_NAME,
    APOLOGY_KEY,
    CALL_GENERATION_TTL_S,
    GENERATION_KEY,
    RESUME_KEY,
    call_generation_key,
    call_lease_key,
)
from core.settings import LiveKitSettings, RedisSettings

from .policy import Participant, RoomView, Step, Watch

logger = logging.getLogger("kaiwa.watchdog")

LOCK_KEY = "kaiwa:watchdog:lock"
LOCK_TTL_MS = 5000
# Refreshes the lock only while this instance holds it.
_REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
"""

REDISPATCHES = Counter(
    "kaiwa_agent_redispatch",
    "Rooms whose agent was lost, by what the watchdog did: redispatched, apologise (an agent "
    "sent to apologise and end the call), ended, waiting (no worker had a free slot), failed.",
    ["result"],
)


class WatchdogSettings(LiveKitSettings, RedisSettings):
    watchdog_interval_s: float = Field(
        default=1.0, gt=0, description="How often the watchdog looks at every room."
    )
    watchdog_metrics_port: int = Field(
        default=0, ge=0, description="Port of the watchdog's Prometheus metrics (0: none)."
    )
    watchdog_metrics_host: str = Field(
        default="127.0.0.1", description="Address of the watchdog's Prometheus metrics."
    )


def participant_kind(kind: int) -> Any:
    kinds = lkapi.ParticipantInfo.Kind
    return {
        kinds.STANDARD: "standard",
        kinds.SIP: "sip",
        kinds.AGENT: "agent",
    }.get(kind, "other")  # type: ignore[call-overload]


class Watchdog:
    def __init__(self, settings: WatchdogSettings) -> None:
        self.settings = settings
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        self.watch = Watch()
        self.active = False
        self._waiting: set[str] = set()
        self._dispatches: dict[str, dict[str, Any] | None] = {}
        # Each room's last dispatch, by its id, until a worker is seen to have taken it.
        self._untaken: dict[str, str] = {}

    async def run(self, stop: asyncio.Event) -> None:
        # Any node lists every room (through Redis): the first that answers is asked, so a
        # dead node does not blind the watchdog.
        livekit = self.settings.livekit_apis()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if await self._hold_lock():
                        await self.check(await livekit.api())
                except aioredis.RedisError as exc:
                    self.watch.redis_failed()
                    logger.warning("watchdog cannot reach Redis", extra={"error": str(exc)})
                except Exception:
                    # LiveKit away, a room gone mid-look: the next round looks again.
                    logger.exception("watchdog round failed")
                wait = self.settings.watchdog_interval_s - (time.monotonic() - started)
                if wait > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                    except TimeoutError:
                        pass
        finally:
            await livekit.aclose()
        if self.active:
            await self.redis.eval(_RELEASE_LOCK, 1, LOCK_KEY, self.instance)
        await self.redis.aclose()

    async def _hold_lock(self) -> bool:
        if self.active:
            self.active = bool(
                await self.redis.eval(_REFRESH_LOCK, 1, LOCK_KEY, self.instance, str(LOCK_TTL_MS))
            )
        if not self.active:
            self.active = bool(
                await self.redis.set(LOCK_KEY, self.instance, nx=True, px=LOCK_TTL_MS)
            )
            if self.active:
                logger.info("watchdog active", extra={"instance": self.instance})
        return self.active

    async def check(self, livekit: lkapi.LiveKitAPI) -> None:
        """One look at every room: its lease, and the participants of those without one."""
        rooms = [
            room
            for room in (await livekit.room.list_rooms(lkapi.ListRoomsRequest())).rooms
            # Also the stale entries of a dead node (livekit/livekit#3766).
            if room.num_participants > 0
        ]
        now = time.monotonic()
        leases = await self.redis.mget([call_lease_key(r.sid) for r in rooms]) if rooms else []
        self.watch.redis_ok(now)
        live_sids = {room.sid for room in rooms}
        self.watch.forget(live_sids)
        self._waiting &= live_sids
        for sid in set(self._dispatches) - live_sids:
            del self._dispatches[sid]
        for sid in set(self._untaken) - live_sids:
            del self._untaken[sid]
        for room, lease in zip(rooms, leases, strict=True):
            participants: tuple[Participant, ...] = ()
            if lease is None:
                listed = await livekit.room.list_participants(
                    lkapi.ListParticipantsRequest(room=room.name)
                )
                participants = tuple(
                    Participant(p.identity, participant_kind(p.kind)) for p in listed.participants
                )
            created_s = (
                room.creation_time_ms / 1000 if room.creation_time_ms else room.creation_time
            )
            view = RoomView(
                sid=room.sid,
                name=room.name,
                age_s=max(0.0, time.time() - created_s),
                participants=participants,
            )
            if lease is None and await self._taken_by_a_worker(livekit, view):
                self.watch.taken(view.sid)
            if self.watch.orphaned(view, lease_live=lease is not None, now=now):
                dispatch = await self._kaiwa_dispatch(livekit, view)
                if dispatch is not None:
                    await self.recover(livekit, view, dispatch, now)

    async def recover(
        self, livekit: lkapi.LiveKitAPI, room: RoomView, dispatch: dict[str, Any], now: float
    ) -> None:
        if not await self._free_slot():
            # LiveKit would drop the dispatch: wait for a worker to free up, and say so once.
            if room.sid not in self._waiting:
                self._waiting.add(room.sid)
                REDISPATCHES.labels("waiting").inc()
                logger.warning(
                    "a call has no agent and no worker has a free slot",
                    extra={"room": room.name, "room_sid": room.sid},
                )
            return
        self._waiting.discard(room.sid)
        logger.warning(
            "a call has no live agent",
            extra={"room": room.name, "room_sid": room.sid, "agents": len(room.agents)},
        )
        step = self.watch.step(room, now)
        try:
            await self._act(livekit, room, dispatch, step)
        except (lkapi.TwirpError, aioredis.RedisError, OSError) as exc:
            REDISPATCHES.labels("failed").inc()
            logger.error(
                "could not give a call a new agent",
                extra={"room": room.name, "room_sid": room.sid, "error": str(exc)},
            )

    async def _act(
        self, livekit: lkapi.LiveKitAPI, room: RoomView, dispatch: dict[str, Any], step: Step
    ) -> None:
        if step == "end":
            await livekit.room.delete_room(lkapi.DeleteRoomRequest(room=room.name))
            REDISPATCHES.labels("ended").inc()
            logger.error(
                "the call kept losing its agent; ended",
                extra={"room": room.name, "room_sid": room.sid},
            )
            return
        generation = int(await self.redis.incr(call_generation_key(room.sid)))
        await self.redis.expire(call_generation_key(room.sid), CALL_GENERATION_TTL_S)
        for agent in room.agents:
            try:
                await livekit.room.remove_participant(
                    lkapi.RoomParticipantIdentity(room=room.name, identity=agent.identity)
                )
            except lkapi.TwirpError:
                pass  # it left on its own meanwhile
        metadata = {**dispatch, RESUME_KEY: True, GENERATION_KEY: generation}
        if step == "apologise":
            metadata[APOLOGY_KEY] = True
        created = await livekit.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(
                agent_name=AGENT_NAME, room=room.name, metadata=json.dumps(metadata)
            )
        )
        self._untaken[room.sid] = created.id
        result = "redispatched" if step == "redispatch" else "apologise"
        REDISPATCHES.labels(result).inc()
        logger.info(
            "a new agent is dispatched",
            extra={
                "room": room.name,
                "room_sid": room.sid,
                "generation": generation,
                "result": result,
                "removed_agents": len(room.agents),
            },
        )

    async def _taken_by_a_worker(self, livekit: lkapi.LiveKitAPI, room: RoomView) -> bool:
        """Whether a worker took the room's last dispatch: LiveKit lists a job under the
        dispatch once a worker accepted it, and none for a dispatch it found no worker for."""
        dispatch_id = self._untaken.get(room.sid)
        if dispatch_id is None or not self.watch.awaiting_worker(room.sid):
            return False
        for record in await livekit.agent_dispatch.list_dispatch(room.name):
            if record.id == dispatch_id and record.state.jobs:
                del self._untaken[room.sid]
                return True
        return False

    async def _kaiwa_dispatch(
        self, livekit: lkapi.LiveKitAPI, room: RoomView
    ) -> dict[str, Any] | None:
        """The metadata of the room's first dispatch to Kaiwa's agent (the mode and scenario
        its caller's token or phone rule chose), or None for a room that was never meant to
        have one (another agent's, or none): those are not the watchdog's. Read once per
        room: a dispatch record does not change."""
        if room.sid not in self._dispatches:
            found: dict[str, Any] | None = None
            for record in await livekit.agent_dispatch.list_dispatch(room.name):
                if record.agent_name != AGENT_NAME:
                    continue
                try:
                    metadata = json.loads(record.metadata or "{}")
                except json.JSONDecodeError:
                    metadata = {}
                if isinstance(metadata, dict) and not metadata.get(RESUME_KEY):
                    found = {k: v for k, v in metadata.items() if k != APOLOGY_KEY}
                    break
            self._dispatches[room.sid] = found
        return self._dispatches[room.sid]

    async def _free_slot(self) -> bool:
        workers = await registered_workers_async(self.redis)
        return any(
            not w.get("draining") and int(w.get("calls", 0)) < int(w.get("max_calls", 0))
            for w in workers
        )


_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def main() -> None:
    from core.logs import setup_logging

    setup_logging()
    settings = WatchdogSettings()
    if settings.watchdog_metrics_port:
        start_http_server(settings.watchdog_metrics_port, addr=settings.watchdog_metrics_host)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Watchdog(settings).run(stop)

    asyncio.run(serve())
