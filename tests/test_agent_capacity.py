"""Every call up to AGENT_MAX_SESSIONS gets an agent, and a call past it is not lost silently.

LiveKit dispatches a job to a worker while the worker's load is under the server's
`agents.target_load`, and never retries a dispatch. The worker reports load as calls /
AGENT_MAX_SESSIONS, so the target must be 1.0 for the setting to mean what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

from .support.servers import SMALL_LLM, make_stack_config, running_stack

pytestmark = pytest.mark.e2e

MAX_CALLS = 4
# The worker sends LiveKit its load every 2.5 s (livekit-agents' UPDATE_STATUS_INTERVAL).
LOAD_REPORT_S = 3.0


@pytest.fixture(scope="module")
def four_slot_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack, with one worker of four call slots."""
    cfg = make_stack_config(tmp_path_factory.mktemp("capacity"), llm_model=SMALL_LLM)
    cfg = replace(cfg, extra_env={**cfg.extra_env, "AGENT_MAX_SESSIONS": str(MAX_CALLS)})
    with running_stack(cfg) as running:
        yield running


@contextlib.asynccontextmanager
async def calls(stack: Stack, count: int) -> AsyncIterator[list[SyntheticCaller]]:
    callers = [
        SyntheticCaller(stack.cfg.api_url, name=f"Caller {i}", mode="interpret", language="en")
        for i in range(count)
    ]
    try:
        yield callers
    finally:
        await asyncio.gather(*(c.leave() for c in callers), return_exceptions=True)


async def agent_worker_health(stack: Stack) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=stack.cfg.api_url) as client:
        component: dict[str, object] = (await client.get("/healthz")).json()["components"][
            "agent_worker"
        ]
    return component


async def worker_metrics(stack: Stack) -> dict[str, float]:
    """The worker's call gauges, from its Prometheus /metrics."""
    url = f"http://127.0.0.1:{stack.cfg.ports.agent_metrics}/metrics"
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("kaiwa_agent_calls")
    }


async def wait_for_detail(stack: Stack, text: str, timeout_s: float = 20) -> dict[str, object]:
    """The worker's presence record refreshes every few seconds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        health = await agent_worker_health(stack)
        if text in str(health["detail"]) or asyncio.get_running_loop().time() > deadline:
            return health
        await asyncio.sleep(0.5)


async def test_every_slot_serves_a_call_and_the_next_call_is_reported(
    four_slot_stack: Stack,
) -> None:
    stack = four_slot_stack
    async with calls(stack, MAX_CALLS) as served:
        # Calls arrive one after another, each once the worker has reported the last one's
        # load to LiveKit. Each of the four gets an agent (with LiveKit's default target load
        # of 0.7, the fourth got none: 3 / 4 calls is a load of 0.75).
        for number, caller in enumerate(served, start=1):
            await caller.join()
            await caller.wait_for_agent(timeout_s=30)
            health = await wait_for_detail(stack, f"{number} of {MAX_CALLS} call slots in use")
            assert f"{number} of {MAX_CALLS}" in str(health["detail"]), health
            # What an autoscaler reads (infra/k8s): the worker's own gauges.
            assert await worker_metrics(stack) == {
                "kaiwa_agent_calls_in_use": number,
                "kaiwa_agent_calls_max": MAX_CALLS,
            }
            await asyncio.sleep(LOAD_REPORT_S)
        assert health["ok"] is True, health  # at capacity, not broken
        assert "full" in str(health["detail"]), health

        async with calls(stack, 1) as (turned_away,):
            await turned_away.join()
            with pytest.raises(TimeoutError):
                await turned_away.wait_for_agent(timeout_s=10)

        log = await asyncio.to_thread(Path(stack.services["agent"].log_path).read_text)
        assert "worker full: every call slot is in use" in log
