"""Phone calls in tests: trunks and rules in the stack's LiveKit, and what the phone heard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from google.protobuf.duration_pb2 import Duration
from livekit import api as lkapi

from agents import engines
from agents.stt.whisper_model import WhisperOptions
from api.admin_auth import mint_admin_token
from core.protocol import LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE, Mode
from core.rooms import room_configuration
from kaiwa.phone import CallResult, resample_to
from kaiwa.stack.config import StackConfig


def livekit_api(cfg: StackConfig) -> lkapi.LiveKitAPI:
    return lkapi.LiveKitAPI(
        f"http://127.0.0.1:{cfg.ports.livekit}",
        cfg.secrets.livekit_api_key,
        cfg.secrets.livekit_api_secret,
    )


@dataclass
class Line:
    """One inbound number: its trunk and dispatch rule."""

    number: str
    trunk_id: str
    rule_id: str
    room_prefix: str


@contextlib.asynccontextmanager
async def phone_line(
    cfg: StackConfig,
    number: str,
    *,
    mode: Mode = "dialog",
    scenario: str | None = "assistant",
    language: str = "en",
    allowed_addresses: tuple[str, ...] = ("127.0.0.1/32",),
    auth: tuple[str, str] | None = None,
    ringing_timeout_s: int = 15,
    room_prefix: str = "phone",
    agent_name: str | None = None,
    room_name: str | None = None,
) -> AsyncIterator[Line]:
    """A trunk for `number` and a rule that puts its calls in a new room with the agent
    (`agent_name`: another one, which no worker serves); both deleted afterwards (LiveKit
    refuses a second trunk on the same number). With `room_name`, calls join that room."""
    room_config = room_configuration(mode=mode, scenario=scenario, record=True, max_participants=8)
    if agent_name is not None:
        room_config.agents[0].agent_name = agent_name
    async with livekit_api(cfg) as lk:
        trunk = await lk.sip.create_inbound_trunk(
            lkapi.CreateSIPInboundTrunkRequest(
                trunk=lkapi.SIPInboundTrunkInfo(
                    name=f"test {number}",
                    numbers=[number],
                    allowed_addresses=list(allowed_addresses),
                    auth_username=auth[0] if auth else "",
                    auth_password=auth[1] if auth else "",
                    ringing_timeout=Duration(seconds=ringing_timeout_s),
                )
            )
        )
        rule = await lk.sip.create_dispatch_rule(
            lkapi.CreateSIPDispatchRuleRequest(
                dispatch_rule=lkapi.SIPDispatchRuleInfo(
                    name=f"test {number}",
                    trunk_ids=[trunk.sip_trunk_id],
                    rule=lkapi.SIPDispatchRule(
                        dispatch_rule_direct=lkapi.SIPDispatchRuleDirect(room_name=room_name)
                    )
                    if room_name
                    else lkapi.SIPDispatchRule(
                        dispatch_rule_callee=lkapi.SIPDispatchRuleCallee(
                            room_prefix=room_prefix, randomize=True
                        )
                    ),
                    attributes={LANGUAGE_ATTRIBUTE: language, MODE_ATTRIBUTE: mode},
                    room_config=room_config,
                )
            )
        )
        try:
            yield Line(number, trunk.sip_trunk_id, rule.sip_dispatch_rule_id, room_prefix)
        finally:
            await lk.sip.delete_dispatch_rule(
                lkapi.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
            )
            await lk.sip.delete_trunk(lkapi.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))


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
    result: CallResult, language: str | None, start_s: float = 0.0
) -> tuple[str, str]:
    """What the phone heard, and the language Whisper-base hears (detects, if None)."""
    pcm, rate = result.heard()
    audio = resample_to(pcm[int(start_s * rate) :], rate, 16000).astype(np.float32) / 32768.0
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
