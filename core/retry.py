"""One retry policy and one helper for every loop that waits for a dependency to come back.

A policy without a limit retries until the work is cancelled (the end of a call, a
shutdown): that is right for data already acknowledged to a caller (a recording on local
disk, segments in an agent's buffer), and each failure is logged and counted in
`kaiwa_retries_total`, so "retrying forever" never happens silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter

from .errors import KaiwaError

T = TypeVar("T")

RETRIES = Counter(
    "kaiwa_retries",
    "Failed attempts that were retried, by operation",
    ["operation"],
)


class RetriesExhausted(KaiwaError):
    """The policy's attempts or deadline ran out; `__cause__` is the last failure."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `initial_s`, times `factor` after each failure, at most `max_s`.
    Stops after `attempts` tries or `deadline_s` seconds, whichever comes first; with
    neither, it never stops."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    attempts: int | None = None
    deadline_s: float | None = None

    def delays(self) -> Iterator[float]:
        """The waits between attempts, ending where the policy gives up."""
        delay, tries = self.initial_s, 1
        while self.attempts is None or tries < self.attempts:
            yield delay
            delay, tries = min(delay * self.factor, self.max_s), tries + 1


# Storage and delivery of what was acknowledged: until cancelled.
UNTIL_CANCELLED = RetryPolicy(initial_s=0.5, max_s=30.0)


async def retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    name: str,
    logger: logging.Logger,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    message: str = "failed; retrying",
    **fields: object,
) -> T:
    """Run `operation` until it returns, waiting out `policy` between failures of the types
    in `retry_on` (anything else propagates at once), and logging each failure as `message`
    (fixed text; the operation, attempt and error are fields). Raises RetriesExhausted when
    the policy gives up."""
    started = time.monotonic()
    delays = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except retry_on as exc:
            delay = next(delays, None)
            spent = time.monotonic() - started
            if delay is None or (
                policy.deadline_s is not None and spent + delay > policy.deadline_s
            ):
                raise RetriesExhausted(f"{name}: gave up after {attempt} attempts") from exc
            RETRIES.labels(operation=name).inc()
            logger.warning(
                message,
                extra={
                    "operation": name,
                    "attempt": attempt,
                    "retry_in_s": delay,
                    "error": str(exc)[:300],
                    **fields,
                },
            )
        await asyncio.sleep(delay)
