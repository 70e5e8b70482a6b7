"""Helpers for recording tests and the recorder bench: tones to speak, objects to inspect."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from kaiwa.audio_files import RATE
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import s3_client


def rms(samples: np.ndarray[Any, np.dtype[np.float32]], start_s: float, end_s: float) -> float:
    window = samples[int(start_s * RATE) : int(end_s * RATE)]
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) if len(window) else 0.0


@dataclass
class StoredRecording:
    """One egress as its manifest in the S3 server describes it, plus its audio."""

    manifest: dict[str, Any]
    data: bytes

    @property
    def kind(self) -> str:
        return "room" if "roomComposite" in self.manifest else "track"

    @property
    def identity(self) -> str | None:
        """Whose track it is: a track egress names them in its details."""
        if "track" not in self.manifest:
            return None
        details = json.loads(self.manifest.get("details") or "{}")
        return details.get("participant_identity") or None

    @property
    def status(self) -> str:
        return str(self.manifest["status"])

    @property
    def started_ns(self) -> int:
        return int(self.manifest["startedAt"])

    @property
    def file(self) -> dict[str, Any]:
        files: list[dict[str, Any]] = self.manifest.get("fileResults", [])
        return files[0]


def stored_recordings(cfg: StackConfig, room_sid: str) -> list[StoredRecording]:
    client = s3_client(cfg)
    listed = client.list_objects_v2(Bucket=cfg.s3_bucket, Prefix=f"recordings/{room_sid}/")
    out = []
    for item in listed.get("Contents", []):
        key = item["Key"]
        if not key.endswith(".json"):
            continue
        manifest = json.loads(client.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read())
        audio_key = key.removesuffix(".json")
        data = client.get_object(Bucket=cfg.s3_bucket, Key=audio_key)["Body"].read()
        out.append(StoredRecording(manifest, data))
    return out


async def wait_for_recordings(
    cfg: StackConfig, room_sid: str, count: int, timeout_s: float = 60.0, *, mixes: int = 1
) -> list[StoredRecording]:
    """Manifests are written when a recording ends: wait until `count` of them exist, `mixes`
    of them room mixes."""
    deadline = time.monotonic() + timeout_s
    found: list[StoredRecording] = []
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(stored_recordings, cfg, room_sid)
        if len(found) >= count and sum(r.kind == "room" for r in found) >= mixes:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"{len(found)} of {count} recordings stored for {room_sid}")
