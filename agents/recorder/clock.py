"""The room clock's rules: when ticks are due, and holding them after the last caller leaves.

Pure: no asyncio and no I/O. Every time is an argument (seconds on one monotonic clock), so
the rules are tested with a fake clock (`tests/test_recorder_clock.py`); the room recorder
(`room.py`) passes the event loop's time.

Ticks made after the last caller left are held back: if a caller comes back within the grace
(a reload) they are written and the recording goes on; if not, the recording ends where the
last caller left, not a grace period later.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

# While no caller has come, the room is looked at again this often even if nothing changed:
# a stop (the recorder shutting down) is noticed within it.
FIRST_CALLER_POLL_S = 1.0


class FirstCallerWait:
    """The wait for a room's first caller, which ends after `timeout_s`."""

    def __init__(self, now_s: float, timeout_s: float) -> None:
        self.deadline_s = now_s + timeout_s

    def next_wait_s(self, now_s: float) -> float | None:
        """How long to wait for a change in the room before looking again; None once the
        wait is over."""
        remaining = self.deadline_s - now_s
        if remaining <= 0:
            return None
        return min(remaining, FIRST_CALLER_POLL_S)


class RoomClock(Generic[T]):
    """Counts the room's ticks from `start`, and holds those made while no caller is present.

    Each round: `next_tick_in_s`, wait that long, `callers` (present or not), `due` (the
    ticks to make now), `release` (what to write of them), then `grace_over` to end. Once
    ended, `end` goes back to where the last caller left, if they did not come back.
    """

    def __init__(self, tick_s: float, end_grace_s: float) -> None:
        self.tick_s = tick_s
        self.end_grace_s = end_grace_s
        self.tick = 0  # ticks made so far; the next one made is number `tick`
        self._start_s = 0.0
        self._held: list[T] = []
        # When the last caller left, and the tick then; None while a caller is present.
        self._callers_gone: tuple[float, int] | None = None

    def start(self, now_s: float) -> None:
        self._start_s = now_s

    def next_tick_in_s(self, now_s: float) -> float:
        """How long until the next tick is due."""
        return max(0.0, self._start_s + (self.tick + 1) * self.tick_s - now_s)

    def callers(self, now_s: float, present: bool) -> None:
        """Whether a caller is in the room now (or has audio still in flight)."""
        if present:
            self._callers_gone = None
        elif self._callers_gone is None:
            self._callers_gone = (now_s, self.tick)

    def due(self, now_s: float) -> range:
        """The ticks due by `now_s` and not made yet: they count as made from now on."""
        first = self.tick
        self.tick = max(first, int((now_s - self._start_s) / self.tick_s))
        return range(first, self.tick)

    def release(self, made: list[T]) -> list[T]:
        """What to write of the ticks just made: with a caller present, everything held and
        these; with none, nothing (these are held)."""
        if self._callers_gone is None:
            if not self._held:
                return made
            released, self._held = self._held + made, []
            return released
        self._held.extend(made)
        return []

    def grace_over(self, now_s: float) -> bool:
        """The last caller left over `end_grace_s` ago and did not come back."""
        gone = self._callers_gone
        return gone is not None and now_s - gone[0] >= self.end_grace_s

    def end(self) -> bool:
        """Stop where the last caller left, if they left (whatever ended the clock during the
        wait for a return): the held ticks are dropped and `tick` goes back there. True when
        the call so ended."""
        if self._callers_gone is None:
            return False
        self.tick = self._callers_gone[1]
        self._held = []
        return True
