"""One owner for an object's background tasks: named, their failures logged, stopped in time.

Every call, agent, interpreter and recorder holds a TaskOwner instead of raw
`asyncio.create_task`: a task that fails is logged under its name at once (not as asyncio's
"exception was never retrieved" when it is collected), and closing cancels what is left and
waits for it under a deadline, naming any task that did not stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Long enough for a task to run its `finally` (a network close); short enough that a stuck
# one cannot hold up the end of a call, which LiveKit gives 15 s in all.
DEFAULT_CLOSE_TIMEOUT_S = 5.0


class TaskOwner:
    def __init__(self, logger: logging.Logger, **fields: object) -> None:
        """`fields` go into every log line about these tasks (the room, for one)."""
        self._logger = logger
        self._fields = fields
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._logger.error(
                "background task failed",
                exc_info=error,
                extra={"task": task.get_name(), **self._fields},
            )

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout_s: float) -> bool:
        """Let the tasks finish on their own, within the timeout; True when all did."""
        others = self._others()
        if not others:
            return True
        _, pending = await asyncio.wait(others, timeout=timeout_s)
        return not pending

    async def cancel(
        self, task: asyncio.Task[Any], timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S
    ) -> None:
        """Cancel one task and wait for it to stop, within the timeout."""
        await self._stop({task}, timeout_s)

    async def aclose(self, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Cancel every task (but the one calling) and wait, within the timeout, for them to
        stop; log those that did not."""
        await self._stop(self._others(), timeout_s)

    def _others(self) -> set[asyncio.Task[Any]]:
        # A task may close its own owner (a call that ends itself): it cannot wait for itself.
        return {task for task in self._tasks if task is not asyncio.current_task()}

    async def _stop(self, tasks: set[asyncio.Task[Any]], timeout_s: float) -> None:
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            self._logger.warning(
                "background tasks did not stop in time",
                extra={
                    "tasks": sorted(task.get_name() for task in pending),
                    "timeout_s": timeout_s,
                    **self._fields,
                },
            )
