"""Session fixtures: real services on free ports, started once and torn down at the end."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.db import make_engine, migrate
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


# A failed test on a stack: what its services warned of meanwhile, printed at the end of the
# run (a CI log keeps its tail), since the services' own logs go with the machine. The last
# few of each log: the whole stack's last 30 together were once all the watchdog's and
# LiveKit's, and the agent's side of the failure went unseen.
WARNINGS_SHOWN_PER_LOG = 8
failed_stack_warnings: dict[str, list[str]] = {}
log_offsets: pytest.StashKey[dict[Path, int]] = pytest.StashKey()


def _stack_logs(item: pytest.Item) -> list[Path]:
    funcargs: dict[str, object] = getattr(item, "funcargs", {})
    stacks = [value for value in funcargs.values() if isinstance(value, Stack)]
    return [log for stack in stacks for log in sorted(stack.cfg.logs_dir.glob("*.log"))]


def _warnings_since(log: Path, offset: int) -> list[str]:
    lines = []
    with log.open("rb") as file:
        file.seek(offset)
        for raw in file:
            line = raw.decode(errors="replace").strip()
            try:
                level = str(json.loads(line).get("level", ""))
            except (ValueError, AttributeError):
                level = "WARNING" if " W " in line or " E " in line else ""
            if level.upper() in {"WARN", "WARNING", "ERROR", "CRITICAL"}:
                lines.append(f"{log.name}: {line[:240]}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    item.stash[log_offsets] = {log: log.stat().st_size for log in _stack_logs(item)}
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marks = {m.name for m in item.iter_markers()}
    category = next((name for name in LANES if name in marks), "other")
    seconds, tests = time_by_category.get(category, (0.0, 0))
    time_by_category[category] = (seconds + report.duration, tests + (report.when == "call"))
    if report.when == "call" and report.failed and item.stash.get(log_offsets, None):
        failed_stack_warnings[item.nodeid] = [
            line
            for log, offset in item.stash[log_offsets].items()
            for line in _warnings_since(log, offset)[-WARNINGS_SHOWN_PER_LOG:]
        ]
    return report


# A module marked both e2e and models counts as e2e, and so on down.
LANES = ("e2e", "integration", "models", "unit")
# Where the run's time goes, by lane (set-up, the test and tear-down; a session fixture's
# start counts in the lane of the first test that needs it), printed with every run.
time_by_category: dict[str, tuple[float, int]] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if time_by_category:
        terminalreporter.section("time by category")
        for category, (seconds, tests) in sorted(
            time_by_category.items(), key=lambda kv: -kv[1][0]
        ):
            terminalreporter.write_line(f"{category:12} {seconds:8.1f} s  {tests:4d} tests")
    if not failed_stack_warnings:
        return
    terminalreporter.section("the stack's warnings during failed tests")
    for nodeid, lines in failed_stack_warnings.items():
        terminalreporter.write_line(
            f"{nodeid}: the last {WARNINGS_SHOWN_PER_LOG} at most of each service's log"
        )
        for line in lines:
            terminalreporter.write_line(f"  {line}")


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
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind we support: for the tests of the migrations."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kaiwa.db'}"
    server: str = request.getfixturevalue("postgres_server_url")
    return fresh_postgres_database(server, f"kaiwa_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session, for tests to copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "kaiwa.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> str:
    """A PostgreSQL database migrated once per session, for tests to copy (its name)."""
    name = "kaiwa_template"
    _migrate(fresh_postgres_database(postgres_server_url, name))
    return name


def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()  # a template must have no connection left, and SQLite's WAL folded in


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against both databases we support, each time on a fresh one,
    migrated: a copy of one migrated once per session (the migrations themselves are tested
    from empty, on `empty_database_url`). Copying saves the migrations' DDL in each of some
    380 tests."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "kaiwa.db")
        return f"sqlite:///{tmp_path / 'kaiwa.db'}"
    server: str = request.getfixturevalue("postgres_server_url")
    name: str = request.getfixturevalue("postgres_template")
    return fresh_postgres_database(server, f"kaiwa_{uuid.uuid4().hex[:12]}", template=name)


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
