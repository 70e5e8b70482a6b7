"""`kaiwa bench --cpus N`: the bench, and every process it starts, get N cores' worth of CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kaiwa.bench.cpu_share import CpuShareError, limit_cpu

pytestmark = pytest.mark.integration

# Takes one core's worth, then keeps two child processes busy for WALL_S and reports the CPU
# time they used, as the bench's stack would use it.
BUSY_CHILDREN = """
import resource, subprocess, sys
from kaiwa.bench.cpu_share import limit_cpu
print(limit_cpu(1), flush=True)
spin = "import time\\nend = time.monotonic() + %s\\nwhile time.monotonic() < end: pass"
children = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
for child in children:
    child.wait()
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(used.ru_utime + used.ru_stime)
"""
WALL_S = 3.0


def test_two_busy_processes_share_one_core_worth() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUSY_CHILDREN % WALL_S],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    how, used = done.stdout.split("\n")[:2]
    assert how.startswith("1 cpu ("), how
    # Two processes spinning for 3 s use 6 s of CPU on two free cores; with one core's worth
    # they get 3 s between them (a quota lets a period's slack through).
    assert float(used) < 1.3 * WALL_S, (how, used)


def test_no_share_below_zero() -> None:
    with pytest.raises(CpuShareError):
        limit_cpu(0)
