"""The recorder's parts on their own: room clock buffers, Ogg/Opus files, spooled uploads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from agents.recorder.encoder import OggOpusEncoder
from agents.recorder.mixer import SAMPLE_RATE, TICK_MS, TICK_SAMPLES, JitterBuffer, mix
from agents.recorder.service import ogg_duration_ns
from agents.recorder.upload import MIN_PART_SIZE, SpooledObject, Uploader, VerificationError
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import ephemeral_config, s3_client, s3_service

from .recordings import decode_ogg

pytestmark = pytest.mark.integration


def samples(n: int, value: int = 1000) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.full(n, value, dtype=np.int16)


def test_track_is_silent_until_primed_then_plays_in_order() -> None:
    buffer = JitterBuffer(prime_ms=2 * TICK_MS)
    buffer.push(samples(TICK_SAMPLES, 1))  # one tick: not primed yet
    assert buffer.pop_tick() is None
    buffer.push(samples(TICK_SAMPLES, 2))
    first = buffer.pop_tick()
    second = buffer.pop_tick()
    assert first is not None and second is not None
    assert set(first.tolist()) == {1} and set(second.tolist()) == {2}
    assert buffer.stats.underrun_samples == 0


def test_a_late_track_is_filled_with_silence_and_counted() -> None:
    buffer = JitterBuffer(prime_ms=TICK_MS, rearm_ms=10_000)
    buffer.push(samples(TICK_SAMPLES + TICK_SAMPLES // 2))
    assert buffer.pop_tick() is not None
    half = buffer.pop_tick()
    assert half is not None and np.count_nonzero(half) == TICK_SAMPLES // 2
    for _ in range(3):  # three ticks with nothing: one gap over 100 ms
        buffer.pop_tick()
    buffer.push(samples(TICK_SAMPLES))
    buffer.pop_tick()
    assert buffer.stats.underrun_samples == TICK_SAMPLES // 2 + 3 * TICK_SAMPLES
    assert buffer.stats.gaps_over_100ms == 1


def test_buffer_is_bounded_and_drops_the_oldest() -> None:
    buffer = JitterBuffer(prime_ms=TICK_MS, max_ms=5 * TICK_MS)
    for value in range(1, 11):  # ten ticks of audio into a bound of five
        buffer.push(samples(TICK_SAMPLES, value))
    assert buffer.buffered_samples == 5 * TICK_SAMPLES
    assert buffer.stats.dropped_samples == 5 * TICK_SAMPLES
    tick = buffer.pop_tick()
    assert tick is not None and set(tick.tolist()) == {6}


def test_mix_saturates_instead_of_wrapping() -> None:
    loud = samples(TICK_SAMPLES, 30_000)
    assert set(mix([loud, loud]).tolist()) == {32767}
    assert set(mix([samples(TICK_SAMPLES, 5), samples(TICK_SAMPLES, -2)]).tolist()) == {3}


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_ogg_opus_file_has_the_ticks_length_and_survives_truncation(tmp_path: Path) -> None:
    sink = Collect()
    encoder = OggOpusEncoder(sink)
    t = np.arange(TICK_SAMPLES) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    for _ in range(5000 // TICK_MS):  # 5 s
        encoder.encode(tone)
    encoder.close()
    audio = decode_ogg(bytes(sink.data))
    assert abs(len(audio) / SAMPLE_RATE - 5.0) < 0.03
    # A recorder killed mid-file leaves a prefix: it still plays, up to its last page.
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(bytes(sink.data[: len(sink.data) // 2]))
    assert 1.0 < ogg_duration_ns(cut) / 1e9 < 4.0


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
