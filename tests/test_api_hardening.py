"""What an outsider, or a careless client, can send the API: each case gets a clear 4xx and
changes nothing, never a 500, an echo of the input, or a way around a limit."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from core.paths import REPO_ROOT
from core.webhooks import sign_webhook
from kaiwa.stack.config import StackConfig

from .support import events
from .support.apiclient import admin_headers, api_settings, client_for

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(services_config: StackConfig, redis_url: str, tmp_path: Path) -> Settings:
    return api_settings(
        services_config,
        f"sqlite:///{tmp_path / 'kaiwa.db'}",
        tmp_path,
        token_rate_limit=3,
        admin_login_rate_limit=3,
        # Long windows: the limiter counts in fixed windows, and requests that straddle a
        # window's end would rightly start counting again.
        token_rate_window_s=86400,
        admin_login_rate_window_s=86400,
        web_dir=REPO_ROOT / "web" / "dist",
    )


@pytest.fixture
def loopback() -> str:
    """A loopback address of this test's own: where a local proxy would be, had the API
    trusted one. Its own, because rate-limit counts live in the session's Redis."""
    return "127.{}.{}.{}".format(*secrets.token_bytes(3))


@pytest.fixture
def client(settings: Settings, loopback: str) -> Iterator[TestClient]:
    with client_for(settings, host=loopback) as client:
        yield client


# ---- input that is not what it claims -------------------------------------------------


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/token", '{"name": "\\ud800"}'),
        ("/api/token", '{"name": "Aiko", "language": "\\ud800"}'),
        ("/api/token", '{"name": "Aiko", "\\ud800": 1, "mode": "\\udfff"}'),
        ("/api/admin/session", '{"password": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_is_a_422_without_an_echo(
    client: TestClient, path: str, body: str
) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "\\ud800" not in response.text and "input" not in response.json()["detail"][0]


@pytest.mark.parametrize(
    "name", ["Ai\x00ko", "Ai\u202eko", "\u2066Aiko", "tab\there"], ids=["nul", "rlo", "lri", "tab"]
)
def test_names_with_control_or_bidi_characters_are_refused(client: TestClient, name: str) -> None:
    assert client.post("/api/token", json={"name": name}).status_code == 422


@pytest.mark.parametrize(
    "name", ["Kaiwa", "Kai\u200bwa", "ＫＡＩＷＡ"], ids=["plain", "zwsp", "wide"]
)
def test_nobody_joins_under_the_agents_name(client: TestClient, name: str) -> None:
    refused = client.post("/api/token", json={"name": name, "mode": "interpret"})
    assert refused.status_code == 422 and "agent" in refused.text


def test_a_language_no_engine_serves_is_refused(client: TestClient) -> None:
    assert client.post("/api/token", json={"name": "A", "language": "xx"}).status_code == 422
    assert client.post("/api/token", json={"name": "A", "language": "pt-BR"}).status_code == 200


def test_validation_errors_name_the_field_not_the_value(client: TestClient) -> None:
    secret_looking = "s3cr3t-" * 20
    response = client.post("/api/token", json={"name": "A", "room": secret_looking})
    assert response.status_code == 422
    assert secret_looking not in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "room"]


# ---- size --------------------------------------------------------------------------------


def test_a_5_mb_body_gets_413_before_it_is_read(client: TestClient) -> None:
    big = '{"name": "' + "x" * (5 << 20) + '"}'
    response = client.post("/api/token", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert len(response.content) < 200


def test_a_streamed_body_without_a_length_is_cut_off_too(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * (64 << 10)
        yield b'"}'

    response = client.post(
        "/api/token", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


# ---- rate limits and proxies ----------------------------------------------------------------


def test_a_spoofed_x_forwarded_for_is_still_limited(client: TestClient) -> None:
    statuses = [
        client.post(
            "/api/token", json={"name": "A"}, headers={"X-Forwarded-For": f"198.51.100.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_admin_guesses_behind_a_spoofed_address_are_still_limited(
    client: TestClient, settings: Settings
) -> None:
    for i in range(3):
        guess = client.post(
            "/api/admin/session",
            json={"password": f"guess-{i}"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        )
        assert guess.status_code == 401
    right = client.post(
        "/api/admin/session",
        json={"password": settings.admin_password},
        headers={"X-Forwarded-For": "203.0.113.99"},
    )
    assert right.status_code == 429


def test_a_configured_proxy_is_believed(settings: Settings, loopback: str) -> None:
    behind_proxy = settings.model_copy(update={"forwarded_allow_ips": loopback})
    with client_for(behind_proxy, host=loopback) as client:
        statuses = [
            client.post(
                "/api/token",
                json={"name": "A"},
                headers={"X-Forwarded-For": f"192.0.2.{i}, {loopback}"},
            ).status_code
            for i in range(5)
        ]
    assert statuses == [200] * 5  # five clients behind one proxy, each with its own limit


# ---- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/admin.html"])
def test_pages_carry_a_strict_content_security_policy(
    client: TestClient, settings: Settings, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    csp = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert settings.client_livekit_urls[0] in csp["connect-src"]
    assert "blob:" in csp["media-src"] and str(settings.s3_endpoint_url) in csp["media-src"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_tokens_and_admin_data_are_never_cached(client: TestClient, settings: Settings) -> None:
    assert client.post("/api/token", json={"name": "A"}).headers["cache-control"] == "no-store"
    listing = client.get("/api/conversations", headers=admin_headers(settings))
    assert listing.status_code == 200 and listing.headers["cache-control"] == "no-store"


# ---- signed events with values no LiveKit sends ----------------------------------------


YEAR_2262_S = 9_200_000_000.0


@pytest.mark.parametrize(
    "fields",
    [
        {"started_s": YEAR_2262_S, "filename": "recordings/a.ogg", "size": 10},
        {"started_s": 1.0, "filename": "recordings/a.ogg", "size": 10},
        {"filename": "recordings/a.ogg", "size": -1},
        {"filename": "recordings/a.ogg", "size": 10, "duration_s": -5.0},
        {"filename": "elsewhere/a.ogg", "size": 10},
        {"filename": "recordings/../admin/a.ogg", "size": 10},
        {"filename": "recordings/a.ogg", "size": 10, "manifest": "s3://kaiwa-recordings/x.json"},
    ],
    ids=[
        "year-2262",
        "year-1970",
        "negative-size",
        "negative-duration",
        "outside-prefix",
        "dot-dot",
        "manifest-outside",
    ],
)
def test_out_of_range_egress_reports_are_refused(
    client: TestClient, settings: Settings, fields: dict[str, object]
) -> None:
    now = time.time()
    info = events.egress_info("complete", updated_s=now, **fields)  # type: ignore[arg-type]
    body = events.as_body(events.egress_event("egress_ended", info))
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    response = client.post("/livekit/webhook", content=body, headers={"Authorization": auth})
    assert response.status_code == 400, response.text
    listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
    assert listing["items"] == []  # nothing was stored


def test_a_sane_egress_report_is_still_stored(client: TestClient, settings: Settings) -> None:
    now = time.time()
    info = events.egress_info(
        "complete",
        updated_s=now,
        started_s=now - 60,
        ended_s=now,
        filename="recordings/a.ogg",
        size=10,
        duration_s=60.0,
        manifest="s3://kaiwa-recordings/recordings/a.json",
    )
    body = events.as_body(events.egress_event("egress_ended", info))
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    response = client.post("/livekit/webhook", content=body, headers={"Authorization": auth})
    assert response.status_code == 200, response.text
