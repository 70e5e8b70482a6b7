"""One managed service process: started with its own log, ready when its check passes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import KaiwaError


class StackError(KaiwaError, RuntimeError):
    """A service could not be started; the message says which and why."""


class PortInUseError(StackError):
    pass


def check_port_free(port: int, service: str, *, udp: bool = False) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        # As the servers themselves do: connections lingering in TIME_WAIT from the last
        # run must not count as "in use", a listening socket still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            env_name = f"KAIWA_{service.upper()}_PORT"
            raise PortInUseError(
                f"port {port} ({'udp' if udp else 'tcp'}, {service}) is already in use. "
                f"Stop whatever holds it, or choose another port: {env_name}=<port> make up"
            ) from exc


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, udp: bool = False) -> int:
    """A free port below the kernel's ephemeral range.

    The kernel hands ports from that range to outgoing connections at any moment, so a port
    found free there can be taken before its server binds it (seen: the recorder's port taken
    by another service's client connection while the stack started).
    """
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    low = _ephemeral_low()
    candidates = list(range(20000, low)) if low > 21000 else []
    random.shuffle(candidates)
    for port in candidates[:200]:
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_range(count: int) -> str:
    """A "start-end" block of `count` free UDP ports, below the kernel's ephemeral range,
    for a server that takes its ports from a range (the SIP bridge's RTP). Checked on all
    interfaces, since that is where such servers bind."""
    low = _ephemeral_low()
    starts = list(range(20000, max(20001, low - count), 2))
    random.shuffle(starts)
    for start in starts[:50]:
        block = range(start, start + count)
        if _handed_out.intersection(block) or not all(_udp_free(port) for port in block):
            continue
        _handed_out.update(block)
        return f"{start}-{start + count - 1}"
    raise StackError(f"no block of {count} free UDP ports found")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout_s: float = 60.0
    # How long a graceful stop may take before SIGKILL.
    stop_timeout_s: float = 10.0
    user: str | None = None  # run as this user (PostgreSQL refuses to run as root)
    proc: subprocess.Popen[bytes] | None = None
    # Set by `stop`: a service stopped on purpose is not restarted by `Stack.supervise`.
    stopped: bool = False
    # When it was last restarted after exiting on its own (monotonic), for crash-loop checks.
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        argv = self.argv
        if self.user and os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        # A new session so Ctrl-C in the terminal reaches only `kaiwa up`, which then
        # stops the services in reverse order instead of all of them dying at once.
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        self.stopped = False
        log.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self.proc.returncode} while starting; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.ready():
                    return
            except Exception:  # noqa: S110 - not ready yet, whatever the reason
                pass
            time.sleep(0.1)
        raise StackError(
            f"{self.name} was not ready after {self.ready_timeout_s:.0f} s; "
            f"see {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crashed(self) -> bool:
        """Started, then exited without being stopped."""
        return self.proc is not None and not self.stopped and self.proc.poll() is not None

    def stop(self) -> None:
        self.stopped = True
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
