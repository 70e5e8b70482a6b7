"""The phone side of /healthz: the SIP bridge's own health port, and open dispatch rules.

An open dispatch rule (one with no trunk) lets anyone who reaches the SIP port start a call
with an agent (core/sip_policy.py says why); it is reported as a failure, like a component
that is down. The bridge answering 429 is over its CPU limit: it still takes inbound calls
but refuses outbound ones, so it is reported as degraded, not down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from livekit import api as lkapi

from core.sip_policy import open_rules, rule_label

BridgeState = Literal["ok", "degraded", "down"]

# /healthz may be polled every second by a load balancer: LiveKit's rule list is read at
# most this often per API process.
RULES_CACHE_S = 5.0


@dataclass(frozen=True)
class Bridge:
    state: BridgeState
    detail: str


async def bridge_health(url: str, timeout_s: float) -> Bridge:
    """The bridge's health port: 200 ok, 429 over its CPU limit, anything else down."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return Bridge("down", f"bridge unreachable ({exc.__class__.__name__})")
    if response.status_code == 200:
        return Bridge("ok", "bridge ok")
    if response.status_code == 429:
        return Bridge("degraded", "bridge over its CPU limit (429): outbound calls refused")
    return Bridge("down", f"bridge not serving ({response.status_code})")


class OpenRuleWatch:
    """Open dispatch rules in LiveKit, looked up at most every `ttl_s`; a failed lookup is
    remembered as long, so a LiveKit that is away is not asked on every /healthz."""

    def __init__(
        self, ttl_s: float = RULES_CACHE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s, self._clock = ttl_s, clock
        self._lock = asyncio.Lock()
        self._at: float | None = None
        self._labels: list[str] = []
        self._error: Exception | None = None

    async def labels(self, livekit: lkapi.LiveKitAPI, timeout_s: float) -> list[str]:
        """The open rules, as "rule "name" (id)"; raises what the lookup raised."""
        async with self._lock:  # concurrent /healthz calls share one lookup
            if self._at is None or self._clock() - self._at >= self._ttl_s:
                try:
                    listed = await asyncio.wait_for(
                        livekit.sip.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest()),
                        timeout_s,
                    )
                    self._labels = [rule_label(r) for r in open_rules(listed.items)]
                    self._error = None
                except Exception as exc:
                    self._error = exc
                self._at = self._clock()
            if self._error is not None:
                raise self._error
            return list(self._labels)
