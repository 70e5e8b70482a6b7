"""The one way Kaiwa builds an S3 client: path-style, SigV4, and the checksum settings that
S3-compatible servers accept. Each caller picks its own timeouts and retries."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from .settings import S3Settings


def s3_client(
    settings: S3Settings,
    *,
    endpoint_url: str | None = None,
    max_attempts: int = 3,
    connect_timeout_s: float = 2,
    read_timeout_s: float = 10,
) -> Any:
    """`endpoint_url` overrides S3_ENDPOINT_URL (the address browsers use, for presigned
    URLs). `max_attempts` 1 suits a caller that retries with its own policy."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.s3_region,
        config=Config(
            # SigV4 for presigned URLs too: boto3 signs them with the deprecated SigV2 for
            # a custom endpoint otherwise, whose expiry is a timestamp, not a lifetime.
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # Some S3-compatible servers reject the CRC checksums boto3 now sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
