"""What the watchdog decides, apart from the servers it asks: which rooms lost their agent,
and how often one room may get a new one. Pure, so it is tested on a fake clock."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Literal

from core.protocol import CALL_LEASE_TTL_S, RESERVED_IDENTITY_PREFIXES

# A room this young may still be waiting for its first agent's join.
ORPHAN_MIN_AGE_S = 3.0
# After a dispatch a worker took, the new agent's join and lease are given this long before
# the room may count as orphaned again (a job that started takes its lease within a second
# of joining).
DISPATCH_WAIT_S = 8.0
# A dispatch no worker has taken after this is made again. LiveKit drops a dispatch when no
# worker is registered (the only one is restarting), and offers one to a paused worker, which
# stays registered, for 10 s before giving up on it; a live worker takes it in well under a
# second. Should a slow one still take the first, its agent finds the room's generation moved
# on and leaves before it speaks.
UNTAKEN_WAIT_S = 3.0
# At most this many new agents per room within the window; then the caller is told.
REDISPATCH_LIMIT = 3
REDISPATCH_WINDOW_S = 300.0


@dataclass(frozen=True)
class Participant:
    identity: str
    kind: Literal["standard", "sip", "agent", "other"]


@dataclass(frozen=True)
class RoomView:
    sid: str
    name: str
    age_s: float
    participants: tuple[Participant, ...]

    @property
    def callers(self) -> list[Participant]:
        """People in the call: a browser or app participant (not one of the platform's own,
        such as the recorder) or a phone."""
        return [
            p
            for p in self.participants
            if p.kind == "sip"
            or (p.kind == "standard" and not p.identity.startswith(RESERVED_IDENTITY_PREFIXES))
        ]

    @property
    def agents(self) -> list[Participant]:
        return [p for p in self.participants if p.kind == "agent"]

    @property
    def phone(self) -> bool:
        return any(p.kind == "sip" for p in self.callers)


Step = Literal["redispatch", "apologise", "end"]


class Watch:
    """The rooms the watchdog has acted on: when each last got an agent, and how often one
    that had a live agent lost it."""

    def __init__(
        self,
        *,
        limit: int = REDISPATCH_LIMIT,
        window_s: float = REDISPATCH_WINDOW_S,
        dispatch_wait_s: float = DISPATCH_WAIT_S,
        untaken_wait_s: float = UNTAKEN_WAIT_S,
        min_age_s: float = ORPHAN_MIN_AGE_S,
        redis_settle_s: float = CALL_LEASE_TTL_S,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.dispatch_wait_s = dispatch_wait_s
        self.untaken_wait_s = untaken_wait_s
        self.min_age_s = min_age_s
        self.redis_settle_s = redis_settle_s
        self._lost: dict[str, deque[float]] = defaultdict(deque)
        self._dispatched_at: dict[str, float] = {}
        # Rooms whose last dispatch a worker took: an agent is on its way.
        self._taken: set[str] = set()
        # Rooms seen with a live agent since their last dispatch: losing it counts.
        self._served: set[str] = set()
        self._redis_back_at: float | None = 0.0

    def redis_failed(self) -> None:
        self._redis_back_at = None

    def redis_ok(self, now: float) -> None:
        if self._redis_back_at is None:
            self._redis_back_at = now

    def orphaned(self, room: RoomView, *, lease_live: bool, now: float) -> bool:
        """A caller and no live agent, past the time an agent's join may take."""
        if lease_live:
            self._served.add(room.sid)
            if room.sid in self._dispatched_at:
                self._taken.add(room.sid)
            return False
        if not room.callers or room.age_s < self.min_age_s:
            return False
        # After a Redis outage every lease is gone until its job refreshes it (each second).
        if self._redis_back_at is None or now - self._redis_back_at < self.redis_settle_s:
            return False
        dispatched = self._dispatched_at.get(room.sid)
        if dispatched is None:
            return True
        wait = self.dispatch_wait_s if room.sid in self._taken else self.untaken_wait_s
        return now - dispatched >= wait

    def awaiting_worker(self, sid: str) -> bool:
        """Whether the room's last dispatch has not been taken by a worker yet."""
        return sid in self._dispatched_at and sid not in self._taken

    def taken(self, sid: str) -> None:
        """A worker took the room's last dispatch: its agent is given time to join."""
        self._taken.add(sid)

    def step(self, room: RoomView, now: float) -> Step:
        """What to do for an orphaned room, counted as done. A room whose last dispatch no
        worker took (all were full) is simply dispatched again; a room that lost a live agent
        counts against the limit."""
        self._dispatched_at[room.sid] = now
        self._taken.discard(room.sid)
        lost = self._lost[room.sid]
        while lost and now - lost[0] > self.window_s:
            lost.popleft()
        if room.sid not in self._served:
            # Its last dispatch was not taken: all workers were full, or the agent sent to
            # apologise never came (then the call is ended).
            return "end" if len(lost) > self.limit else "redispatch"
        self._served.discard(room.sid)
        lost.append(now)
        if len(lost) <= self.limit:
            return "redispatch"
        # Past the limit the workers keep failing this call: the next agent only apologises
        # and ends it; a phone caller, who sees no caption, is hung up on.
        if len(lost) == self.limit + 1 and not room.phone:
            return "apologise"
        return "end"

    def forget(self, live_sids: set[str]) -> None:
        """Rooms that are gone need no record."""
        for sid in set(self._lost) - live_sids:
            del self._lost[sid]
        for sid in set(self._dispatched_at) - live_sids:
            del self._dispatched_at[sid]
        self._served &= live_sids
        self._taken &= live_sids
