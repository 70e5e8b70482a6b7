"""A throwaway PostgreSQL cluster on a free port, for tests and the search bench."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .process import ManagedProcess, StackError, free_port


def _postgres_bindir() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise StackError("PostgreSQL is not installed; run `make install`")
    return versions[-1].parent


@dataclass
class PostgresCluster:
    url: str
    # The server process: a test may stop it and start it again (same data, same port).
    server: ManagedProcess


@contextmanager
def postgres_server(settings: dict[str, str] | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields its URL."""
    with postgres_cluster(settings) as cluster:
        yield cluster.url


@contextmanager
def postgres_cluster(settings: dict[str, str] | None = None) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster. PostgreSQL refuses to run as root.

    `settings` are extra server settings (`-c name=value`), e.g. memory for a benchmark.
    """
    bindir = _postgres_bindir()
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    # Not under pytest's tmp folder: that one is private to root, and the server runs as
    # the postgres user.
    data = Path(tempfile.mkdtemp(prefix="kaiwa-pg-"))
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    init = ManagedProcess(
        name="initdb",
        argv=[
            str(bindir / "initdb"),
            "-D",
            str(data / "db"),
            "-U",
            "kaiwa",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        log_path=data / "initdb.log",
        ready=lambda: True,
        user=user,
    )
    init.start()
    assert init.proc is not None
    if init.proc.wait() != 0:
        raise StackError(f"initdb failed:\n{init.log_tail()}")
    url = f"postgresql://kaiwa@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        with psycopg.connect(url, connect_timeout=1):
            return True

    server = ManagedProcess(
        name="postgres",
        argv=[
            str(bindir / "postgres"),
            "-D",
            str(data / "db"),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            *(arg for name, value in (settings or {}).items() for arg in ("-c", f"{name}={value}")),
        ],
        log_path=data / "postgres.log",
        ready=ready,
        user=user,
    )
    server.start()
    try:
        server.wait_ready()
        yield PostgresCluster(url, server)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def fresh_postgres_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """A new database `name` (dropped first if it exists): empty, or a copy of `template`,
    a database nobody is connected to."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return server_url.rsplit("/", 1)[0] + f"/{name}"
