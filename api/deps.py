"""Shared resources of one API process, and FastAPI dependency aliases for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import boto3
import redis.asyncio as aioredis
from botocore.config import Config as BotoConfig
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from livekit import api as lkapi
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import make_engine, make_sessionmaker, migrate
from .ratelimit import RateLimiter
from .settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    livekit: lkapi.LiveKitAPI
    s3: Any
    token_limiter: RateLimiter

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        engine = make_engine(settings.database_url)
        await run_in_threadpool(migrate, engine)  # blocking: kept off the event loop
        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=client,
            livekit=lkapi.LiveKitAPI(
                settings.livekit_http_url, settings.livekit_api_key, settings.livekit_api_secret
            ),
            s3=make_s3_client(settings),
            token_limiter=RateLimiter(
                client,
                name="token",
                limit=settings.token_rate_limit,
                window_s=settings.token_rate_window_s,
            ),
        )

    async def aclose(self) -> None:
        await self.livekit.aclose()
        await self.redis.aclose()
        self.engine.dispose()


def make_s3_client(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.s3_region,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=2,
            read_timeout=10,
            # Some S3-compatible servers reject the CRC checksums boto3 now sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


Deps = Annotated[Resources, Depends(get_resources)]
