"""Recorder settings, read from the same environment names as the API's and the agents'."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.paths import STATE_DIR

from .upload import MIN_PART_SIZE


class RecorderSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"

    s3_endpoint_url: str | None = None
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "kaiwa-recordings"
    s3_region: str = "us-east-1"

    # Off: no room is recorded. Per room, a token request with `record: false` turns it off.
    recording_enabled: bool = True
    # Object keys are this prefix, then the room sid and the egress id: server-side ids only.
    recorder_prefix: str = Field(default="recordings/", pattern=r"^([A-Za-z0-9_-]+/)*$")
    recorder_spool_dir: Path = STATE_DIR / "recorder"
    recorder_part_size: int = Field(default=MIN_PART_SIZE, ge=MIN_PART_SIZE)
    recorder_upload_interval_s: float = 5.0
    # Where egress webhooks go: the API's LiveKit webhook endpoint.
    recorder_webhook_url: str = "http://127.0.0.1:8000/livekit/webhook"
    # The recorder's own endpoint for LiveKit's room webhooks (room_started starts a recording).
    recorder_http_host: str = "127.0.0.1"
    recorder_http_port: int = 8082
    # Rooms are also listed this often, to catch any start a webhook did not announce.
    recorder_poll_s: float = 5.0
    # After the last caller leaves: a reload rejoins within this and stays one recording.
    recorder_end_grace_s: float = 5.0
    recorder_first_caller_timeout_s: float = 30.0
    # Names this recorder's room locks in Redis; a restarted recorder takes its rooms back.
    recorder_id: str | None = None
    recorder_lock_ttl_s: int = 15
    # Encoding and storage threads shared by all rooms of this process.
    recorder_threads: int = 2

    @property
    def instance_id(self) -> str:
        return self.recorder_id or f"{socket.gethostname()}:{self.recorder_http_port}"
