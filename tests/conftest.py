"""Session fixtures: real services on free ports, started once and torn down at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaiwa.stack.config import StackConfig
from kaiwa.stack.postgres import fresh_postgres_database, postgres_server
from kaiwa.stack.services import Stack

from .servers import make_stack_config


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    return make_stack_config(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def stack(stack_config: StackConfig) -> Iterator[Stack]:
    """The whole stack as `make up` runs it: Redis, LiveKit, S3, the API, an agent worker."""
    running = Stack(stack_config)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against both databases we support, each time on a fresh one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kaiwa.db'}"
    server: str = request.getfixturevalue("postgres_server_url")
    return fresh_postgres_database(server, f"kaiwa_{uuid.uuid4().hex[:12]}")
