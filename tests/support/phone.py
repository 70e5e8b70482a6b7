"""Phone calls in tests: what the stack stored of them, and what the phone heard."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
from livekit import api as lkapi

from agents import engines
from agents.stt.whisper_model import WhisperOptions
from api.admin_auth import mint_admin_token
from kaiwa.phone import CallResult, livekit_api, resample_to
from kaiwa.stack.config import StackConfig


async def conversations(cfg: StackConfig, room_prefix: str) -> list[dict[str, Any]]:
    """The stored conversations whose room name starts with `room_prefix`, as an admin
    lists them."""
    token, _ = mint_admin_token(cfg.secrets.livekit_api_secret, cfg.secrets.admin_password, 600)
    async with httpx.AsyncClient(
        base_url=cfg.api_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        listed = (await client.get("/api/conversations", params={"limit": 100})).json()
    return [c for c in listed["items"] if str(c.get("room_name", "")).startswith(room_prefix)]


async def rooms(cfg: StackConfig, prefix: str = "") -> list[lkapi.Room]:
    async with livekit_api(cfg) as lk:
        listed = await lk.room.list_rooms(lkapi.ListRoomsRequest())
    return [r for r in listed.rooms if r.name.startswith(prefix)]


async def phone_transcript(result: CallResult, language: str, start_s: float = 0.0) -> str:
    """What the phone heard from `start_s` on, as Whisper-base hears it in `language`."""
    text, _ = await phone_heard(result, language, start_s)
    return text


async def phone_heard(
    result: CallResult, language: str | None, start_s: float = 0.0, end_s: float | None = None
) -> tuple[str, str]:
    """What the phone heard between `start_s` and `end_s`, and the language Whisper-base
    hears in it (detects, if None)."""
    pcm, rate = result.heard()
    end = len(pcm) if end_s is None else int(end_s * rate)
    audio = resample_to(pcm[int(start_s * rate) : end], rate, 16000).astype(np.float32) / 32768.0
    engine = engines.whisper("whisper-base")
    heard = await asyncio.to_thread(engine.transcribe, audio, WhisperOptions(language=language))
    return str(heard.text), heard.language


def voiced_seconds(result: CallResult) -> list[tuple[float, float]]:
    """The stretches of voice the phone heard: (start, end) in seconds of its audio."""
    pcm, rate = result.heard()
    step = rate // 50
    loud = [
        np.abs(pcm[i : i + step].astype(np.int32)).max() > 500
        for i in range(0, len(pcm) - step + 1, step)
    ]
    spans: list[tuple[float, float]] = []
    start: int | None = None
    quiet = 0
    for index, is_loud in enumerate([*loud, False]):
        if is_loud:
            start = index if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            # A pause under half a second is inside one utterance.
            if quiet >= 25 or index == len(loud):
                spans.append((start * 0.02, (index - quiet + 1) * 0.02))
                start, quiet = None, 0
    return spans
