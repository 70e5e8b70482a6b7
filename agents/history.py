"""What agents tell the history API: final segments (exactly once) and call reports.

Posts go through a bounded in-memory buffer and are retried with backoff while the API is
away (a restart, a deploy). The API stores each segment id once, so a retry of a post whose
answer was lost is harmless. When the call ends, what is buffered is flushed before the
agent leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import httpx

from core.service_auth import mint_service_token

logger = logging.getLogger("kaiwa.history")

BATCH = 50
# A call's worth of segments many times over; past it, the oldest are given up, loudly.
MAX_BUFFERED = 5000
RETRY_MAX_S = 10.0
# Answers after which the same segments are posted again: the API is busy, or did not accept
# this worker's service token (yet).
RETRIED_STATUSES = frozenset({401, 403, 408, 429})


class SegmentStore:
    def __init__(
        self, api_url: str, api_key: str, api_secret: str, *, room_sid: str, room_name: str
    ) -> None:
        self._client = httpx.AsyncClient(base_url=api_url, timeout=10)
        self._key, self._secret = api_key, api_secret
        self.room_sid, self.room_name = room_sid, room_name
        self._buffer: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stored = 0
        self.refused = 0
        self._batch = BATCH

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="segment-store")

    def add(self, segment: dict[str, Any]) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            lost = self._buffer.popleft()
            logger.error(
                "history API unreachable too long: segment lost", extra={"segment_id": lost["id"]}
            )
        self._buffer.append(segment)
        self._drained.clear()
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self._buffer:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._drained.clear()
            if await self._post_batch():
                delay = 0.5
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _post_batch(self) -> bool:
        """True when the next post may go at once: the batch was settled (each segment stored
        or refused for good), or was too large and a smaller one is due. False: back off."""
        batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
        token = mint_service_token(self._key, self._secret, ttl_s=60)
        try:
            response = await self._client.post(
                "/api/internal/segments",
                json={"room_sid": self.room_sid, "room_name": self.room_name, "segments": batch},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            logger.warning("history API unreachable; segments kept", extra={"error": str(exc)})
            return False
        if response.status_code in RETRIED_STATUSES or response.status_code >= 500:
            # 401/403: a clock skewed, or a key rotated mid-call and not yet right here or
            # there. Nothing in the segments is at fault, so they wait for a fresh token.
            logger.warning(
                "history API did not take segments; kept for a retry",
                extra={"status": response.status_code},
            )
            return False
        if response.status_code == 413 and len(batch) > 1:
            # Long texts with many translations: the API's body limit takes fewer at a time.
            self._batch = max(1, len(batch) // 2)
            logger.info("history API took a smaller batch", extra={"batch": self._batch})
            return True
        for _ in batch:
            self._buffer.popleft()
        if response.is_success:
            answer = response.json()
            self.stored += int(answer.get("stored", 0))
            for outcome in answer.get("results", []):
                if outcome.get("result") == "refused":
                    self.refused += 1
                    logger.error(
                        "history API refused a segment",
                        extra={"segment_id": outcome.get("id"), "reason": outcome.get("reason")},
                    )
        elif response.status_code == 410:
            logger.info("conversation deleted by an admin: its transcript is not kept")
        else:
            # The batch as a whole is malformed (its room sid, its size): no retry mends it.
            self.refused += len(batch)
            logger.error(
                "history API refused a batch of segments",
                extra={"status": response.status_code, "segments": len(batch)},
            )
        return True

    async def report(
        self, *, usage: dict[str, float], summary: str | None = None, attempts: int = 3
    ) -> bool:
        """Set the call's usage totals (and summary). Totals replace the stored ones, so a
        report retried, or sent again later in the call, never counts twice."""
        body: dict[str, Any] = {
            "room_sid": self.room_sid,
            "room_name": self.room_name,
            "usage": usage,
        }
        if summary:
            body["summary"] = summary
        for attempt in range(attempts):
            token = mint_service_token(self._key, self._secret, ttl_s=60)
            try:
                response = await self._client.post(
                    "/api/internal/reports",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                logger.warning("history API unreachable; report retried", extra={"error": str(exc)})
            else:
                if response.is_success:
                    return True
                if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                    logger.error(
                        "history API refused the report",
                        extra={"status": response.status_code},
                    )
                    return False
            await asyncio.sleep(0.5 * 2**attempt)
        return False

    async def flush(self, timeout_s: float) -> None:
        """Wait (within the timeout) until everything buffered is delivered."""
        if self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Flush what is buffered (within the timeout), then stop."""
        await self.flush(timeout_s)
        if self._buffer:
            # Retried until now, the end of the call: what is left is lost, and said so.
            logger.error(
                "call ended before the history API took its segments: segments lost",
                extra={"lost": self.pending, "stored": self.stored},
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()
