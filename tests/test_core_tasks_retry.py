"""The task owner and the retry policy every loop uses: pure asyncio, no servers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.retry import RETRIES, RetriesExhausted, RetryPolicy, retry
from core.tasks import TaskOwner

pytestmark = pytest.mark.unit

logger = logging.getLogger("tests.core")


async def test_a_failed_task_is_logged_under_its_name(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner(logger, room="r1")

    async def fail() -> None:
        raise RuntimeError("boom")

    task = owner.spawn(fail(), "doomed")
    await asyncio.wait([task])
    await asyncio.sleep(0)
    (record,) = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert record.task == "doomed" and record.room == "r1"  # type: ignore[attr-defined]
    assert owner.running == 0


async def test_close_cancels_what_runs_and_names_what_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = TaskOwner(logger)
    stopped = asyncio.Event()

    async def polite() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # a close that takes longer than the owner allows

    owner.spawn(polite(), "polite")
    slow = owner.spawn(slow_to_stop(), "slow")
    await asyncio.sleep(0)
    await owner.aclose(timeout_s=0.05)
    assert stopped.is_set()
    (record,) = [r for r in caplog.records if "did not stop" in r.getMessage()]
    assert record.tasks == ["slow"]  # type: ignore[attr-defined]
    await slow


async def test_a_task_may_close_its_own_owner() -> None:
    owner = TaskOwner(logger)
    other = owner.spawn(asyncio.sleep(60), "other")

    async def end() -> str:
        await owner.aclose(timeout_s=1)
        return "ended"

    assert await owner.spawn(end(), "end") == "ended"
    assert other.cancelled()


async def test_wait_lets_tasks_finish_without_cancelling() -> None:
    owner = TaskOwner(logger)
    task = owner.spawn(asyncio.sleep(0.01, result="done"), "short")
    assert await owner.wait(timeout_s=1)
    assert task.result() == "done"


def test_delays_grow_by_the_factor_up_to_the_cap_and_stop_after_the_attempts() -> None:
    policy = RetryPolicy(initial_s=0.5, factor=2, max_s=3, attempts=6)
    assert list(policy.delays()) == [0.5, 1, 2, 3, 3]


def test_a_policy_without_limits_never_runs_out() -> None:
    delays = RetryPolicy(initial_s=1, max_s=4).delays()
    assert [next(delays) for _ in range(100)][-1] == 4


async def test_retry_returns_once_the_operation_succeeds_and_counts_each_failure() -> None:
    failures = iter([ConnectionError("away"), ConnectionError("away")])
    before = RETRIES.labels(operation="test-op")._value.get()

    async def op() -> str:
        if (error := next(failures, None)) is not None:
            raise error
        return "ok"

    policy = RetryPolicy(initial_s=0.001, attempts=5)
    assert await retry(op, policy, name="test-op", logger=logger) == "ok"
    assert RETRIES.labels(operation="test-op")._value.get() - before == 2


async def test_retry_gives_up_with_the_last_error_and_never_retries_other_errors() -> None:
    async def away() -> None:
        raise ConnectionError("away")

    with pytest.raises(RetriesExhausted) as caught:
        await retry(away, RetryPolicy(initial_s=0.001, attempts=3), name="x", logger=logger)
    assert isinstance(caught.value.__cause__, ConnectionError)

    async def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry(bug, RetryPolicy(), name="x", logger=logger, retry_on=(ConnectionError,))


async def test_retry_stops_at_the_deadline() -> None:
    async def away() -> None:
        raise ConnectionError("away")

    policy = RetryPolicy(initial_s=0.02, factor=1, deadline_s=0.1)
    with pytest.raises(RetriesExhausted):
        await asyncio.wait_for(retry(away, policy, name="x", logger=logger), 2)
