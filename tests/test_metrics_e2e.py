"""A real Prometheus scraping the whole stack through a call, as an operator would run it.

Prometheus (Debian's) is started on a free port with the scrape configuration `kaiwa up`
writes (kaiwa/stack/monitoring.py), and queried over its HTTP API with PromQL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents import engines
from core.paths import REPO_ROOT
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.monitoring import write_scrape_config
from kaiwa.stack.process import free_port
from kaiwa.stack.services import Stack, binary

from .support.calls import speech, wait_for, wait_interpreted

pytestmark = [pytest.mark.e2e, pytest.mark.models]

SAID = "Where is the nearest train station? I would like to buy a ticket to Osaka."
SAID_WORDS = ("nearest", "station", "ticket", "osaka")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.get("/api/v1/query", params={"query": promql})
        body = response.json()
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """A query's single value, or None when it has no series (yet)."""
        result = await self.query(promql)
        return float(result[0]["value"][1]) if result else None

    async def wait_value(self, promql: str, accept: Any, what: str, timeout_s: float = 60) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.value(promql)
            if found is not None and accept(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {promql} = {found}")
            await asyncio.sleep(1)


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    directory = tmp_path_factory.mktemp("prometheus")
    config = write_scrape_config(stack.cfg, directory, interval_s=1)
    port = free_port()
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (directory / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not get ready"
            time.sleep(0.5)
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
async def call(stack: Stack) -> AsyncIterator[tuple[SyntheticCaller, SyntheticCaller]]:
    alice = SyntheticCaller(
        stack.cfg.api_url, name="Alice Metrics", mode="interpret", language="en"
    )
    await alice.join()
    kenji = SyntheticCaller(
        stack.cfg.api_url,
        name="Kenji Metrics",
        mode="interpret",
        language="ja",
        room_name=alice.room_name,
    )
    await kenji.join()
    try:
        await alice.open_microphone(engines.voice("en").sample_rate)
        await kenji.open_microphone(engines.voice("ja").sample_rate)
        await wait_interpreted(kenji, alice)
        yield alice, kenji
    finally:
        await kenji.leave()
        await alice.leave()


def metrics_endpoints(stack: Stack) -> dict[str, tuple[str, dict[str, str]]]:
    cfg = stack.cfg
    token = {"Authorization": f"Bearer {cfg.secrets.metrics_token}"}
    return {
        "api": (f"{cfg.api_url}/metrics", token),
        "agent": (f"http://127.0.0.1:{cfg.ports.agent_metrics}/metrics", {}),
        "recorder": (f"{cfg.recorder_url}/metrics", {}),
        "watchdog": (f"http://127.0.0.1:{cfg.ports.watchdog}/metrics", {}),
    }


def translated(caller: SyntheticCaller) -> list[str]:
    return [
        t.text
        for t in caller.texts
        if t.attributes.get("lk.transcription_final") == "true"
        and t.attributes.get("language") == "ja"
        and "kaiwa.source_segment_id" in t.attributes
    ]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((REPO_ROOT / "infra/grafana/kaiwa-dashboard.json").read_text())
    return [
        # Grafana's own interval variable, as Prometheus alone has none.
        target["expr"].replace("$__rate_interval", "1m")
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


async def test_prometheus_sees_the_call_its_stages_and_no_personal_data(
    stack: Stack, prometheus: Prometheus, call: tuple[SyntheticCaller, SyntheticCaller]
) -> None:
    alice, kenji = call
    # Every service is scraped (the API with its token), LiveKit's nodes included.
    for job in ("kaiwa-api", "kaiwa-agent", "kaiwa-recorder", "kaiwa-watchdog", "livekit"):
        await prometheus.wait_value(f'min(up{{job="{job}"}})', lambda v: v == 1, f"{job} up")
    # Earlier calls of the session may still be ending: this one is, in the end, alone.
    await prometheus.wait_value(
        "sum(kaiwa_agent_calls_in_use)", lambda v: v == 1, "the call in use", timeout_s=90
    )
    stages = 'sum(kaiwa_stage_seconds_count{{mode="interpret",stage="{}"}}) or vector(0)'
    before = {
        s: await prometheus.value(stages.format(s)) or 0 for s in ("translation", "first_frame")
    }

    await alice.say(*speech("en", SAID))
    await wait_for(lambda: translated(kenji), 60, "Alice's words in Japanese", kenji)

    # The stage histograms counted this call's sentences, in the pipeline's own terms.
    for stage, counted in before.items():
        await prometheus.wait_value(
            stages.format(stage), lambda v, c=counted: v > c, f"{stage} counted"
        )
    await prometheus.wait_value(
        'sum(kaiwa_stage_seconds_count{mode="interpret",stage="final_transcript",language="en"})',
        lambda v: v > 0,
        "end of speech to final counted",
    )
    assert await prometheus.value("sum(kaiwa_agent_calls_max)") == 10
    await prometheus.wait_value(
        "sum(kaiwa_recorder_recordings_active)", lambda v: v >= 1, "the call being recorded"
    )
    queues = {r["metric"]["queue"] for r in await prometheus.query("kaiwa_queue_depth")}
    assert {"speaker_audio", "untranslated", "voice_sentences", "history_segments"} <= queues
    # The dashboard's every query is valid PromQL over names the stack exports.
    exported = set(
        (await httpx.AsyncClient().get(f"{prometheus.url}/api/v1/label/__name__/values")).json()[
            "data"
        ]
    )
    for query in dashboard_queries():
        await prometheus.query(query)
    assert {
        "kaiwa_stage_seconds_bucket",
        "kaiwa_http_requests_total",
        "kaiwa_http_request_duration_seconds_bucket",
        "kaiwa_queue_depth",
        "kaiwa_recorder_written_bytes_total",
        "kaiwa_history_segments_total",
    } <= exported

    # No metric carries who called or what was said: identities, names, the room, words.
    personal = [
        alice.identity,
        kenji.identity,
        "Alice Metrics",
        "Kenji Metrics",
        alice.room_name or "",
        *SAID_WORDS,
        *translated(kenji),
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for service, (url, headers) in metrics_endpoints(stack).items():
            text = (await client.get(url, headers=headers)).text
            assert text.startswith("#"), (service, text[:200])
            lowered = text.lower()
            leaked = [p for p in personal if p and p.lower() in lowered]
            assert not leaked, (service, leaked)


async def scrape_through(url: str, headers: dict[str, str], stop: asyncio.Event) -> list[str]:
    """Scrape every 50 ms until `stop`: each answer's status, or the connection error."""
    outcomes: list[str] = []
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            try:
                response = await client.get(url, headers=headers)
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
            else:
                if response.status_code == 200:
                    # Whole metrics, never a half-written page.
                    list(text_string_to_metric_families(response.text))
                outcomes.append(str(response.status_code))
            await asyncio.sleep(0.05)
    return outcomes


@pytest.mark.parametrize("service", ["api", "recorder", "agent"])
async def test_a_scrape_while_a_service_restarts_is_metrics_or_a_clean_refusal(
    stack: Stack, service: str
) -> None:
    url, headers = metrics_endpoints(stack)[service]
    process = stack.services[service]
    stop = asyncio.Event()
    scraper = asyncio.create_task(scrape_through(url, headers, stop))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(process.stop)
    await asyncio.to_thread(process.start)
    await asyncio.to_thread(process.wait_ready)
    await asyncio.sleep(0.5)
    stop.set()
    outcomes = await scraper
    assert not [
        o for o in outcomes if o not in ("200", "ConnectError", "RemoteProtocolError", "ReadError")
    ], outcomes
    refused_at = outcomes.index("ConnectError")
    assert "200" in outcomes[:refused_at] and "200" in outcomes[refused_at:], outcomes
