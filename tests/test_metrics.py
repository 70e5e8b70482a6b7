"""The API's /metrics: who may read it, what it counts, and the files that scrape and chart it.

The whole stack under a real Prometheus is tests/test_metrics_e2e.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.settings import Settings
from core.paths import REPO_ROOT
from core.webhooks import sign_webhook
from kaiwa.stack.config import Ports, Secrets, StackConfig
from kaiwa.stack.monitoring import scrape_config

from .support import events
from .support.apiclient import admin_headers, api_settings, client_for

pytestmark = pytest.mark.integration

TOKEN = "metrics-token-for-the-tests"


@pytest.fixture
def settings(services_config: StackConfig, tmp_path: Path) -> Settings:
    return api_settings(
        services_config, f"sqlite:///{tmp_path / 'kaiwa.db'}", tmp_path, metrics_token=TOKEN
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # An admin session is not a scraper's token.
    assert (
        client.get(
            "/metrics", headers=admin_headers(client.app.state.resources.settings)
        ).status_code
        == 401
    )
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_are_off_outside_dev_without_a_token(
    services_config: StackConfig, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'kaiwa.db'}"
    with client_for(api_settings(services_config, database, tmp_path)) as client:
        assert client.get("/metrics").status_code == 404
    dev = api_settings(services_config, database, tmp_path, kaiwa_env="dev")
    with client_for(dev) as client:
        assert client.get("/metrics").status_code == 200


def test_requests_are_counted_by_route_template_never_by_path(client: TestClient) -> None:
    before = scrape(client)
    headers = admin_headers(client.app.state.resources.settings)
    for conversation_id in (
        "0f8fad5bd9cb469fa16570867728950e",
        "7c9e6679742540de944be07fc1f90ae7",
    ):
        assert (
            client.get(f"/api/conversations/{conversation_id}", headers=headers).status_code == 404
        )
    client.get("/no/such/route")
    after = scrape(client)

    route = "/api/conversations/{conversation_id}"
    counted = value(after, "kaiwa_http_requests_total", method="GET", route=route, status="404")
    assert (
        counted
        - value(before, "kaiwa_http_requests_total", method="GET", route=route, status="404")
        == 2
    )
    assert value(after, "kaiwa_http_request_duration_seconds_count", method="GET", route=route) >= 2
    # Raw paths (and the ids in them) never become labels.
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert "0f8fad5b" not in text and "/no/such/route" not in text
    assert (
        value(after, "kaiwa_http_requests_total", method="GET", route="unmatched", status="404")
        >= 1
    )


def test_webhooks_are_counted_by_result_and_reason(client: TestClient, settings: Settings) -> None:
    before = scrape(client)
    event = events.event("room_started", room=events.room("RM_metrics", "dialog-metrics"))
    body = events.as_body(event)
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    headers = {"Authorization": auth, "Content-Type": "application/webhook+json"}
    assert client.post("/livekit/webhook", content=body, headers=headers).status_code == 200
    assert client.post("/livekit/webhook", content=body, headers=headers).status_code == 200
    forged = {"Authorization": "forged", "Content-Type": "application/webhook+json"}
    assert client.post("/livekit/webhook", content=body, headers=forged).status_code == 401
    big = b"{" + b" " * (settings.webhook_max_body_bytes + 1) + b"}"
    assert client.post("/livekit/webhook", content=big, headers=headers).status_code == 413
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kaiwa_webhooks_received_total", result="stored") == 1
    assert delta("kaiwa_webhooks_received_total", result="duplicate") == 1
    assert delta("kaiwa_webhooks_rejected_total", reason="signature") == 1
    assert delta("kaiwa_webhooks_rejected_total", reason="too_large") == 1


def stack_config() -> StackConfig:
    return StackConfig(
        state_dir=Path("/nonexistent"), secrets=Secrets("k", "s", "a", "b", "c", "t")
    )


def test_the_committed_scrape_config_is_the_stacks_own() -> None:
    committed = yaml.safe_load((REPO_ROOT / "infra/prometheus/prometheus.yml").read_text())
    assert committed == scrape_config(stack_config())
    jobs = {job["job_name"]: job for job in committed["scrape_configs"]}
    ports = Ports()
    assert jobs["kaiwa-api"]["static_configs"][0]["targets"] == [f"127.0.0.1:{ports.api}"]
    assert jobs["kaiwa-api"]["authorization"]["credentials_file"] == "metrics-token"
    assert jobs["kaiwa-agent"]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{ports.agent_metrics}"
    ]
    assert jobs["kaiwa-recorder"]["static_configs"][0]["targets"] == [f"127.0.0.1:{ports.recorder}"]


METRIC_NAME = re.compile(r"\bkaiwa_[a-z_]+")


def dashboard_queries() -> list[str]:
    dashboard = json.loads((REPO_ROOT / "infra/grafana/kaiwa-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_charts_calls_latency_drops_and_errors() -> None:
    names = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    for wanted in (
        "kaiwa_agent_calls_in_use",
        "kaiwa_stage_seconds_bucket",
        "kaiwa_queue_depth",
        "kaiwa_queue_dropped_total",
        "kaiwa_llm_errors_total",
        "kaiwa_http_requests_total",
    ):
        assert wanted in names
