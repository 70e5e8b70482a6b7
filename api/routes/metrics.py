"""GET /metrics: the API's Prometheus metrics (api/metrics.py), for a scraper with the token.

METRICS_TOKEN set: `Authorization: Bearer <token>` is required. Unset: open in dev, and off
elsewhere (404), so a deployment never exposes its figures by forgetting a setting.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..deps import SettingsDep, bearer_token

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {"description": "METRICS_TOKEN is set, and this is not it"},
        404: {"description": "Outside dev without METRICS_TOKEN: metrics are off"},
    },
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    expected = settings.metrics_token.get_secret_value()
    if not expected:
        if settings.kaiwa_env != "dev":
            raise HTTPException(status.HTTP_404_NOT_FOUND, "metrics are off: set METRICS_TOKEN")
    elif not hmac.compare_digest((bearer_token(request) or "").encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "metrics need METRICS_TOKEN as a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
