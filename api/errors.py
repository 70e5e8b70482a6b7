"""How the API answers input it cannot take: 422 naming the fields at fault and the rule each
broke, never echoing the input back (it may be megabytes, or not even encodable)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .log import logger


def _printable(part: Any) -> str | int:
    # A key from the body can be a lone surrogate, which UTF-8 cannot encode.
    return part if isinstance(part, int) else str(part).encode("utf-8", "replace").decode()


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": [_printable(part) for part in error["loc"]],
            "msg": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": detail}
    )


# A retry after this is likely to find the database back (a restart, a failover).
DATABASE_RETRY_AFTER_S = 5


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached (down, restarting, out of connections): 503 with
    Retry-After, never a 500. Nothing was stored, so the client may send the same again;
    agents do (agents/history_client.py)."""
    logger.error("database unavailable", extra={"error": type(exc).__name__})
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "database unavailable; try again shortly"},
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )
