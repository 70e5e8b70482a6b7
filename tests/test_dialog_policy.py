"""A dialog call's decisions (agents/dialog/policy.py), on a fake clock: when the call ends,
how long it waits for a caller who left, when its summary is refreshed, and what an engine's
failure leads to. Pure: no event loop, no LiveKit, no sleeping."""

from __future__ import annotations

import pytest

from agents.dialog.policy import SUMMARY_EVERY_TURNS, CallLimits, CallPolicy

pytestmark = pytest.mark.unit

LIMITS = CallLimits(idle_s=60.0, max_call_s=600.0, rejoin_s=20.0)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_a_web_caller_who_left_is_waited_for_rejoin_s() -> None:
    clock, policy = FakeClock(), CallPolicy(LIMITS)
    assert policy.caller_left(clock.now, is_caller=True, phone=False, ended=False) == 20.0
    assert policy.rejoin_by == clock.now + 20.0


@pytest.mark.parametrize(("phone", "ended"), [(True, False), (False, True), (True, True)])
def test_a_phone_caller_or_one_who_ended_the_call_is_not_waited_for(
    phone: bool, ended: bool
) -> None:
    policy = CallPolicy(LIMITS)
    assert policy.caller_left(0.0, is_caller=True, phone=phone, ended=ended) == 0.0


def test_someone_else_leaving_or_a_second_departure_starts_no_wait() -> None:
    clock, policy = FakeClock(), CallPolicy(LIMITS)
    assert policy.caller_left(clock.now, is_caller=False, phone=False, ended=False) is None
    assert policy.caller_left(clock.now, is_caller=True, phone=False, ended=False) == 20.0
    clock.advance(5.0)
    # Already waiting: the first wait stands.
    assert policy.caller_left(clock.now, is_caller=True, phone=True, ended=False) is None
    assert policy.rejoin_by == clock.now - 5.0 + 20.0


def test_a_caller_who_comes_back_ends_the_wait_and_may_leave_again() -> None:
    clock, policy = FakeClock(), CallPolicy(LIMITS)
    assert not policy.caller_back(is_caller=True)  # nobody was waited for
    policy.caller_left(clock.now, is_caller=True, phone=False, ended=False)
    assert not policy.caller_back(is_caller=False)
    assert policy.caller_back(is_caller=True)
    assert policy.rejoin_by is None
    clock.advance(100.0)
    assert policy.caller_left(clock.now, is_caller=True, phone=False, ended=False) == 20.0


def test_the_call_ends_at_max_call_s_after_it_started() -> None:
    clock, policy = FakeClock(), CallPolicy(LIMITS)
    policy.start(clock.now)
    assert policy.until_limit(clock.now) == 600.0
    assert policy.until_limit(clock.advance(450.0)) == 150.0
    assert policy.until_limit(clock.advance(200.0)) == 0.0


def test_an_away_caller_is_idle_and_ends_the_call() -> None:
    policy = CallPolicy(LIMITS)
    assert [policy.on_user_state(s) for s in ("listening", "speaking", "away")] == [
        None,
        None,
        "idle",
    ]


def test_the_first_reason_to_end_wins() -> None:
    policy = CallPolicy(LIMITS)
    assert policy.end("limit")
    assert not policy.end("idle")
    assert not policy.end("limit")
    assert policy.ending == "limit"


def test_a_summary_is_due_every_n_turns_and_only_on_a_quiet_line() -> None:
    policy = CallPolicy(LIMITS)
    quiet = {"agent_state": "listening", "user_state": "listening"}
    assert policy.summary_step(turns=SUMMARY_EVERY_TURNS - 1, **quiet) == "wait"
    assert policy.summary_step(turns=SUMMARY_EVERY_TURNS, **quiet) == "refresh"
    # Someone speaks, or the agent thinks: a refresh under way gives way.
    for agent_state, user_state in [("speaking", "listening"), ("listening", "speaking")]:
        step = policy.summary_step(
            turns=SUMMARY_EVERY_TURNS, agent_state=agent_state, user_state=user_state
        )
        assert step == "yield"
    # An away caller is quiet too.
    assert (
        policy.summary_step(turns=SUMMARY_EVERY_TURNS, agent_state="listening", user_state="away")
        == "refresh"
    )
    policy.summarised(SUMMARY_EVERY_TURNS)
    assert policy.summary_step(turns=2 * SUMMARY_EVERY_TURNS - 1, **quiet) == "wait"
    assert policy.summary_step(turns=2 * SUMMARY_EVERY_TURNS, **quiet) == "refresh"


def test_gemini_gives_way_to_the_local_pipeline_once() -> None:
    policy = CallPolicy(LIMITS, has_fallback=True)
    assert policy.engine_error(recoverable=True, realtime=True, llm=False) == "retried"
    assert policy.engine_error(recoverable=False, realtime=True, llm=False) == "fallback"
    assert policy.engine_error(recoverable=False, realtime=True, llm=False) == "failed"


def test_a_failed_llm_reply_gets_an_apology_and_other_failures_nothing() -> None:
    policy = CallPolicy(LIMITS)
    assert policy.engine_error(recoverable=False, realtime=True, llm=False) == "failed"
    assert policy.engine_error(recoverable=False, realtime=False, llm=True) == "apologise"
    assert policy.engine_error(recoverable=False, realtime=False, llm=True) == "apologise"
    assert policy.engine_error(recoverable=False, realtime=False, llm=False) == "failed"
