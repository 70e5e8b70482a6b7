"""The settings every process shares, read from the environment under the same names.

Each process composes its own settings class from these parts (api/settings.py,
agents/settings.py, agents/recorder/settings.py), so LIVEKIT_URL or S3_BUCKET means one thing
with one default everywhere, and every process refuses a weak secret outside dev. Every
field has a description, and tests/test_codebase.py checks that README's configuration table
names every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .livekit_nodes import NodeAPIs, http_url, split_urls

# Values that ship in docs and examples (LiveKit's --dev keys among them): fine on a laptop,
# never in a deployment.
KNOWN_DEFAULT_SECRETS = {"secret", "devkey", "changeme", "change-me", "password", "admin"}


class KaiwaSettings(BaseSettings):
    """The base of every process's settings: the environment it runs in, and the check
    that refuses weak secrets outside dev."""

    model_config = SettingsConfigDict(extra="ignore")

    # Fields holding a secret, with the least length accepted outside dev. A part adds its
    # own; the check below covers every one a process's settings have.
    SECRET_MINIMUMS: ClassVar[dict[str, int]] = {}

    kaiwa_env: Literal["dev", "test", "prod"] = Field(
        default="dev",
        description="dev, test or prod. Outside dev, known default or short secrets are "
        "refused at start-up.",
    )

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_dev(self) -> KaiwaSettings:
        if self.kaiwa_env == "dev":
            return self
        minimums: dict[str, int] = {}
        for cls in reversed(type(self).__mro__):
            minimums.update(getattr(cls, "SECRET_MINIMUMS", {}))
        problems = []
        for name, minimum in sorted(minimums.items()):
            value = str(getattr(self, name))
            if value.lower() in KNOWN_DEFAULT_SECRETS:
                problems.append(f"{name.upper()} is a well-known default")
            elif len(value) < minimum:
                problems.append(f"{name.upper()} is shorter than {minimum} characters")
        if problems:
            raise ValueError(
                f"refusing to start with KAIWA_ENV={self.kaiwa_env}: "
                + "; ".join(problems)
                + ". Set strong secrets, or KAIWA_ENV=dev on a development machine."
            )
        return self


class LiveKitSettings(KaiwaSettings):
    SECRET_MINIMUMS: ClassVar[dict[str, int]] = {"livekit_api_secret": 32}

    livekit_url: str = Field(
        default="ws://127.0.0.1:7880",
        description="LiveKit server, as this process reaches it. Several nodes: their URLs, "
        "comma-separated; the API, the watchdog and the recorder use the first that answers. "
        "An agent worker registers with one node: give it one URL.",
    )
    livekit_api_key: str = Field(
        default="devkey", description="LiveKit API key (also the issuer of service tokens)."
    )
    livekit_api_secret: str = Field(
        default="secret",
        description="LiveKit API secret: signs tokens and verifies webhooks (32+ chars "
        "outside dev).",
    )

    @property
    def livekit_urls(self) -> list[str]:
        return split_urls(self.livekit_url)

    @property
    def livekit_http_url(self) -> str:
        """The first node's HTTP URL: for a tool's one-off calls."""
        return http_url(self.livekit_urls[0])

    def livekit_apis(self) -> NodeAPIs:
        """LiveKit's server API on whichever listed node answers."""
        return NodeAPIs(self.livekit_urls, self.livekit_api_key, self.livekit_api_secret)


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis: rate limits, worker presence, call leases, the recorder's room locks.",
    )


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (path-style addressing); AWS if unset."
    )
    s3_access_key: str = Field(default="", description="S3 access key.")
    s3_secret_key: str = Field(default="", description="S3 secret key.")
    s3_bucket: str = Field(default="kaiwa-recordings", description="The recordings' bucket.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    # Object keys are this prefix, then the room sid and the egress id: server-side ids only.
    recorder_prefix: str = Field(
        default="recordings/",
        pattern=r"^([A-Za-z0-9_-]+/)*$",
        description="Where recordings' objects live in the bucket; the API refuses an "
        "egress report naming a key outside it.",
    )


class GoogleSettings(BaseSettings):
    """Google's credentials, under Google's own variable names (its libraries read them too)."""

    model_config = SettingsConfigDict(extra="ignore")

    google_api_key: str = Field(
        default="", description="Gemini API key: the Gemini LLM and Gemini Live dialogs."
    )
    google_genai_use_vertexai: bool = Field(
        default=False, description="Use Vertex AI (with application credentials) for Gemini."
    )
    google_application_credentials: str = Field(
        default="", description="Service account file: Google speech-to-text and text-to-speech."
    )

    @property
    def google_cloud_configured(self) -> bool:
        return (
            bool(self.google_application_credentials)
            and Path(self.google_application_credentials).is_file()
        )

    @property
    def gemini_configured(self) -> bool:
        return bool(self.google_api_key) or (
            self.google_genai_use_vertexai and self.google_cloud_configured
        )
