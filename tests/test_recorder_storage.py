"""The recorder's spooled uploads against a real S3 server: parts while writing, a restart
that completes the object, verification, an upload the store dropped, and the store away
between parts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from agents.recorder.upload import (
    MIN_PART_SIZE,
    SpooledObject,
    StorageError,
    Uploader,
    VerificationError,
    finish_upload,
)
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import ephemeral_config, s3_client, s3_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    cfg = ephemeral_config(tmp_path_factory.mktemp("s3"))
    server = s3_service(cfg)
    server.start()
    try:
        server.wait_ready()
        yield cfg
    finally:
        server.stop()


def test_parts_upload_while_writing_and_a_restart_completes_the_object(
    s3: StackConfig, tmp_path: Path
) -> None:
    client = s3_client(s3)
    uploader = Uploader(client, s3.s3_bucket)
    obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_test/EG_test.ogg")
    first = os.urandom(MIN_PART_SIZE + 1000)
    obj.write(first)
    uploader.push(obj)  # one full part goes up while the "call" runs
    assert [p.size for p in obj.state.parts] == [MIN_PART_SIZE]
    obj.write(b"tail")

    # The process dies here; a new one finds the spool and finishes it.
    reloaded = SpooledObject.load(tmp_path / "obj")
    assert reloaded.state.upload_id == obj.state.upload_id
    reloaded.close_input()
    uploader.push(reloaded)
    assert reloaded.state.completed
    stored = client.get_object(Bucket=s3.s3_bucket, Key=reloaded.key)["Body"].read()
    assert stored == first + b"tail"


def test_verification_catches_an_object_that_differs(s3: StackConfig, tmp_path: Path) -> None:
    client = s3_client(s3)
    uploader = Uploader(client, s3.s3_bucket)
    obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_test/EG_other.ogg")
    obj.write(b"spooled audio")
    obj.close_input()
    uploader.push(obj)
    client.put_object(Bucket=s3.s3_bucket, Key=obj.key, Body=b"something else")
    with pytest.raises(VerificationError):
        uploader.verify(obj)


def test_an_upload_the_store_dropped_starts_again_from_the_spool(
    s3: StackConfig, tmp_path: Path
) -> None:
    """An expired or aborted multipart upload: nothing is lost, the next push starts afresh."""
    client = s3_client(s3)
    uploader = Uploader(client, s3.s3_bucket)
    obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_test/EG_dropped.ogg")
    first = os.urandom(MIN_PART_SIZE + 10)
    obj.write(first)
    uploader.push(obj)
    client.abort_multipart_upload(Bucket=s3.s3_bucket, Key=obj.key, UploadId=obj.state.upload_id)
    obj.write(b"tail")
    obj.close_input()
    with pytest.raises(ClientError):
        uploader.push(obj)  # the store says NoSuchUpload: this attempt fails...
    assert obj.state.upload_id is None and obj.state.parts == []
    uploader.push(obj)  # ...and the retry uploads everything the spool holds
    assert obj.state.completed
    stored = client.get_object(Bucket=s3.s3_bucket, Key=obj.key)["Body"].read()
    assert stored == first + b"tail"


def test_an_empty_object_is_refused_not_retried(s3: StackConfig, tmp_path: Path) -> None:
    uploader = Uploader(s3_client(s3), s3.s3_bucket)
    obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_test/EG_empty.ogg")
    obj.close_input()
    with pytest.raises(ValueError, match="nothing to upload"):
        uploader.push(obj)


async def test_storage_away_20_s_between_parts_loses_nothing_and_leaves_no_upload_open(
    tmp_path: Path,
) -> None:
    """A long call's recording has a part in S3 when the store goes away for 20 s. The parts
    tried meanwhile fail and stay in the spool, which keeps growing; the end waits for the
    store, then completes and verifies the object, and no multipart upload is left open.
    (A call shorter than one 5 MB part, about 20 minutes of Opus, touches S3 only at its
    end: tests/test_recorder_e2e.py has an outage there.)"""
    cfg = ephemeral_config(tmp_path / "stack")
    server = s3_service(cfg)
    server.start()
    try:
        server.wait_ready()
        client = s3_client(cfg)
        uploader = Uploader(client, cfg.s3_bucket)
        obj = SpooledObject.create(tmp_path / "obj", "recordings/RM_away/EG_away.ogg")
        written = [os.urandom(MIN_PART_SIZE + 100)]
        obj.write(written[-1])
        uploader.push(obj)
        assert len(obj.state.parts) == 1

        server.stop()
        away_at = time.monotonic()
        written.append(os.urandom(MIN_PART_SIZE))
        obj.write(written[-1])
        with pytest.raises(StorageError):  # as upload_full_parts meets it mid-call
            uploader.push(obj)
        written.append(b"the call's last words")
        obj.write(written[-1])
        obj.close_input()  # the call ends while the store is still away
        finishing = asyncio.create_task(finish_upload(uploader, obj))
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - away_at)))
        assert not finishing.done()  # waiting for the store, not given up
        server.start()
        server.wait_ready()
        await asyncio.wait_for(finishing, 60)

        assert obj.state.completed
        stored = client.get_object(Bucket=cfg.s3_bucket, Key=obj.key)["Body"].read()
        assert stored == b"".join(written)
        open_uploads = client.list_multipart_uploads(Bucket=cfg.s3_bucket, Prefix="recordings/")
        assert open_uploads.get("Uploads", []) == []
    finally:
        server.stop()
