"""Token requests are rate-limited per client address, with the count shared in Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration


def api_instance(stack: Stack, tmp_path: Path, limit: int) -> TestClient:
    cfg = stack.cfg
    settings = Settings(
        livekit_url=cfg.livekit_url,
        livekit_api_key=cfg.secrets.livekit_api_key,
        livekit_api_secret=cfg.secrets.livekit_api_secret,
        redis_url=cfg.redis_url,
        database_url=f"sqlite:///{tmp_path / 'ratelimit.db'}",
        token_rate_limit=limit,
        # A long window: the limiter counts in fixed windows, and requests that straddle a
        # window's end would rightly start counting again.
        token_rate_window_s=86400,
        # Each request makes a new call from one address: the call cap is not what is
        # tested here (tests/test_call_limits.py).
        calls_per_address=1000,
    )
    return TestClient(create_app(settings), client=("203.0.113.7", 50000))


def test_limit_holds_across_api_instances(stack: Stack, tmp_path: Path) -> None:
    with api_instance(stack, tmp_path, 4) as one, api_instance(stack, tmp_path, 4) as two:
        statuses = []
        for i in range(6):
            client = one if i % 2 == 0 else two
            statuses.append(client.post("/api/token", json={"name": "Aiko"}).status_code)
        assert statuses == [200, 200, 200, 200, 429, 429]
        limited = two.post("/api/token", json={"name": "Aiko"})
        assert limited.status_code == 429
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 86400


def test_other_addresses_are_not_limited_by_one_noisy_client(stack: Stack, tmp_path: Path) -> None:
    with api_instance(stack, tmp_path, 2) as noisy:
        for _ in range(3):
            noisy.post("/api/token", json={"name": "Noisy"})
    settings_client = api_instance(stack, tmp_path, 2)
    quiet = TestClient(settings_client.app, client=("198.51.100.9", 50000))
    with quiet:
        assert quiet.post("/api/token", json={"name": "Quiet"}).status_code == 200
