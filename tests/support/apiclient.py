"""The API as the admin console and agents use it: real Settings, app, database, Redis, S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.admin_auth import mint_admin_token
from api.main import create_app
from api.settings import Settings
from core.service_auth import mint_service_token
from kaiwa.stack.config import StackConfig


def api_settings(
    services: StackConfig, database_url: str, tmp_path: Path, **overrides: Any
) -> Settings:
    secrets = services.secrets
    values: dict[str, Any] = {
        "kaiwa_env": "test",
        "livekit_url": services.livekit_url,
        "livekit_api_key": secrets.livekit_api_key,
        "livekit_api_secret": secrets.livekit_api_secret,
        "database_url": database_url,
        "redis_url": services.redis_url,
        "s3_endpoint_url": services.s3_endpoint_url,
        "s3_access_key": secrets.s3_access_key,
        "s3_secret_key": secrets.s3_secret_key,
        "s3_bucket": services.s3_bucket,
        "admin_password": secrets.admin_password,
        "admin_login_rate_limit": 1000,
        # One test client makes many calls from one address, with no LiveKit to end them:
        # the cap is tested on its own (tests/test_call_limits.py).
        "calls_per_address": 1000,
        "llm_base_url": None,
        "web_dir": tmp_path / "no-web-app",
    }
    values.update(overrides)
    return Settings(**values)


def client_for(settings: Settings, host: str = "203.0.113.10") -> TestClient:
    # https: the session cookie is Secure outside dev, and httpx keeps to that.
    return TestClient(create_app(settings), base_url="https://testserver", client=(host, 50000))


def admin_headers(settings: Settings) -> dict[str, str]:
    token, _ = mint_admin_token(
        settings.livekit_api_secret, settings.admin_password, settings.admin_session_ttl_s
    )
    return {"Authorization": f"Bearer {token}"}


def agent_headers(settings: Settings) -> dict[str, str]:
    token = mint_service_token(settings.livekit_api_key, settings.livekit_api_secret)
    return {"Authorization": f"Bearer {token}"}


def segment(
    id: str,
    text: str,
    start_s: float,
    *,
    end_s: float | None = None,
    identity: str = "caller-1",
    language: str = "en",
    translations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "participant_identity": identity,
        "participant_sid": "PA_caller",
        "language": language,
        "text": text,
        "start_s": start_s,
        "end_s": start_s + 1.5 if end_s is None else end_s,
        "translations": translations or {},
    }


def post_segments(
    client: TestClient,
    settings: Settings,
    room_sid: str,
    segments: list[dict[str, Any]],
    room_name: str | None = None,
) -> dict[str, Any]:
    response = client.post(
        "/api/internal/segments",
        json={"room_sid": room_sid, "room_name": room_name, "segments": segments},
        headers=agent_headers(settings),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
