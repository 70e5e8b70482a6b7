"""The room clock's rules on a fake clock: ticks, the hold after the last caller leaves, a
caller's return within the grace, the end, and the wait for the first caller."""

from __future__ import annotations

import pytest

from agents.recorder.clock import FIRST_CALLER_POLL_S, FirstCallerWait, RoomClock

pytestmark = pytest.mark.unit

TICK_S = 0.2
GRACE_S = 5.0
START_S = 1000.0


def started() -> RoomClock[str]:
    clock: RoomClock[str] = RoomClock(TICK_S, GRACE_S)
    clock.start(START_S)
    return clock


def at(ms: int) -> float:
    """The fake clock: `ms` milliseconds after the start. The tests keep off exact tick
    boundaries, where float rounding, not a rule, decides."""
    return START_S + ms / 1000


def round_at(clock: RoomClock[str], ms: int, present: bool) -> list[str]:
    """One round of the recorder's loop: the ticks it would write now."""
    clock.callers(at(ms), present)
    return clock.release([f"tick {tick}" for tick in clock.due(at(ms))])


def test_ticks_are_due_on_the_tick_and_a_late_round_makes_all_it_missed() -> None:
    clock = started()
    assert clock.next_tick_in_s(at(0)) == pytest.approx(0.2)
    assert clock.due(at(199)) == range(0, 0)
    assert clock.due(at(201)) == range(0, 1)
    assert clock.next_tick_in_s(at(250)) == pytest.approx(0.15)
    assert clock.due(at(250)) == range(1, 1)  # nothing twice
    assert clock.due(at(1050)) == range(1, 5)  # a slow round: the missed ticks, in order
    assert clock.tick == 5
    assert clock.next_tick_in_s(at(1300)) == 0.0  # already due: no waiting


def test_with_callers_present_every_tick_is_written_at_once() -> None:
    clock = started()
    assert round_at(clock, 210, present=True) == ["tick 0"]
    assert round_at(clock, 610, present=True) == ["tick 1", "tick 2"]
    assert not clock.grace_over(at(60_000))
    assert not clock.end()
    assert clock.tick == 3


def test_ticks_after_the_last_caller_left_are_held() -> None:
    clock = started()
    round_at(clock, 410, present=True)
    assert round_at(clock, 610, present=False) == []
    assert round_at(clock, 1010, present=False) == []
    assert clock.tick == 5  # made, not written
    assert not clock.grace_over(at(610 + 4999))


def test_a_caller_back_within_the_grace_keeps_one_recording() -> None:
    clock = started()
    round_at(clock, 410, present=True)
    round_at(clock, 610, present=False)  # left: tick 2 held
    round_at(clock, 3010, present=False)  # ticks 3..14 held
    # Back (a reload) before the grace ran out: the silence in between is written, in order.
    back = round_at(clock, 3210, present=True)
    assert back == [f"tick {tick}" for tick in range(2, 16)]
    assert not clock.grace_over(at(610 + 5001))
    assert not clock.end()
    assert clock.tick == 16


def test_the_call_ends_where_the_last_caller_left_once_the_grace_is_over() -> None:
    clock = started()
    round_at(clock, 410, present=True)  # ticks 0, 1 written
    round_at(clock, 610, present=False)  # the last caller left at tick 2
    round_at(clock, 5410, present=False)
    assert not clock.grace_over(at(5609))
    round_at(clock, 5611, present=False)
    assert clock.grace_over(at(5611))
    # The held ticks are dropped: the recording ends at tick 2, not a grace period later.
    assert clock.end()
    assert clock.tick == 2


def test_a_stop_during_the_hold_still_ends_where_the_last_caller_left() -> None:
    clock = started()
    round_at(clock, 1010, present=True)
    round_at(clock, 1210, present=False)
    round_at(clock, 2010, present=False)
    # The recorder stopped (a shutdown) before the grace was over: the call had ended anyway.
    assert not clock.grace_over(at(2010))
    assert clock.end()
    assert clock.tick == 5


def test_the_hold_starts_again_after_each_return() -> None:
    clock = started()
    round_at(clock, 210, present=False)
    round_at(clock, 4010, present=True)  # back: the hold is off
    round_at(clock, 6010, present=False)  # left again at tick 20
    assert not clock.grace_over(at(6010 + 4999))  # measured from the second leaving
    assert clock.grace_over(at(6010 + 5001))
    assert clock.end()
    assert clock.tick == 20


def test_the_wait_for_the_first_caller_looks_again_each_second_until_its_timeout() -> None:
    wait = FirstCallerWait(at(0), timeout_s=2.5)
    assert wait.next_wait_s(at(0)) == FIRST_CALLER_POLL_S
    assert wait.next_wait_s(at(2000)) == pytest.approx(0.5)
    assert wait.next_wait_s(at(2500)) is None
    assert wait.next_wait_s(at(9000)) is None
