"""One settings object for the API, read from the environment (names shared with the agents)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.scenarios import DEFAULT_FILE as SCENARIOS_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]

# Values that ship in docs and examples (LiveKit's --dev keys among them): fine on a laptop,
# never in a deployment.
KNOWN_DEFAULT_SECRETS = {"secret", "devkey", "changeme", "change-me", "password", "admin"}
MIN_SECRET_LENGTH = 32
MIN_ADMIN_PASSWORD_LENGTH = 12


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    kaiwa_env: Literal["dev", "test", "prod"] = "dev"

    livekit_url: str = "ws://127.0.0.1:7880"
    # What browsers and apps connect to, when it differs from the address the API uses.
    livekit_public_url: str | None = None
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "secret"

    database_url: str = f"sqlite:///{REPO_ROOT / '.kaiwa' / 'data' / 'kaiwa.db'}"
    redis_url: str = "redis://127.0.0.1:6379/0"

    s3_endpoint_url: str | None = None
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "kaiwa-recordings"
    s3_region: str = "us-east-1"
    # Where recordings' objects live in the bucket (the recorder's RECORDER_PREFIX): an egress
    # report naming a key outside it is refused.
    recorder_prefix: str = Field(default="recordings/", pattern=r"^([A-Za-z0-9_-]+/)*$")

    admin_password: str = "admin"
    # An admin console session; the console signs in again after this.
    admin_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    admin_login_rate_limit: int = Field(default=10, ge=1, description="sign-in attempts per window")
    admin_login_rate_window_s: int = Field(default=300, ge=1)

    # Presigned recording URLs: long enough to start playing, short enough that a copied
    # link soon stops working. S3 allows up to 7 days; we allow 15 minutes.
    recording_url_ttl_s: int = Field(default=300, ge=1, le=900)
    # The S3 address browsers use for presigned URLs, when it differs from S3_ENDPOINT_URL.
    s3_public_endpoint_url: str | None = None

    # The local language model server, checked by /healthz.
    llm_base_url: str | None = "http://127.0.0.1:8090/v1"

    # Callers' tokens are short-lived; LiveKit refreshes a connected client's token itself.
    token_ttl_s: int = Field(default=600, ge=30, le=6 * 3600)
    # Everyone in a room counts, agents and the recorder included.
    room_max_participants: int = Field(default=16, ge=3, le=1000)
    # The dialog scenarios callers can pick (core/scenarios.toml is the shape).
    scenarios_file: Path = SCENARIOS_FILE
    token_rate_limit: int = Field(default=30, ge=1, description="token requests per window")
    token_rate_window_s: int = Field(default=60, ge=1)

    webhook_max_body_bytes: int = 1 << 20
    # Every other request body; larger ones get 413 before they are read whole. Agents'
    # segment batches are the largest bodies (50 segments with their translations).
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)
    # Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed ("10.0.0.1,10.0.0.0/8",
    # or "*"). Empty: none, so a client cannot pick the address its rate limits count under.
    forwarded_allow_ips: str = ""
    web_dir: Path = REPO_ROOT / "web" / "dist"

    @property
    def client_livekit_url(self) -> str:
        return self.livekit_public_url or self.livekit_url

    @property
    def livekit_http_url(self) -> str:
        return self.livekit_url.replace("ws://", "http://").replace("wss://", "https://")

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_dev(self) -> Settings:
        if self.kaiwa_env == "dev":
            return self
        problems = []
        for name, value, minimum in (
            ("LIVEKIT_API_SECRET", self.livekit_api_secret, MIN_SECRET_LENGTH),
            ("ADMIN_PASSWORD", self.admin_password, MIN_ADMIN_PASSWORD_LENGTH),
        ):
            if value.lower() in KNOWN_DEFAULT_SECRETS:
                problems.append(f"{name} is a well-known default")
            elif len(value) < minimum:
                problems.append(f"{name} is shorter than {minimum} characters")
        if problems:
            raise ValueError(
                f"refusing to start with KAIWA_ENV={self.kaiwa_env}: "
                + "; ".join(problems)
                + ". Set strong secrets, or KAIWA_ENV=dev on a development machine."
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
