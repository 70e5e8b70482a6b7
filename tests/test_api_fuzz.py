"""Every route of the API, fuzzed from its own OpenAPI schema: no request gets a server error.

Schemathesis makes requests from `/openapi.json` (valid and invalid bodies, parameters and
headers) against the real API, served by uvicorn on its real services (SQLite, Redis, S3).
Each route is tried without credentials and with each kind a client may hold: a caller's
LiveKit token, an agent's service token, an admin session. (What a route answers while
LiveKit, Redis or the database is down is each one's own test: a 503, never a 500.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from livekit import api as lkapi

from api.admin_auth import mint_admin_token
from api.main import create_app
from api.tokens import caller_grants
from core.service_auth import mint_service_token
from kaiwa.stack.config import StackConfig
from kaiwa.stack.process import free_port
from kaiwa.stack.services import livekit_service

from .support.apiclient import api_settings

pytestmark = pytest.mark.integration

# Per route, each sent with every kind of credentials; a few minutes on 2 cores.
EXAMPLES = 50
CREDENTIALS = ("none", "caller", "service", "admin")
TRIED: dict[str, int] = {}
# Answers by class ("2xx", "4xx", ...), and /healthz's 503s, for docs/operations.md.
ANSWERS: dict[str, int] = {}
HEALTH = "GET /healthz"


@pytest.fixture(scope="module")
def livekit(services_config: StackConfig, redis_url: str) -> Iterator[str]:
    server = livekit_service(services_config)
    server.start()
    try:
        server.wait_ready()
        yield services_config.livekit_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_url(
    services_config: StackConfig,
    livekit: str,
    s3_server: StackConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The API served by uvicorn, over the session's Redis, S3 and a LiveKit server."""
    folder = tmp_path_factory.mktemp("fuzz")
    api = api_settings(
        services_config,
        f"sqlite:///{folder / 'kaiwa.db'}",
        folder,
        livekit_url=livekit,
        metrics_token="fuzz-metrics-token",
        # Past the limits, every request would be a 429: let the routes themselves be tried.
        token_rate_limit=1_000_000,
        admin_login_rate_limit=1_000_000,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(api), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        total = sum(TRIED.values())
        print(f"API fuzz: {total} requests over {len(TRIED)} routes: {ANSWERS}")  # noqa: T201


@pytest.fixture(scope="module")
def credentials(services_config: StackConfig) -> Callable[[str], dict[str, str]]:
    """Headers of each kind of client, freshly minted (service tokens live a minute)."""
    secrets = services_config.secrets

    def headers(kind: str) -> dict[str, str]:
        if kind == "caller":
            token = (
                lkapi.AccessToken(secrets.livekit_api_key, secrets.livekit_api_secret)
                .with_identity("caller-fuzz")
                .with_grants(caller_grants("dialog-fuzz"))
                .to_jwt()
            )
        elif kind == "service":
            token = mint_service_token(secrets.livekit_api_key, secrets.livekit_api_secret)
        elif kind == "admin":
            token, _ = mint_admin_token(secrets.livekit_api_secret, secrets.admin_password, 600)
        else:
            return {}
        return {"Authorization": f"Bearer {token}"}

    return headers


def fuzz_operation(
    operation: Any, api_url: str, credentials: Callable[[str], dict[str, str]]
) -> None:
    """Requests for one route from its schema, each sent as every kind of client: what a
    route refuses to one, it must refuse as cleanly to the others."""
    route = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same requests every run: a failure is reproducible
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        for credential in CREDENTIALS:
            headers = {**(case.headers or {}), **credentials(credential)}
            response = case.call(base_url=api_url, headers=headers, timeout=30)
            TRIED[route] = TRIED.get(route, 0) + 1
            answer = f"{response.status_code // 100}xx"
            if route == HEALTH and response.status_code == 503:
                answer = "healthz 503"
            ANSWERS[answer] = ANSWERS.get(answer, 0) + 1
            if route == HEALTH and response.status_code == 503:
                continue  # its documented answer while a component (LiveKit here) is down
            assert response.status_code < 500, (
                f"{route} as {credential}: {response.status_code} {response.text[:300]}"
            )

    fuzz()


def test_no_request_gets_a_server_error(
    api_url: str, credentials: Callable[[str], dict[str, str]]
) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    failed: list[str] = []
    for found in schema.get_all_operations():
        try:
            fuzz_operation(found.ok(), api_url, credentials)
        except AssertionError as exc:  # every route is tried, and every failure reported
            failed.append(str(exc))
    assert len(TRIED) >= 20, TRIED  # every route of the API was reached
    assert not failed, failed


def test_a_deeply_nested_body_is_refused_quickly(api_url: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    started = time.perf_counter()
    response = httpx.post(
        f"{api_url}/api/token", content=deep, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    # Refused by the parser's depth limit, not after building 100 000 lists.
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"name": "\xff\xfe", "language": "en"}', "application/json"),  # not UTF-8
        (b"\xff" * 64, "application/json"),
        (b"name=Aiko&language=en", "application/x-www-form-urlencoded"),
        (b'{"name": "Aiko", "language": "en"}', "text/plain"),
        (b"<xml/>", "application/xml"),
    ],
)
def test_bodies_that_are_not_json_get_a_4xx(api_url: str, body: bytes, content_type: str) -> None:
    for path in ("/api/token", "/api/internal/segments", "/api/admin/session"):
        response = httpx.post(
            f"{api_url}{path}", content=body, headers={"Content-Type": content_type}
        )
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


def _answer_while_sending(api_url: str, head: bytes, body_sent: bytes) -> bytes:
    """Send a request's head and the start of its body, then read the answer without sending
    the rest: an answer then means the server refused before it had the body whole."""
    host, port = api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + body_sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


TEN_MB = 10 << 20


def test_a_10_mb_body_is_refused_before_it_is_sent_whole(api_url: str) -> None:
    head = (
        b"POST /api/token HTTP/1.1\r\nHost: kaiwa\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {TEN_MB}\r\n\r\n".encode()
    )
    answer = _answer_while_sending(api_url, head, b'{"name": "' + b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_streamed_10_mb_body_is_cut_off_at_the_limit(api_url: str) -> None:
    """No length declared (chunked): refused once past the limit (512 KiB), 10 MB unsent."""
    head = (
        b"POST /api/token HTTP/1.1\r\nHost: kaiwa\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * (64 << 10)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(12))  # 768 KiB
    answer = _answer_while_sending(api_url, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
