"""Several LiveKit nodes on one Redis: which node a client is sent to, and which one a
service's own API calls go to.

Every node serves any room: a room lives on the node chosen at its first join, and a client
connected to another node is relayed through Redis. So
- callers are handed the nodes in turn (`LiveNodes.pick`), which spreads the signalling load;
- a service's own calls (the API's, the watchdog's, the recorder's) go to the first listed
  node that answers (`LiveNodes.first`), so they carry on when a node dies;
- a node whose HTTP `/` stopped answering is skipped by both.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from livekit import api as lkapi

# How long one look at a node's health is believed.
CHECK_TTL_S = 2.0
CHECK_TIMEOUT_S = 0.5


def http_url(url: str) -> str:
    return url.replace("ws://", "http://").replace("wss://", "https://")


def split_urls(urls: str) -> list[str]:
    """A comma-separated list of LiveKit URLs, as `LIVEKIT_URL` may give them."""
    return [u.strip() for u in urls.split(",") if u.strip()]


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

    async def first(self) -> str:
        """The first listed node that answers, else the first listed."""
        if len(self.urls) == 1:
            return self.urls[0]
        for url in self.urls:
            if await self._alive(url):
                return url
        return self.urls[0]

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


class NodeAPIs:
    """LiveKit's server API on the first node that answers: one client per node, made when
    first needed."""

    def __init__(self, urls: list[str], api_key: str, api_secret: str) -> None:
        self.nodes = LiveNodes(urls)
        self._key = api_key
        self._secret = api_secret
        self._clients: dict[str, lkapi.LiveKitAPI] = {}

    async def api(self) -> lkapi.LiveKitAPI:
        url = await self.nodes.first()
        client = self._clients.get(url)
        if client is None:
            client = lkapi.LiveKitAPI(http_url(url), self._key, self._secret)
            self._clients[url] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
