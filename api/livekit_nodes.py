"""Which LiveKit node a caller is sent to: each in turn, skipping one that stopped answering.

With several nodes (`LIVEKIT_PUBLIC_URL` lists them, comma-separated), every node can serve
any room: a room lives on the node chosen at its first join, and a client connected to
another node is relayed through Redis. Handing out the nodes in turn spreads the signalling
load, and a node whose HTTP `/` stopped answering is no longer handed out.
"""

from __future__ import annotations

import asyncio
import time

import httpx

# How long one look at a node's health is believed.
CHECK_TTL_S = 2.0
CHECK_TIMEOUT_S = 0.5


def http_url(url: str) -> str:
    return url.replace("ws://", "http://").replace("wss://", "https://")


class LiveNodes:
    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("at least one LiveKit URL")
        self.urls = urls
        self._next = 0
        self._checked: dict[str, tuple[float, bool]] = {}
        self._lock = asyncio.Lock()

    async def pick(self) -> str:
        """The next node in turn that answers; with none answering, the next one anyway (the
        client's join then fails with LiveKit's own error)."""
        if len(self.urls) == 1:
            return self.urls[0]
        async with self._lock:
            first = self._next
            self._next = (self._next + 1) % len(self.urls)
            for step in range(len(self.urls)):
                url = self.urls[(first + step) % len(self.urls)]
                if await self._alive(url):
                    return url
            return self.urls[first]

    async def _alive(self, url: str) -> bool:
        now = time.monotonic()
        checked = self._checked.get(url)
        if checked is not None and now - checked[0] < CHECK_TTL_S:
            return checked[1]
        try:
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
                ok = (await client.get(f"{http_url(url)}/")).status_code == 200
        except httpx.HTTPError:
            ok = False
        self._checked[url] = (time.monotonic(), ok)
        return ok
