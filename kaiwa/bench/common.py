"""What the benches share: CPU of a process, medians and percentiles, rooms made to order."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api as lkapi

from api.tokens import caller_grants
from core.protocol import AGENT_NAME, LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE
from kaiwa.stack.config import StackConfig


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
    return {"url": cfg.livekit_url, "token": token, "room": room, "identity": identity}


async def create_room(cfg: StackConfig, name: str, dispatch: dict[str, Any]) -> None:
    """A room whose agent dispatch carries `dispatch` as metadata (e.g. a design to run);
    the token's room config is then unused: it applies only to a join that creates it."""
    async with lkapi.LiveKitAPI(
        cfg.livekit_url, cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret
    ) as client:
        await client.room.create_room(
            lkapi.CreateRoomRequest(
                name=name,
                metadata=json.dumps({"mode": dispatch["mode"], "record": True}),
                agents=[
                    lkapi.RoomAgentDispatch(agent_name=AGENT_NAME, metadata=json.dumps(dispatch))
                ],
            )
        )
