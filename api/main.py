"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .deps import Resources
from .logs import setup_logging
from .routes import admin, call, health, history, recordings, segments, token, webhook
from .settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging()
        resources = await Resources.open(settings)
        app.state.resources = resources
        try:
            yield
        finally:
            await resources.aclose()

    app = FastAPI(title="Kaiwa API", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    app.include_router(token.router)
    app.include_router(call.router)
    app.include_router(webhook.router)
    app.include_router(segments.router)
    app.include_router(admin.router)
    app.include_router(history.router)
    app.include_router(recordings.router)
    if settings.web_dir.is_dir():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    return app
