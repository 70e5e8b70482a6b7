"""Prometheus' view of a stack: which services to scrape, and where.

`kaiwa up` writes the scrape configuration for its ports into the state folder (with the
API's metrics token beside it), so `prometheus --config.file=.kaiwa/prometheus.yml` watches
the running stack; infra/prometheus/prometheus.yml is the same for the default ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import StackConfig

TOKEN_FILE_NAME = "metrics-token"
CONFIG_FILE_NAME = "prometheus.yml"


def scrape_config(
    cfg: StackConfig, *, interval_s: float = 5, token_file: str = TOKEN_FILE_NAME
) -> dict[str, Any]:
    """A Prometheus configuration scraping every service of the stack that has metrics.
    `token_file` holds the API's METRICS_TOKEN (relative paths are the config file's)."""
    p = cfg.ports

    def job(name: str, *ports: int, **extra: Any) -> dict[str, Any]:
        targets = [f"127.0.0.1:{port}" for port in ports]
        return {"job_name": name, "static_configs": [{"targets": targets}], **extra}

    livekit = [p.livekit_metrics, p.livekit_2_metrics][: cfg.livekit_nodes]
    interval = f"{interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            job(
                "kaiwa-api",
                p.api,
                authorization={"type": "Bearer", "credentials_file": token_file},
            ),
            # The first agent worker; more workers (`kaiwa up --workers`) have none.
            job("kaiwa-agent", p.agent_metrics),
            job("kaiwa-recorder", p.recorder),
            job("kaiwa-watchdog", p.watchdog),
            job("livekit", *livekit),
        ],
    }


def write_scrape_config(cfg: StackConfig, directory: Path, **options: Any) -> Path:
    """The configuration and its token file in `directory`; returns the configuration."""
    directory.mkdir(parents=True, exist_ok=True)
    token = directory / TOKEN_FILE_NAME
    token.touch(mode=0o600)
    token.write_text(cfg.secrets.metrics_token)
    path = directory / CONFIG_FILE_NAME
    path.write_text(
        "# Written by kaiwa (kaiwa/stack/monitoring.py) for this stack's ports.\n"
        + yaml.safe_dump(scrape_config(cfg, **options), sort_keys=False)
    )
    return path
