"""`kaiwa bench … --cpus N`: run a bench, and the stack it starts, on N cores' worth of CPU.

A developer on a fast machine then feels what a slow one does. The share is a CPU quota on a
cgroup of its own (cgroup v2's `cpu.max`, or v1's `cpu.cfs_quota_us`) when this process may
make one, which keeps every core visible and caps their sum, as a smaller machine would;
else, for a whole number, the process is pinned to that many cores. Every process the bench
starts inherits either. The cgroup is removed when the bench exits.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from core.errors import KaiwaError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuShareError(KaiwaError):
    """The share asked for cannot be set on this machine."""


def limit_cpu(cpus: float) -> str:
    """Cap this process and its future children at `cpus` cores' worth of CPU; returns how."""
    if cpus <= 0:
        raise CpuShareError(f"--cpus must be above 0, not {cpus}")
    quota_us = round(cpus * PERIOD_US)
    for make in (_cgroup_v2, _cgroup_v1):
        group = make(quota_us)
        if group is not None:
            return f"{cpus:g} cpu (cgroup quota)"
    if cpus != int(cpus):
        raise CpuShareError(
            f"--cpus {cpus:g} needs a cgroup this process may create (run as root); "
            "a whole number of cores works anywhere, by pinning"
        )
    allowed = sorted(os.sched_getaffinity(0))
    if int(cpus) > len(allowed):
        raise CpuShareError(f"--cpus {cpus:g}: this process may use only {len(allowed)} cores")
    cores = allowed[: int(cpus)]
    os.sched_setaffinity(0, cores)
    return f"{cpus:g} cpu (pinned to cores {','.join(map(str, cores))})"


def _cgroup_v2(quota_us: int) -> Path | None:
    if "cpu" not in _read(CGROUP_ROOT / "cgroup.controllers").split():
        return None
    if "cpu" not in _read(CGROUP_ROOT / "cgroup.subtree_control").split():
        return None
    return _enter(CGROUP_ROOT, {"cpu.max": f"{quota_us} {PERIOD_US}"})


def _cgroup_v1(quota_us: int) -> Path | None:
    parent = CGROUP_ROOT / "cpu"
    if not (parent / "cpu.cfs_quota_us").exists():
        return None
    return _enter(parent, {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(quota_us)})


def _enter(parent: Path, settings: dict[str, str]) -> Path | None:
    """Make a cgroup under `parent` with `settings` and move this process into it; None where
    this process may not."""
    group = parent / f"kaiwa-bench-{os.getpid()}"
    try:
        group.mkdir()
    except OSError:
        return None
    try:
        for name, value in settings.items():
            (group / name).write_text(value)
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        group.rmdir()
        return None
    atexit.register(_leave, parent, group)
    return group


def _leave(parent: Path, group: Path) -> None:
    """Back to the parent, and the group removed; it stays only if a child outlived the bench."""
    try:
        (parent / "cgroup.procs").write_text(str(os.getpid()))
        group.rmdir()
    except OSError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
