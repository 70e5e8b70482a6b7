"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.logs import setup_logging
from core.loop_metrics import LOOP_TASKS

from .deps import Resources
from .errors import database_unavailable, validation_error
from .metrics import RequestMetrics
from .middleware import BodyLimit, SecurityHeaders, content_security_policy
from .routes import (
    admin,
    call,
    conversations,
    health,
    metrics,
    recordings,
    segments,
    token,
    webhook,
)
from .settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging()
        LOOP_TASKS.watch()
        resources = await Resources.open(settings)
        app.state.resources = resources
        try:
            yield
        finally:
            await resources.aclose()

    app = FastAPI(title="Kaiwa API", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, validation_error)
    # A database that cannot be reached: OperationalError (connect refused, server gone),
    # InterfaceError (a connection closed under us). Other database errors stay 500s.
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        # The webhook route reads and limits its raw body itself (it signs the raw bytes).
        exempt=("/livekit/webhook",),
    )
    app.add_middleware(
        SecurityHeaders,
        csp=content_security_policy(
            settings.client_livekit_urls,
            # Presigned recording URLs; AWS's own endpoints when none is configured.
            [settings.s3_public_endpoint_url or settings.s3_endpoint_url or "https:"],
        ),
    )
    # Outside the body limit and the headers, so refused requests are counted too.
    app.add_middleware(RequestMetrics)
    if settings.forwarded_allow_ips:
        # Outermost, so that the rate limits count the client behind a trusted proxy. The
        # server itself runs without proxy headers (kaiwa.stack.services, infra/Dockerfile).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(token.router)
    app.include_router(call.router)
    app.include_router(webhook.router)
    app.include_router(segments.router)
    app.include_router(admin.router)
    app.include_router(conversations.router)
    app.include_router(recordings.router)
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app
