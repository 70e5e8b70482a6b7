"""The recorder's settings: the shared parts (core/settings.py) and its own."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field

from core.paths import STATE_DIR
from core.settings import LiveKitSettings, RedisSettings, S3Settings

from .upload import MIN_PART_SIZE


class RecorderSettings(LiveKitSettings, RedisSettings, S3Settings):
    recording_enabled: bool = Field(
        default=True,
        description="Off: no room is recorded. Per room, a token request with "
        "`record: false` turns it off.",
    )
    recorder_spool_dir: Path = Field(
        default=STATE_DIR / "recorder",
        description="Local spool: every encoded byte lands here before S3; must survive restarts.",
    )
    recorder_part_size: int = Field(
        default=MIN_PART_SIZE, ge=MIN_PART_SIZE, description="Multipart upload part size."
    )
    recorder_upload_interval_s: float = Field(
        default=5.0, description="How often a recording's spooled parts are uploaded."
    )
    recorder_webhook_url: str = Field(
        default="http://127.0.0.1:8000/livekit/webhook",
        description="Where egress webhooks go: the API's LiveKit webhook endpoint.",
    )
    recorder_http_host: str = Field(
        default="127.0.0.1",
        description="Address of the recorder's endpoint for LiveKit's room webhooks.",
    )
    recorder_http_port: int = Field(
        default=8082, description="Port of the recorder's endpoint for LiveKit's room webhooks."
    )
    recorder_poll_s: float = Field(
        default=5.0,
        description="Rooms are also listed this often, to catch any start a webhook did not "
        "announce.",
    )
    recorder_end_grace_s: float = Field(
        default=5.0,
        description="After the last caller leaves: a reload rejoins within this and stays "
        "one recording.",
    )
    recorder_first_caller_timeout_s: float = Field(
        default=30.0, description="A room whose first caller has not joined by then is left."
    )
    recorder_id: str | None = Field(
        default=None,
        description="Names this recorder's room locks in Redis; a restarted recorder takes "
        "its rooms back. Default: host:port.",
    )
    recorder_lock_ttl_s: int = Field(
        default=15, description="Lifetime of a room lock that its recorder stops refreshing."
    )
    recorder_threads: int = Field(
        default=2, description="Encoding and storage threads shared by all rooms."
    )

    @property
    def instance_id(self) -> str:
        return self.recorder_id or f"{socket.gethostname()}:{self.recorder_http_port}"
