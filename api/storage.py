"""Recording objects in S3: presigned URLs, ranged streaming, deletion.

Keys only ever come from the recordings table (written from egress reports), never from a
request. Every function here blocks: call them from a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import KaiwaError

CHUNK_BYTES = 64 * 1024
DEFAULT_AUDIO_TYPE = "audio/ogg"

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ObjectMissing(KaiwaError):
    pass


class StorageUnavailable(KaiwaError):
    """S3 answered with an error other than "not found", or could not be reached."""

    retryable = True


class RangeNotSatisfiable(KaiwaError):
    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size


def storage_key(location: str, bucket: str) -> str:
    """The object key in `bucket` for a key, an s3:// URL or an http(s) URL.

    Egress reports its manifest as a location, which may be any of these.
    """
    if "://" not in location:
        return location.lstrip("/")
    parsed = urlparse(location)
    path = unquote(parsed.path).lstrip("/")
    if parsed.scheme != "s3" and path.startswith(f"{bucket}/"):
        return path[len(bucket) + 1 :]  # path-style http URL
    return path


def presigned_get(client: Any, bucket: str, key: str, ttl_s: int) -> str:
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_s
    )
    return url


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str, size: int) -> ByteRange:
    """One range of a `Range: bytes=...` header; RangeNotSatisfiable for anything else.

    Several ranges in one request are refused too: media elements never ask for them.
    """
    match = _RANGE.match(header.strip())
    if match is None or not (match[1] or match[2]):
        raise RangeNotSatisfiable(size)
    first, last = match[1], match[2]
    if not first:  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
        if int(last) == 0:
            raise RangeNotSatisfiable(size)
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            raise RangeNotSatisfiable(size)
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, end, size)


def head(client: Any, bucket: str, key: str) -> tuple[int, str]:
    """(size, content type) of an object."""
    try:
        found = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ObjectMissing(key) from exc
        raise StorageUnavailable(f"S3 answered {code}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(exc.__class__.__name__) from exc
    content_type = str(found.get("ContentType") or "")
    if not content_type.startswith("audio/"):
        content_type = DEFAULT_AUDIO_TYPE
    return int(found["ContentLength"]), content_type


def read_chunks(
    client: Any, bucket: str, key: str, byte_range: ByteRange | None
) -> Iterator[bytes]:
    """The object's bytes (or a range of them) in chunks, never all in memory."""
    params: dict[str, str] = {"Bucket": bucket, "Key": key}
    if byte_range is not None:
        params["Range"] = f"bytes={byte_range.start}-{byte_range.end}"
    body = client.get_object(**params)["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def delete_objects(client: Any, bucket: str, keys: list[str]) -> None:
    """Delete the keys; a key already gone counts as deleted (S3 semantics).

    One request per key: a conversation has a few recordings, and DeleteObjects is the
    call S3-compatible servers most often implement differently.
    """
    for key in keys:
        client.delete_object(Bucket=bucket, Key=key)
