"""Which rooms lost their agent, and how often one room gets a new one: on a fake clock."""

from __future__ import annotations

import pytest

from agents.watchdog.policy import (
    DISPATCH_WAIT_S,
    ORPHAN_MIN_AGE_S,
    REDISPATCH_LIMIT,
    UNTAKEN_WAIT_S,
    Participant,
    RoomView,
    Watch,
)

pytestmark = pytest.mark.unit

CALLER = Participant("caller-1", "standard")
PHONE = Participant("sip_+15550100", "sip")
RECORDER = Participant("recorder-abc", "standard")
AGENT = Participant("agent-AJ_1", "agent")


def room(*people: Participant, age_s: float = 10.0, sid: str = "RM_1") -> RoomView:
    return RoomView(sid=sid, name="room", age_s=age_s, participants=people)


def test_a_caller_without_a_live_lease_is_orphaned_once_the_room_is_old_enough() -> None:
    watch = Watch()
    assert watch.orphaned(room(CALLER, AGENT), lease_live=False, now=100)
    assert not watch.orphaned(room(CALLER, AGENT), lease_live=True, now=100)
    young = room(CALLER, age_s=ORPHAN_MIN_AGE_S - 0.5)
    assert not watch.orphaned(young, lease_live=False, now=100)
    assert watch.orphaned(room(PHONE), lease_live=False, now=100)


def test_rooms_without_a_person_are_left_alone() -> None:
    watch = Watch()
    # The recorder and a frozen agent are not callers; an empty room may be a dead node's.
    assert not watch.orphaned(room(RECORDER, AGENT), lease_live=False, now=100)
    assert not watch.orphaned(room(), lease_live=False, now=100)
    # Nor may a caller pose as one of ours by identity.
    posing = Participant("agent-fake", "standard")
    assert not watch.orphaned(room(posing), lease_live=False, now=100)


def lose(watch: Watch, view: RoomView, now: float) -> str:
    """The room's agent was live, then its lease went: what the watchdog does."""
    watch.orphaned(view, lease_live=True, now=now)
    assert watch.orphaned(view, lease_live=False, now=now + DISPATCH_WAIT_S)
    return watch.step(view, now=now + DISPATCH_WAIT_S)


def test_a_new_agent_is_given_time_to_join_before_the_room_counts_again() -> None:
    watch = Watch()
    orphan = room(CALLER)
    assert watch.step(orphan, now=100) == "redispatch"
    assert watch.awaiting_worker(orphan.sid)
    watch.taken(orphan.sid)
    assert not watch.awaiting_worker(orphan.sid)
    assert not watch.orphaned(orphan, lease_live=False, now=100 + DISPATCH_WAIT_S - 1)
    assert watch.orphaned(orphan, lease_live=False, now=100 + DISPATCH_WAIT_S)


def test_a_dispatch_no_worker_took_is_made_again_sooner() -> None:
    """The only worker is restarting, or LiveKit offered the job to a paused one: the next
    dispatch need not wait for an agent that is not coming."""
    watch = Watch()
    orphan = room(CALLER)
    assert UNTAKEN_WAIT_S < DISPATCH_WAIT_S
    assert watch.step(orphan, now=100) == "redispatch"
    assert not watch.orphaned(orphan, lease_live=False, now=100 + UNTAKEN_WAIT_S - 1)
    assert watch.orphaned(orphan, lease_live=False, now=100 + UNTAKEN_WAIT_S)
    # Each new dispatch is awaited afresh: taken, its agent gets the longer wait.
    assert watch.step(orphan, now=100 + UNTAKEN_WAIT_S) == "redispatch"
    watch.taken(orphan.sid)
    assert not watch.orphaned(orphan, lease_live=False, now=100 + 2 * UNTAKEN_WAIT_S)
    # An agent that took its lease shows its dispatch was taken.
    assert watch.step(orphan, now=200) == "redispatch"
    assert not watch.orphaned(orphan, lease_live=True, now=200.5)
    assert not watch.awaiting_worker(orphan.sid)


def test_after_the_limit_the_caller_hears_an_apology_and_a_phone_is_hung_up() -> None:
    watch = Watch()
    browser, phone = room(CALLER, sid="RM_b"), room(PHONE, sid="RM_p")
    steps = [lose(watch, browser, now=100 + 20 * i) for i in range(REDISPATCH_LIMIT + 1)]
    assert steps == ["redispatch"] * REDISPATCH_LIMIT + ["apologise"]
    # The agent sent to apologise never comes: the call is ended.
    assert watch.orphaned(browser, lease_live=False, now=180)
    assert watch.step(browser, now=180) == "end"
    steps = [lose(watch, phone, now=100 + 20 * i) for i in range(REDISPATCH_LIMIT + 1)]
    assert steps == ["redispatch"] * REDISPATCH_LIMIT + ["end"]


def test_a_dispatch_no_worker_took_is_retried_without_counting() -> None:
    """All workers were full: the call waits for a free one, however long, and is not
    ended for it."""
    watch = Watch()
    waiting = room(CALLER)
    for i in range(REDISPATCH_LIMIT * 3):
        now = 100 + DISPATCH_WAIT_S * i
        assert watch.orphaned(waiting, lease_live=False, now=now)
        assert watch.step(waiting, now=now) == "redispatch"


def test_the_limit_counts_within_its_window_only() -> None:
    watch = Watch(window_s=300)
    orphan = room(CALLER)
    for i in range(REDISPATCH_LIMIT):
        assert lose(watch, orphan, now=100 + 20 * i) == "redispatch"
    assert lose(watch, orphan, now=100 + 20 * REDISPATCH_LIMIT + 300) == "redispatch"


def test_after_a_redis_outage_leases_get_a_ttl_to_come_back() -> None:
    watch = Watch(redis_settle_s=3)
    watch.redis_failed()
    watch.redis_ok(now=200)
    assert not watch.orphaned(room(CALLER), lease_live=False, now=201)
    assert watch.orphaned(room(CALLER), lease_live=False, now=203)


def test_gone_rooms_are_forgotten() -> None:
    watch = Watch()
    watch.step(room(CALLER, sid="RM_gone"), now=100)
    watch.forget(set())
    assert watch.orphaned(room(CALLER, sid="RM_gone"), lease_live=False, now=101)
