"""ASGI middleware for every request: a cap on body size, and the browser security headers."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """413 for a body over `limit` bytes: at once when Content-Length says so, else as soon
    as the streamed body passes it, before the route has read it whole."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Iterable[str] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            # Past the limit: answer 413 here, and tell the app the client went away (an
            # exception would be turned into a 400 by FastAPI's body parsing).
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def content_security_policy(livekit_urls: Iterable[str], media_origins: Iterable[str]) -> str:
    """Only our own scripts and styles; connections to ourselves and LiveKit's nodes (their
    signalling websocket, and their HTTP validate call on a failed join); media from
    ourselves, blobs and the recordings store; no framing by anyone."""
    livekit = [
        origin
        for url in livekit_urls
        for origin in (url, url.replace("ws://", "http://").replace("wss://", "https://"))
    ]
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "media-src": " ".join(["'self'", "blob:", *media_origins]),
        "connect-src": " ".join(["'self'", *livekit]),
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class SecurityHeaders:
    """The headers every answer carries, and `Cache-Control: no-store` on every API answer
    that sets none itself (tokens, admin data: nothing a shared cache may keep)."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if api:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
