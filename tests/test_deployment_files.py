"""The Kubernetes files agree with the code they deploy: a renamed gauge or a changed drain
timeout would otherwise break autoscaling or rolling updates without an error anywhere."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agents.settings import AgentSettings
from agents.worker import CALLS_IN_USE
from core.paths import REPO_ROOT

pytestmark = pytest.mark.unit

K8S = REPO_ROOT / "infra" / "k8s"


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = yaml.safe_load_all((K8S / "kaiwa.yaml").read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def agent_container() -> dict[str, Any]:
    (container,) = manifests()[("Deployment", "kaiwa-agent")]["spec"]["template"]["spec"][
        "containers"
    ]
    return dict(container)


def test_the_worker_autoscaler_scales_on_the_gauge_the_worker_exports() -> None:
    (described,) = CALLS_IN_USE.describe()
    gauge = described.name
    (metric,) = manifests()[("HorizontalPodAutoscaler", "kaiwa-agent")]["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == gauge
    (rule,) = yaml.safe_load((K8S / "prometheus-adapter.yaml").read_text())["rules"]["custom"]
    assert gauge in rule["seriesQuery"] and rule["name"]["as"] == gauge
    # The target leaves free slots on every worker, and Prometheus scrapes the port served.
    env = {e["name"]: e["value"] for e in agent_container()["env"]}
    assert int(metric["pods"]["target"]["averageValue"]) < int(env["AGENT_MAX_SESSIONS"])
    template = manifests()[("Deployment", "kaiwa-agent")]["spec"]["template"]
    port = template["metadata"]["annotations"]["prometheus.io/port"]
    assert port == env["AGENT_METRICS_PORT"]
    assert {"containerPort": int(port), "name": "metrics"} in agent_container()["ports"]


def test_a_draining_worker_is_not_killed_before_its_drain_ends() -> None:
    deployment = manifests()[("Deployment", "kaiwa-agent")]["spec"]
    env = {e["name"]: e["value"] for e in agent_container()["env"]}
    drain_s = int(env.get("AGENT_DRAIN_TIMEOUT_S", AgentSettings().agent_drain_timeout_s))
    assert deployment["template"]["spec"]["terminationGracePeriodSeconds"] == drain_s + 30
    # A draining worker takes nothing: the new pod must be up before the old one stops.
    rolling = deployment["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}
