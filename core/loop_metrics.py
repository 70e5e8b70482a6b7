"""`kaiwa_asyncio_tasks`: the tasks alive on a process's event loops.

A task that is never awaited or cancelled (a call's helper left behind when the call ends)
is a leak that memory shows only slowly; its count shows it at once. A process registers
each loop its work runs on (the API's, the recorder's, each call's in a worker); the gauge
is read at scrape time, and a closed or collected loop drops out by itself.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class LoopTasks(Collector):
    def __init__(self) -> None:
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        # Loops run on threads of their own, and scrapes on the metrics server's.
        self._lock = threading.Lock()

    def watch(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Count the tasks of `loop` (the running one by default) from now on."""
        with self._lock:
            self._loops.add(loop or asyncio.get_running_loop())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            loops = [loop for loop in self._loops if not loop.is_closed()]
        # all_tasks() copes with tasks created while it reads them on another thread.
        total = sum(len(asyncio.all_tasks(loop)) for loop in loops)
        yield GaugeMetricFamily(
            "kaiwa_asyncio_tasks", "Asyncio tasks alive on this process's event loops", total
        )


LOOP_TASKS = LoopTasks()
REGISTRY.register(LOOP_TASKS)
