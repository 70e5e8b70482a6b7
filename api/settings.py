"""The API's settings: the shared parts (core/settings.py) and its own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from core.livekit_nodes import split_urls
from core.paths import REPO_ROOT, STATE_DIR
from core.scenarios import DEFAULT_FILE as SCENARIOS_FILE
from core.settings import LiveKitSettings, RedisSettings, S3Settings


class Settings(LiveKitSettings, RedisSettings, S3Settings):
    SECRET_MINIMUMS: ClassVar[dict[str, int]] = {"admin_password": 12}

    livekit_public_url: str | None = Field(
        default=None,
        description="LiveKit server as browsers and apps reach it, when it differs from "
        "LIVEKIT_URL; several nodes comma-separated, handed out in turn.",
    )
    database_url: str = Field(
        default=f"sqlite:///{STATE_DIR / 'data' / 'kaiwa.db'}",
        description="The history store: sqlite:///path, or postgresql://user:pass@host/db.",
    )

    admin_password: str = Field(
        default="admin", description="The admin console's password (12+ chars outside dev)."
    )
    admin_session_ttl_s: int = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="An admin console session; the console signs in again after this.",
    )
    admin_login_rate_limit: int = Field(
        default=10, ge=1, description="Sign-in attempts per client address per window."
    )
    admin_login_rate_window_s: int = Field(
        default=300, ge=1, description="The sign-in rate limit's window."
    )

    # Long enough to start playing, short enough that a copied link soon stops working. S3
    # allows up to 7 days; we allow 15 minutes.
    recording_url_ttl_s: int = Field(
        default=300, ge=1, le=900, description="Lifetime of a presigned recording URL."
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="The S3 address browsers use for presigned URLs, when it differs from "
        "S3_ENDPOINT_URL.",
    )

    llm_base_url: str | None = Field(
        default="http://127.0.0.1:8090/v1",
        description="The local language model server, checked by /healthz.",
    )

    sip_health_url: str | None = Field(
        default=None,
        description="The SIP bridge's health port (http://host:port/), checked by /healthz: "
        "200 ok, 429 degraded, anything else down. Unset: no bridge is reported.",
    )

    # LiveKit refreshes a connected client's token itself.
    token_ttl_s: int = Field(
        default=600, ge=30, le=6 * 3600, description="Lifetime of a caller's token."
    )
    room_max_participants: int = Field(
        default=16,
        ge=3,
        le=1000,
        description="People in one room, agents and the recorder included.",
    )
    scenarios_file: Path = Field(
        default=SCENARIOS_FILE, description="The dialog scenarios callers can pick."
    )
    token_rate_limit: int = Field(
        default=30, ge=1, description="Token requests per client address per window."
    )
    token_rate_window_s: int = Field(default=60, ge=1, description="The token rate limit's window.")
    # A worker has 10 slots and a quiet dialog lasts up to 30 minutes: without a cap, a few
    # idle tabs from one address hold every agent. Two covers a person with a call in each of
    # two tabs; a second device of the same person joins by room code and is not counted.
    calls_per_address: int = Field(
        default=2,
        ge=1,
        description="New calls one client address may hold at once (each brings an agent); "
        "raise it for many people behind one address.",
    )

    webhook_max_body_bytes: int = Field(
        default=1 << 20, description="Larger webhook bodies get 413."
    )
    # Agents' segment batches are the largest bodies (50 segments with their translations).
    max_body_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Every other request body; larger ones get 413 before they are read whole.",
    )
    metrics_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token Prometheus scrapes /metrics with. Unset: /metrics is open "
        "in dev and off (404) elsewhere.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed "
        '("10.0.0.1,10.0.0.0/8", or "*"). Empty: none, so a client cannot pick the address '
        "its rate limits count under.",
    )
    web_dir: Path = Field(
        default=REPO_ROOT / "web" / "dist", description="The built web app the API serves."
    )

    @property
    def client_livekit_urls(self) -> list[str]:
        """The LiveKit nodes callers are sent to (core/livekit_nodes.py)."""
        return split_urls(self.livekit_public_url or "") or self.livekit_urls


@lru_cache
def get_settings() -> Settings:
    return Settings()
