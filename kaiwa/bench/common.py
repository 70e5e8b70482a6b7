"""What the benches share: CPU of a process and the figures of a process group, medians and
percentiles, rooms made to order, a call's stored lines with their latency ledgers, values
read from a Prometheus page, and the worker that runs the reference designs beside a bench's
stack."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from livekit import api as lkapi
from prometheus_client.parser import text_string_to_metric_families

from api.admin_auth import mint_admin_token
from api.settings import Settings
from api.tokens import caller_grants, mint_rejoin_ticket
from core.paths import REPO_ROOT
from core.protocol import AGENT_NAME, LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE
from kaiwa.stack.config import StackConfig
from kaiwa.stack.process import ManagedProcess, free_port
from kaiwa.stack.services import Stack

from .reference import REFERENCE_AGENT_NAME


@dataclass(frozen=True)
class DesignWorker:
    """The worker a design runs in."""

    service: str  # its service in the bench's stack: its process, for CPU, and its log
    agent_name: str  # the agent name its rooms are dispatched to


PRODUCT = DesignWorker("agent", AGENT_NAME)
REFERENCE = DesignWorker("reference", REFERENCE_AGENT_NAME)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def bench_grant(
    cfg: StackConfig, room: str, identity: str, *, mode: str, language: str
) -> dict[str, Any]:
    """A caller's grant for a room the bench made itself (create_room): the API gives no
    token for a dialog room that already exists, since a dialog has one caller."""
    token = (
        lkapi.AccessToken(cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(caller_grants(room))
        .with_attributes({LANGUAGE_ATTRIBUTE: language, MODE_ATTRIBUTE: mode})
        .to_jwt()
    )
    # And the ticket the API gives with it, for the caller's own requests (PUT /api/call/…).
    keys = Settings(
        livekit_api_key=cfg.secrets.livekit_api_key,
        livekit_api_secret=cfg.secrets.livekit_api_secret,
    )
    rejoin = mint_rejoin_ticket(keys, room, identity)
    return {
        "url": cfg.livekit_url,
        "token": token,
        "room": room,
        "identity": identity,
        "rejoin": rejoin,
    }


async def create_room(
    cfg: StackConfig, name: str, dispatch: dict[str, Any], *, agent_name: str = AGENT_NAME
) -> None:
    """A room dispatched to the worker registered as `agent_name` (the product's, or the
    reference worker's), with `dispatch` as the job's metadata; the token's room config is
    then unused: it applies only to a join that creates it."""
    async with lkapi.LiveKitAPI(
        cfg.livekit_url, cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
    ) as client:
        await client.room.create_room(
            lkapi.CreateRoomRequest(
                name=name,
                metadata=json.dumps({"mode": dispatch["mode"], "record": True}),
                agents=[
                    lkapi.RoomAgentDispatch(agent_name=agent_name, metadata=json.dumps(dispatch))
                ],
            )
        )


async def stored_lines(
    cfg: StackConfig,
    room_name: str,
    *,
    done: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout_s: float = 30,
) -> list[dict[str, Any]]:
    """The room's transcript as an admin reads it (each line with its latency ledger),
    once `done` holds for it or `timeout_s` has passed."""
    token, _ = mint_admin_token(cfg.secrets.livekit_api_secret, cfg.secrets.admin_password, 600)
    lines: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        base_url=cfg.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        for _ in range(int(timeout_s)):
            listing = (await client.get("/api/conversations", params={"room": room_name})).json()
            if listing["items"]:
                conversation_id = listing["items"][0]["id"]
                body = (await client.get(f"/api/conversations/{conversation_id}")).json()
                lines = body["transcript"]
                if done(lines):
                    return lines
            await asyncio.sleep(1)
    return lines


def ledger_medians(lines: list[dict[str, Any]]) -> dict[str, float | None]:
    """The median of each stage of the lines' ledgers (docs/operations.md), in seconds."""
    seen: dict[str, list[float]] = {}
    for line in lines:
        for stage, seconds in line.get("timings", {}).items():
            seen.setdefault(stage, []).append(float(seconds))
    return {f"{stage}_s_median": median(values) for stage, values in sorted(seen.items())}


def start_reference_worker(stack: Stack) -> None:
    """Start the reference designs' worker (kaiwa/bench/reference) beside the stack and wait
    until it has registered. It is one of the stack's services from then on (REFERENCE),
    so stopping the stack stops it.

    A bench starts it once the product has been measured: it then neither loads its models
    nor idles beside the product's calls."""
    cfg = stack.cfg
    ready_file = cfg.state_dir / "reference-worker.ready"
    ready_file.unlink(missing_ok=True)
    service = ManagedProcess(
        name=REFERENCE.service,
        argv=[sys.executable, "-m", "kaiwa.bench.reference", "--ready-file", str(ready_file)],
        # The product worker holds the stack's agent port.
        env={
            **cfg.service_env(),
            "AGENT_HTTP_PORT": str(free_port()),
            "LIVEKIT_URL": cfg.livekit_url,
        },
        cwd=REPO_ROOT,
        log_path=cfg.logs_dir / "reference.log",
        ready=ready_file.exists,
        # As the product worker: importing livekit-agents and loading models on 2 cores.
        ready_timeout_s=120,
        stop_timeout_s=3,
    )
    stack.services[service.name] = service
    service.start()
    service.wait_ready()


def group_stats(pgid: int) -> dict[str, float]:
    """Memory, descriptors, threads and CPU seconds of every process in a process group (a
    service and whatever it started: a worker's job processes, the LLM server's)."""
    rss = fds = threads = ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields_after_name = stat.rsplit(")", 1)[1].split()
            if int(fields_after_name[2]) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss += int(fields["VmRSS"].split()[0]) * 1024
            threads += int(fields["Threads"])
            fds += len(os.listdir(f"/proc/{entry}/fd"))
            ticks += int(fields_after_name[11]) + int(fields_after_name[12])  # utime + stime
        except (FileNotFoundError, ProcessLookupError, KeyError, ValueError):
            continue  # the process ended while it was read
    cpu_s = ticks / os.sysconf("SC_CLK_TCK")
    return {"rss_bytes": rss, "fds": fds, "threads": threads, "cpu_s": cpu_s}


def metric_values(text: str, name: str, label: str | None = None) -> dict[str, float]:
    """Values of one metric in a Prometheus page, by `label` (or under ""), summed over the
    samples that share it (a counter by mode, whatever its other labels)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get(label, "") if label else ""
                found[key] = found.get(key, 0.0) + sample.value
    return found
