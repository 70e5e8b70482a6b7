"""Ports, secrets and addresses of one local stack, and the environment each service gets."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

SECRETS_FILE_NAME = "secrets.env"


@dataclass(frozen=True)
class Ports:
    api: int = 8000
    livekit: int = 7880
    livekit_rtc_tcp: int = 7881
    livekit_rtc_udp: int = 7882
    redis: int = 6379
    s3: int = 7070
    llm: int = 8090
    agent_http: int = 8081
    agent_metrics: int = 8085  # the first agent worker's Prometheus metrics
    recorder: int = 8082
    sip: int = 5060
    sip_health: int = 8083
    watchdog: int = 8084  # the watchdog's Prometheus metrics
    # A second LiveKit node (`kaiwa up --livekit-nodes 2`): its own signalling and RTC ports.
    livekit_2: int = 7890
    livekit_2_rtc_tcp: int = 7891
    livekit_2_rtc_udp: int = 7892
    # Each LiveKit node's own Prometheus metrics (rooms, participants, packets).
    livekit_metrics: int = 6789
    livekit_2_metrics: int = 6790

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, each overridable by KAIWA_<NAME>_PORT (e.g. KAIWA_API_PORT=8010)."""
        values = {
            name: int(os.environ.get(f"KAIWA_{name.upper()}_PORT", default))
            for name, default in cls().__dict__.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class Secrets:
    livekit_api_key: str
    livekit_api_secret: str
    s3_access_key: str
    s3_secret_key: str
    admin_password: str
    metrics_token: str  # Prometheus' bearer token for the API's /metrics

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            livekit_api_key="kaiwa_" + secrets.token_hex(6),
            livekit_api_secret=secrets.token_urlsafe(36),
            s3_access_key="kaiwa" + secrets.token_hex(8),
            s3_secret_key=secrets.token_urlsafe(30),
            admin_password=secrets.token_urlsafe(12),
            metrics_token=secrets.token_urlsafe(24),
        )

    def as_env(self) -> dict[str, str]:
        return {
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "ADMIN_PASSWORD": self.admin_password,
            "METRICS_TOKEN": self.metrics_token,
        }

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Secrets:
        """Dev secrets are made on first run and kept in the (git-ignored) state folder."""
        path = state_dir / SECRETS_FILE_NAME
        if path.exists():
            values = dict(
                line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
            )
            loaded = cls(
                livekit_api_key=values["LIVEKIT_API_KEY"],
                livekit_api_secret=values["LIVEKIT_API_SECRET"],
                s3_access_key=values["S3_ACCESS_KEY"],
                s3_secret_key=values["S3_SECRET_KEY"],
                admin_password=values["ADMIN_PASSWORD"],
                # A state folder made before /metrics had a token gets one now.
                metrics_token=values.get("METRICS_TOKEN") or secrets.token_urlsafe(24),
            )
            if "METRICS_TOKEN" not in values:
                loaded.save(path)
            return loaded
        created = cls.generate()
        state_dir.mkdir(parents=True, exist_ok=True)
        created.save(path)
        return created

    def save(self, path: Path) -> None:
        """As KEY=value lines, readable by the owner only."""
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in self.as_env().items()))


@dataclass(frozen=True)
class StackConfig:
    """Everything needed to start one stack: the `make up` one or a test's."""

    state_dir: Path
    secrets: Secrets
    ports: Ports = field(default_factory=Ports)
    database_url: str | None = None
    s3_bucket: str = "kaiwa-recordings"
    env_name: str = "dev"
    # The catalogue model the LLM server loads (agents/models/catalog.py).
    llm_model: str = "qwen2.5-1.5b-instruct"
    # The SIP bridge's RTP ports, "start-end" (KAIWA_SIP_RTP_PORTS); it takes even ones only.
    sip_rtp_ports: str = field(
        default_factory=lambda: os.environ.get("KAIWA_SIP_RTP_PORTS", "10000-10099")
    )
    # More settings for the services, over the defaults (e.g. a bench's own limits).
    extra_env: dict[str, str] = field(default_factory=dict)
    # LiveKit nodes sharing one Redis (1 or 2); each gets an agent worker of its own.
    livekit_nodes: int = 1
    # Where callers outside this host's loopback reach LiveKit (signalling and media), as
    # well as 127.0.0.1: the packet-loss bench's callers sit in a network namespace of their
    # own, behind a lossy link whose host end has this address.
    livekit_link_ip: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def livekit_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports.livekit}"

    @property
    def livekit_node_urls(self) -> list[str]:
        """Every LiveKit node's URL, the first node's first."""
        ports = [self.ports.livekit, self.ports.livekit_2][: self.livekit_nodes]
        return [f"ws://127.0.0.1:{port}" for port in ports]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def llm_base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.llm}/v1"

    @property
    def recorder_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.recorder}"

    @property
    def sip_health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sip_health}/"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'kaiwa.db'}"

    def service_env(self) -> dict[str, str]:
        """The settings the API and the agent worker read (see api/settings.py)."""
        return {
            "KAIWA_ENV": self.env_name,
            # Every node: the API, the watchdog and the recorder use the first that answers.
            # An agent worker is given its own one (agent_service).
            "LIVEKIT_URL": ",".join(self.livekit_node_urls),
            # The API hands callers one of these, each time the next live one.
            "LIVEKIT_PUBLIC_URL": ",".join(self.livekit_node_urls),
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.effective_database_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_BUCKET": self.s3_bucket,
            "API_PUBLIC_URL": self.api_url,
            "API_INTERNAL_URL": self.api_url,
            "AGENT_HTTP_PORT": str(self.ports.agent_http),
            "LLM_BASE_URL": self.llm_base_url,
            "LLM_MODEL": self.llm_model,
            "RECORDER_HTTP_PORT": str(self.ports.recorder),
            "RECORDER_WEBHOOK_URL": f"{self.api_url}/livekit/webhook",
            "RECORDER_SPOOL_DIR": str(self.state_dir / "recorder"),
            "SIP_HEALTH_URL": self.sip_health_url,
            "WATCHDOG_METRICS_PORT": str(self.ports.watchdog),
            **self.secrets.as_env(),
            **self.extra_env,
        }
