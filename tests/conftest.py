"""Session fixtures: real services on free ports, started once and torn down at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from kaiwa.stack.config import StackConfig
from kaiwa.stack.postgres import fresh_postgres_database, postgres_server
from kaiwa.stack.services import Stack, redis_service, s3_service

from .support.apiclient import api_settings, client_for
from .support.servers import make_stack_config, running_stack

# Every test module says what it needs (pyproject.toml describes each category); CI and
# `pytest -m unit` select by them, so a module without one would run in the wrong lane.
CATEGORIES = frozenset({"unit", "integration", "models", "e2e"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    uncategorized = sorted(
        {
            item.nodeid.split("::")[0]
            for item in items
            if not CATEGORIES & {mark.name for mark in item.iter_markers()}
        }
    )
    if uncategorized:
        raise pytest.UsageError(
            "test modules without a category marker (pytestmark = pytest.mark.unit, "
            "integration, models or e2e): " + ", ".join(uncategorized)
        )


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    return make_stack_config(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def stack(stack_config: StackConfig) -> Iterator[Stack]:
    """The whole stack as `make up` runs it: Redis, LiveKit, S3, the API, an agent worker."""
    with running_stack(stack_config) as running:
        yield running


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


@pytest.fixture(scope="session")
def services_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    """Ports and secrets for single services (Redis, S3) started without the whole stack;
    apart from `stack_config`, so both can run in one session."""
    return make_stack_config(tmp_path_factory.mktemp("services"))


@pytest.fixture(scope="session")
def redis_url(services_config: StackConfig) -> Iterator[str]:
    server = redis_service(services_config)
    server.start()
    try:
        server.wait_ready()
        yield services_config.redis_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(services_config: StackConfig) -> Iterator[StackConfig]:
    """versitygw over a temporary folder, with the recordings bucket made."""
    server = s3_service(services_config)
    server.start()
    try:
        server.wait_ready()
        yield services_config
    finally:
        server.stop()


@pytest.fixture
def settings(services_config: StackConfig, database_url: str, tmp_path: Path) -> Settings:
    """The API's settings over the session's services, on a fresh database of each kind."""
    return api_settings(services_config, database_url, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API in this process (its lifespan run), as agents and the console call it."""
    with client_for(settings) as client:
        yield client
