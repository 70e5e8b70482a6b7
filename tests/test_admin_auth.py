"""Admin sessions: the password buys a short-lived token; nothing else opens admin routes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from api.admin_auth import COOKIE_NAME, mint_admin_token
from api.settings import Settings
from api.tokens import TokenRequest, mint_caller_token
from core.service_auth import mint_service_token
from kaiwa.stack.config import StackConfig
from kaiwa.stack.process import free_port

from .support.apiclient import admin_headers, api_settings, client_for, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration


def unique_host() -> str:
    """A client address of its own, so Redis counters from other tests do not count."""
    n = uuid.uuid4().int
    return f"198.18.{n % 250}.{(n >> 8) % 250 + 1}"


@pytest.fixture
def settings(
    services_config: StackConfig, redis_url: str, database_url: str, tmp_path: Path
) -> Settings:
    return api_settings(services_config, database_url, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings, host=unique_host()) as client:
        yield client


def test_sign_in_gives_a_token_and_a_strict_cookie(client: TestClient, settings: Settings) -> None:
    response = client.post("/api/admin/session", json={"password": settings.admin_password})
    assert response.status_code == 200
    body = response.json()
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 8 * 3600) < 30
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}={body['token']};")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path", "samesite", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert response.headers["cache-control"] == "no-store"

    # The cookie alone opens admin routes (what an <audio> element sends).
    assert client.get("/api/conversations").status_code == 200
    # So does the token as a bearer, from a client without the cookie.
    with client_for(settings, host=unique_host()) as other:
        bearer = {"Authorization": f"Bearer {body['token']}"}
        assert other.get("/api/conversations", headers=bearer).status_code == 200


def test_sign_out_clears_the_cookie(client: TestClient, settings: Settings) -> None:
    client.post("/api/admin/session", json={"password": settings.admin_password})
    assert client.get("/api/conversations").status_code == 200
    response = client.delete("/api/admin/session")
    assert response.status_code == 204
    assert "max-age=0" in response.headers["set-cookie"].lower()
    assert client.get("/api/conversations").status_code == 401


def test_dev_cookie_is_not_secure(
    services_config: StackConfig, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    dev = api_settings(services_config, database_url, tmp_path, kaiwa_env="dev")
    with client_for(dev, host=unique_host()) as client:
        response = client.post("/api/admin/session", json={"password": dev.admin_password})
    assert response.status_code == 200
    assert "secure" not in response.headers["set-cookie"].lower()


@pytest.mark.parametrize("password", ["wrong", "", "x" * 1024])
def test_wrong_password_is_refused(client: TestClient, password: str) -> None:
    response = client.post("/api/admin/session", json={"password": password})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_missing_password_is_invalid(client: TestClient) -> None:
    assert client.post("/api/admin/session", json={}).status_code == 422


def test_sign_in_attempts_are_limited_per_address(
    services_config: StackConfig, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    # A long window: the limiter counts in fixed windows, and four attempts straddling a
    # window's end would rightly start counting again.
    limited = api_settings(
        services_config,
        database_url,
        tmp_path,
        admin_login_rate_limit=3,
        admin_login_rate_window_s=86400,
    )
    noisy = unique_host()
    with client_for(limited, host=noisy) as client:
        statuses = [
            client.post("/api/admin/session", json={"password": "guess"}).status_code
            for _ in range(3)
        ]
        # Over the limit, even the right password is refused until the window passes.
        blocked = client.post("/api/admin/session", json={"password": limited.admin_password})
    assert statuses == [401, 401, 401]
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= limited.admin_login_rate_window_s
    with client_for(limited, host=unique_host()) as quiet:
        ok = quiet.post("/api/admin/session", json={"password": limited.admin_password})
        assert ok.status_code == 200


def test_sign_in_fails_closed_without_redis(
    services_config: StackConfig, database_url: str, tmp_path: Path
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings = api_settings(services_config, database_url, tmp_path, redis_url=nowhere)
    with client_for(settings, host=unique_host()) as client:
        response = client.post("/api/admin/session", json={"password": settings.admin_password})
    assert response.status_code == 503


ADMIN_ROUTES = [
    ("GET", "/api/conversations"),
    ("GET", "/api/conversations/{conversation}"),
    ("GET", "/api/conversations/{conversation}/transcript"),
    ("GET", "/api/conversations/{conversation}/export?format=vtt"),
    ("DELETE", "/api/conversations/{conversation}"),
    ("GET", "/api/recordings/{recording}/play"),
    ("GET", "/api/recordings/{recording}/audio"),
]


def _caller(settings: Settings) -> str:
    return mint_caller_token(settings, TokenRequest(name="Aiko", room="r1")).token


def _service(settings: Settings) -> str:
    return mint_service_token(settings.livekit_api_key, settings.livekit_api_secret)


def _expired_admin(settings: Settings) -> str:
    token, _ = mint_admin_token(settings.livekit_api_secret, settings.admin_password, ttl_s=1)
    time.sleep(1.1)
    return token


def _admin_claims_under_the_api_secret(settings: Settings) -> str:
    # The right claims, signed the way LiveKit tokens are: not with the admin session key.
    now = int(time.time())
    claims = {"sub": "admin", "exp": now + 600, "kaiwa": {"role": "admin"}}
    return jwt.encode(claims, settings.livekit_api_secret, algorithm="HS256")


def _before_password_change(settings: Settings) -> str:
    token, _ = mint_admin_token(settings.livekit_api_secret, "an-old-admin-password", 600)
    return token


def _unsigned(settings: Settings) -> str:
    claims = {"sub": "admin", "exp": int(time.time()) + 600, "kaiwa": {"role": "admin"}}
    return jwt.encode(claims, "", algorithm="none")


BAD_CREDENTIALS: dict[str, Callable[[Settings], dict[str, str]]] = {
    "none": lambda s: {},
    "garbage": lambda s: {"Authorization": "Bearer not.a.token"},
    "caller token": lambda s: {"Authorization": f"Bearer {_caller(s)}"},
    "caller token as cookie": lambda s: {"Cookie": f"{COOKIE_NAME}={_caller(s)}"},
    "service token": lambda s: {"Authorization": f"Bearer {_service(s)}"},
    "expired admin token": lambda s: {"Authorization": f"Bearer {_expired_admin(s)}"},
    "admin claims, LiveKit key": lambda s: {
        "Authorization": f"Bearer {_admin_claims_under_the_api_secret(s)}"
    },
    "old password's token": lambda s: {"Authorization": f"Bearer {_before_password_change(s)}"},
    "alg none": lambda s: {"Authorization": f"Bearer {_unsigned(s)}"},
}


@dataclass
class Existing:
    client: TestClient
    settings: Settings
    ids: dict[str, str]


@pytest.fixture(scope="module")
def existing(
    services_config: StackConfig, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Existing]:
    """One app over one database for the whole matrix below (refusals happen before any
    database work), with a real conversation so refusals are not 404s in disguise."""
    folder = tmp_path_factory.mktemp("admin-routes")
    settings = api_settings(services_config, f"sqlite:///{folder / 'kaiwa.db'}", folder)
    with client_for(settings, host=unique_host()) as client:
        post_segments(client, settings, "RM_auth", [seg("auth-1", "Hello", 0.0)])
        listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
        ids = {"conversation": listing["items"][0]["id"], "recording": "0" * 32}
        yield Existing(client, settings, ids)


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("method,path", ADMIN_ROUTES)
def test_admin_routes_refuse_anything_but_an_admin_session(
    existing: Existing, method: str, path: str, credential: str
) -> None:
    client, settings = existing.client, existing.settings
    headers = BAD_CREDENTIALS[credential](settings)
    response = client.request(method, path.format(**existing.ids), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # Nothing happened: the conversation is still there.
    detail = client.get(
        f"/api/conversations/{existing.ids['conversation']}", headers=admin_headers(settings)
    )
    assert detail.status_code == 200
