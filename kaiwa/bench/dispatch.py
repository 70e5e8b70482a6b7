"""`kaiwa bench dispatch`: agent dispatch and join, timed by two different clients.

`kaiwa bench load` times dispatch and join with Kaiwa's Python caller (livekit's Rust-based
rtc SDK). This bench times the same path with a second client, LiveKit's Go SDK
(infra/dispatch-check), in place of `lk perf agent-load-test`, which cannot be built here.
Both do what that tool does: make N rooms at once, each with an agent dispatch (a dialog in
the `assistant` scenario), join one participant to each, and time the room made → the agent
in the room → the agent's audio track subscribed.

Each step (N rooms at once) runs `ROUNDS` times per client, the clients taking turns going
first, and the worker is let go idle (no call in use) before every round: both clients meet
the same worker state. Where the two clients' medians agree, the figure is the stack's, not
a client's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from livekit import api as lkapi
from livekit import rtc

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.install import build_repo_go
from kaiwa.stack.services import Stack, ephemeral_config

from .common import bench_grant, create_room, median, metric_values

ROUNDS = 3
DISPATCH = {"mode": "dialog", "scenario": "assistant"}
AGENT_TIMEOUT_S = 120.0


async def go_client(cfg: StackConfig, binary: Path, rooms: int) -> list[dict[str, Any]]:
    """The Go SDK's rooms: one JSON object per room, as infra/dispatch-check prints them."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "--url",
        cfg.livekit_url,
        "--rooms",
        str(rooms),
        "--metadata",
        json.dumps(DISPATCH),
        "--timeout",
        f"{AGENT_TIMEOUT_S:.0f}s",
        env={
            **os.environ,
            "LIVEKIT_API_KEY": cfg.secrets.livekit_api_key,
            "LIVEKIT_API_SECRET": cfg.secrets.livekit_api_secret,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dispatch-check failed ({proc.returncode}): {err.decode()[-2000:]}")
    results: list[dict[str, Any]] = json.loads(out)["rooms"]
    return results


async def python_client(cfg: StackConfig, rooms: int) -> list[dict[str, Any]]:
    """The Python caller's rooms, timed as the Go client times its own."""
    return list(await asyncio.gather(*(_python_room(cfg, i) for i in range(rooms))))


async def _python_room(cfg: StackConfig, index: int) -> dict[str, Any]:
    room = f"dispatch-py-{index}-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"room": room, "agent_joined_s": None, "agent_track_s": None}
    made = time.monotonic()
    await create_room(cfg, room, DISPATCH)
    result["create_s"] = time.monotonic() - made
    caller = SyntheticCaller(cfg.api_url, name=f"Dispatch {index}", mode="dialog")
    try:
        grant = bench_grant(cfg, room, f"dispatch-{index}", mode="dialog", language="en")
        await caller.connect(grant)
        agent = await caller.wait_for_agent(timeout_s=AGENT_TIMEOUT_S)
        result["agent_joined_s"] = time.monotonic() - made
        deadline = made + AGENT_TIMEOUT_S
        while not _audio_subscribed(agent):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agent track in {room}")
            await asyncio.sleep(0.01)
        result["agent_track_s"] = time.monotonic() - made
    except Exception as error:  # reported per room, as the Go client does
        result["error"] = str(error) or type(error).__name__
    finally:
        await caller.leave()
        await _delete_room(cfg, room)
    return result


def _audio_subscribed(participant: rtc.RemoteParticipant) -> bool:
    return any(
        p.kind == rtc.TrackKind.KIND_AUDIO and p.track is not None
        for p in participant.track_publications.values()
    )


async def _delete_room(cfg: StackConfig, room: str) -> None:
    async with lkapi.LiveKitAPI(
        cfg.livekit_url, cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
    ) as client:
        await client.room.delete_room(lkapi.DeleteRoomRequest(room=room))


async def worker_idle(cfg: StackConfig, timeout_s: float = 90.0) -> None:
    """Until the worker serves no call: the rooms of the round before have all ended."""
    url = f"http://127.0.0.1:{cfg.ports.agent_metrics}/metrics"
    deadline = time.monotonic() + timeout_s
    in_use: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            in_use = metric_values((await client.get(url)).text, "kaiwa_agent_calls_in_use")
            if sum(in_use.values()) == 0:
                return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the worker still serves calls: {in_use}")


def summary(rooms: list[dict[str, Any]]) -> dict[str, Any]:
    joined = [r["agent_joined_s"] for r in rooms if r.get("agent_joined_s") is not None]
    track = [r["agent_track_s"] for r in rooms if r.get("agent_track_s") is not None]
    return {
        "rooms": len(rooms),
        "errors": [r["error"] for r in rooms if r.get("error")],
        "agent_joined_s_median": median(joined),
        "agent_track_s_median": median(track),
        "agent_joined_s": [round(v, 3) for v in joined],
    }


async def compare(stack: Stack, binary: Path, steps: tuple[int, ...]) -> dict[str, Any]:
    """Each step's rooms through both clients, `ROUNDS` rounds each, taking turns."""
    cfg = stack.cfg
    report: dict[str, Any] = {}
    for rooms in steps:
        measured: dict[str, list[dict[str, Any]]] = {"go": [], "python": []}
        for round_ in range(ROUNDS):
            order = ("go", "python") if round_ % 2 == 0 else ("python", "go")
            for client in order:
                await worker_idle(cfg)
                if client == "go":
                    measured["go"] += await go_client(cfg, binary, rooms)
                else:
                    measured["python"] += await python_client(cfg, rooms)
                _progress(f"{rooms} room(s), round {round_ + 1}, {client} done")
        step = {client: summary(results) for client, results in measured.items()}
        go_median = step["go"]["agent_joined_s_median"]
        python_median = step["python"]["agent_joined_s_median"]
        if go_median and python_median:
            step["go_to_python_joined"] = round(go_median / python_median, 3)
        report[str(rooms)] = step
    return report


def _progress(line: str) -> None:
    print(f"==> dispatch: {line}", file=sys.stderr, flush=True)


async def run(steps: tuple[int, ...]) -> dict[str, Any]:
    binary = await asyncio.to_thread(build_repo_go, "dispatch-check")
    with tempfile.TemporaryDirectory(prefix="kaiwa-dispatch-") as state_dir:
        cfg = ephemeral_config(
            Path(state_dir), extra_env={"TOKEN_RATE_LIMIT": "1000", "AGENT_MAX_SESSIONS": "20"}
        )
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            steps_report = await compare(stack, binary, steps)
        finally:
            await asyncio.to_thread(stack.stop)
    return {"rounds": ROUNDS, "dispatch": DISPATCH, "steps": steps_report}
