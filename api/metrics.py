"""What the API measures, for Prometheus: its requests by route template, and webhooks.

Routes are labelled by their template (`/api/conversations/{conversation_id}`), never the
raw path: ids in paths would make a series per conversation, and carry data.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "kaiwa_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "kaiwa_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOKS_RECEIVED = Counter(
    "kaiwa_webhooks_received",
    "LiveKit webhooks accepted, by result: stored, or duplicate (delivered before)",
    ["result"],
)
WEBHOOKS_REJECTED = Counter(
    "kaiwa_webhooks_rejected",
    "LiveKit webhooks refused, by reason: signature, malformed, too_large",
    ["reason"],
)
# Methods a client may send anything as: the label keeps to these.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope) -> str:
    """The matched route's template; `static` for the web app's files; `unmatched` else."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "static" if scope.get("endpoint") is not None else "unmatched"


class RequestMetrics:
    """Counts and times every HTTP request, by the route template it was routed to."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escaped every handler

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = route_of(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)
