"""What the benches share: CPU of a process, medians and percentiles, rooms made to order."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api as lkapi

from agents.settings import AGENT_NAME
from kaiwa.stack.config import StackConfig


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


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
