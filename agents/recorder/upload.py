"""Objects on their way to S3: spooled to local disk first, then uploaded in multipart parts.

Every encoded byte is appended to a local spool file the moment it exists, so neither an S3
outage nor a killed recorder loses audio: the uploader catches up from the spool, and a
restarted recorder completes what a dead one left (see `service.recover`). The spool copy is
deleted only after the stored object is verified: same size, same multipart checksum.

The `Uploader`'s calls block (run them in a thread); `finish_upload` and `store_manifest` do
that for the event loop, retrying while storage is away for as long as it takes: what they
store was already acknowledged as recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import KaiwaError
from core.retry import UNTIL_CANCELLED, retry

from .egress import EgressRecord
from .log import logger
from .metrics import PART_UPLOADS, WRITTEN_BYTES

# S3 refuses parts under 5 MiB except the last one; more parts means a crash of the whole
# machine (not just the process: the spool survives that) loses less.
MIN_PART_SIZE = 5 * 1024 * 1024

StorageError = (BotoCoreError, ClientError, OSError)


class VerificationError(KaiwaError):
    """The stored object is not the bytes we spooled."""


@dataclass
class Part:
    number: int
    size: int
    md5: str
    etag: str


@dataclass
class UploadState:
    key: str
    upload_id: str | None = None
    parts: list[Part] = field(default_factory=list)
    input_closed: bool = False
    completed: bool = False

    @property
    def uploaded_bytes(self) -> int:
        return sum(p.size for p in self.parts)


class SpooledObject:
    """One object: a local append-only spool file plus its upload state (JSON, atomic)."""

    def __init__(self, directory: Path, state: UploadState) -> None:
        self.directory = directory
        self.state = state
        self.data_path = directory / "data"
        self._lock = threading.Lock()
        self._file = open(self.data_path, "ab")  # noqa: SIM115 - lives as long as the object
        self._size = self.data_path.stat().st_size

    @classmethod
    def create(cls, directory: Path, key: str) -> SpooledObject:
        directory.mkdir(parents=True, exist_ok=True)
        obj = cls(directory, UploadState(key=key))
        obj.save()
        return obj

    @classmethod
    def load(cls, directory: Path) -> SpooledObject:
        raw: dict[str, Any] = json.loads((directory / "state.json").read_text())
        parts = [Part(**p) for p in raw.pop("parts")]
        return cls(directory, UploadState(parts=parts, **raw))

    @property
    def key(self) -> str:
        return self.state.key

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> int:
        """Append encoded bytes (called from the encoding thread)."""
        with self._lock:
            self._file.write(data)
            # To the OS now: a killed process keeps what it wrote.
            self._file.flush()
            self._size += len(data)
        WRITTEN_BYTES.inc(len(data))
        return len(data)

    def close_input(self) -> None:
        with self._lock:
            self._file.close()
            self.state.input_closed = True
        self.save()

    def read(self, offset: int, length: int) -> bytes:
        with open(self.data_path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def save(self) -> None:
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.directory / "state.json")

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.data_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def expected_etag(self) -> str:
        """S3's multipart ETag: the MD5 of the parts' MD5s, then the part count."""
        joined = b"".join(bytes.fromhex(p.md5) for p in self.state.parts)
        return f'"{hashlib.md5(joined).hexdigest()}-{len(self.state.parts)}"'

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Uploader:
    """Blocking S3 calls for spooled objects; run them in a thread, never on the event loop."""

    def __init__(self, client: Any, bucket: str, part_size: int = MIN_PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size

    def push(self, obj: SpooledObject) -> None:
        """Upload every full part the spool holds, and when input is closed, the rest."""
        state = obj.state
        if state.completed:
            return
        if state.input_closed and obj.size == 0:
            # S3 completes no multipart upload without parts: the caller decides instead.
            raise ValueError(f"{state.key}: nothing to upload")
        if state.upload_id is None:
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=state.key, ContentType="audio/ogg"
            )
            state.upload_id = created["UploadId"]
            obj.save()
        final = state.input_closed
        while True:
            offset = state.uploaded_bytes
            remaining = obj.size - offset
            if remaining <= 0 or (remaining < self.part_size and not final):
                break
            # The last part takes whatever is left, so no part but the last is ever short.
            length = remaining if final and remaining < 2 * self.part_size else self.part_size
            data = obj.read(offset, length)
            number = len(state.parts) + 1
            try:
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=state.key,
                    UploadId=state.upload_id,
                    PartNumber=number,
                    Body=data,
                )
            except Exception as exc:
                PART_UPLOADS.labels("failed").inc()
                if not isinstance(exc, ClientError):
                    raise
                if _error_code(exc) == "NoSuchUpload":
                    # The store dropped the upload (expired, or aborted by a lifecycle rule):
                    # the spool still holds every byte, so the next attempt starts afresh.
                    state.upload_id = None
                    state.parts.clear()
                    obj.save()
                raise
            PART_UPLOADS.labels("uploaded").inc()
            state.parts.append(
                Part(number, len(data), hashlib.md5(data).hexdigest(), response["ETag"])
            )
            obj.save()
        if final:
            self._complete(obj)

    def _complete(self, obj: SpooledObject) -> None:
        state = obj.state
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=state.key,
                UploadId=state.upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in state.parts]
                },
            )
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise
            # Completed by an earlier attempt whose answer was lost (the check below decides),
            # or dropped by the store: then the next attempt uploads the spool afresh.
            if not self._exists(state.key):
                state.upload_id = None
                state.parts.clear()
                obj.save()
                raise
        self.verify(obj)
        state.completed = True
        obj.save()

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def verify(self, obj: SpooledObject) -> None:
        head = self.client.head_object(Bucket=self.bucket, Key=obj.key)
        if head["ContentLength"] != obj.size:
            raise VerificationError(
                f"stored size {head['ContentLength']} differs from spooled {obj.size}"
            )
        if head["ETag"] != obj.expected_etag():
            raise VerificationError(f"stored ETag {head['ETag']} differs from the parts")

    def put_small(self, key: str, body: bytes, content_type: str) -> None:
        """Small side files (manifests) in one request."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)


async def finish_upload(
    uploader: Uploader, obj: SpooledObject, lock: asyncio.Lock | None = None
) -> None:
    """Push until the object is complete and verified, backing off while storage is away.

    A VerificationError is not retried: the stored object is there, and wrong."""

    async def push() -> None:
        async with lock or contextlib.nullcontext():
            await asyncio.to_thread(uploader.push, obj)

    await retry(
        push,
        UNTIL_CANCELLED,
        name="recording_upload",
        logger=logger,
        retry_on=StorageError,
        message="upload failed; recording kept on local disk, retrying",
        key=obj.key,
    )


async def store_manifest(uploader: Uploader, record: EgressRecord, key: str) -> None:
    """The recording's manifest, next to its file (`<key>.json`), retried while storage is
    away."""

    async def put() -> None:
        await asyncio.to_thread(
            uploader.put_small, f"{key}.json", record.manifest(), "application/json"
        )

    await retry(
        put,
        UNTIL_CANCELLED,
        name="recording_manifest",
        logger=logger,
        retry_on=StorageError,
        message="manifest upload failed; retrying",
        key=key,
    )
