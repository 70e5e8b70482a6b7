"""The dispatch cross-check on the session's stack: LiveKit's Go SDK (infra/dispatch-check,
built here on first use) and the Python caller each make a room with an agent dispatch and
see the agent join and its voice arrive. The rounds and the comparison are
`kaiwa bench dispatch` (docs/operations.md)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kaiwa.bench import dispatch
from kaiwa.stack.install import build_repo_go
from kaiwa.stack.services import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.models]


async def test_both_clients_see_the_dispatched_agent_join_and_speak(stack: Stack) -> None:
    binary = await asyncio.to_thread(build_repo_go, "dispatch-check")

    by_go = await dispatch.go_client(stack.cfg, binary, rooms=2)
    by_python = await dispatch.python_client(stack.cfg, rooms=1)

    for room in [*by_go, *by_python]:
        assert not room.get("error"), room
        assert 0 < room["create_s"] <= room["agent_joined_s"] <= room["agent_track_s"], room
    assert len({r["room"] for r in by_go}) == 2, by_go  # each of its rooms its own
    step = dispatch.summary(by_go)
    assert step["rooms"] == 2 and step["errors"] == [] and len(step["agent_joined_s"]) == 2


async def test_the_go_client_reports_an_agent_that_never_comes(stack: Stack) -> None:
    binary = await asyncio.to_thread(build_repo_go, "dispatch-check")
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "--url",
        stack.cfg.livekit_url,
        "--agent-name",
        "no-such-agent",
        "--timeout",
        "3s",
        env={
            "LIVEKIT_API_KEY": stack.cfg.secrets.livekit_api_key,
            "LIVEKIT_API_SECRET": stack.cfg.secrets.livekit_api_secret,
        },
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    (room,) = json.loads(out)["rooms"]
    assert room["agent_joined_s"] is None and "no agent within 3s" in room["error"], room
