"""One recording of a room (the mix, or one track): its Egress, its spooled file, its writer.

A recording starts as an Egress with a spool folder (`egress_started` is queued at once), is
written in the encoding pool while the call runs, its full parts uploaded as they fill, and
ends with its file closed, uploaded and verified, its manifest stored next to it, and
`egress_ended` queued. One that never got any audio is aborted instead: no file, and the
Egress says why.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from livekit.protocol import egress as lkegress

from .egress import ABORTED, ACTIVE, COMPLETE, ENDING, FAILED, STARTING, EgressRecord, new_id
from .encoder import OggOpusEncoder, OggOpusPacketWriter
from .log import logger
from .mixer import PRIME_MS, SAMPLE_RATE, TICK_MS, Samples
from .track import PacketStats, Track
from .upload import (
    SpooledObject,
    StorageError,
    Uploader,
    VerificationError,
    finish_upload,
    store_manifest,
)

TICK_NS = TICK_MS * 1_000_000
# Every track is heard PRIME_MS late (its jitter buffer's depth): the mix's first ticks can
# only be that wait, so the mix starts after them and its time 0 is when the recorder began.
PRIME_TICKS = PRIME_MS // TICK_MS
NO_AUDIO_ERROR = "the call ended before any audio was recorded"


@dataclass(frozen=True)
class RecordedRoom:
    """The room a recording belongs to, and what all its recordings share: where they are
    spooled and stored, the encoding pool, and what to call when an Egress changes."""

    room_sid: str
    room_name: str
    key_prefix: str
    spool_dir: Path
    uploader: Uploader
    pool: Executor
    on_event: Callable[[], None]


@dataclass
class Recording:
    """One file being written: its Egress, its spooled object, its writer, its timeline."""

    room: RecordedRoom
    record: EgressRecord
    obj: SpooledObject
    start_tick: int
    encoder: OggOpusEncoder | None = None  # the mix: PCM encoded
    packets: OggOpusPacketWriter | None = None  # a track: packets stored as received
    end_tick: int | None = None
    upload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start_mix(cls, room: RecordedRoom, tick: int) -> Recording:
        """The room mix, from PRIME_TICKS after `tick`."""
        request = lkegress.RoomCompositeEgressRequest(room_name=room.room_name, audio_only=True)
        info = lkegress.EgressInfo(room_composite=request)
        return cls._start(room, info, start_tick=tick + PRIME_TICKS)

    @classmethod
    def start_track(
        cls, room: RecordedRoom, track: Track, first_arrival_ns: int, tick: int
    ) -> Recording:
        request = lkegress.TrackEgressRequest(room_name=room.room_name, track_id=track.sid)
        # A track egress names no participant: who it was travels in the details.
        details = json.dumps(_describe_track(track))
        info = lkegress.EgressInfo(track=request, details=details)
        recording = cls._start(room, info, start_tick=tick)
        info.started_at = first_arrival_ns
        info.status = ACTIVE
        recording.record.publish("egress_updated")
        return recording

    @classmethod
    def _start(cls, room: RecordedRoom, info: lkegress.EgressInfo, start_tick: int) -> Recording:
        info.egress_id = new_id("EG_")
        info.room_id = room.room_sid
        info.room_name = room.room_name
        info.source_type = lkegress.EgressSourceType.EGRESS_SOURCE_TYPE_SDK
        info.status = STARTING
        key = f"{room.key_prefix}{room.room_sid}/{info.egress_id}.ogg"
        info.manifest_location = f"s3://{room.uploader.bucket}/{key}.json"
        record = EgressRecord.create(room.spool_dir, info)
        obj = SpooledObject.create(record.directory / "file", key)
        recording = cls(room=room, record=record, obj=obj, start_tick=start_tick)
        record.publish("egress_started")
        room.on_event()
        return recording

    # --- writing (in the encoding pool) ----------------------------------------------------

    @property
    def is_mix(self) -> bool:
        return bool(self.record.info.WhichOneof("request") == "room_composite")

    def encode(self, samples: Samples) -> None:
        """In the encoding pool."""
        if self.encoder is None:
            self.encoder = OggOpusEncoder(self.obj)
        self.encoder.encode(samples)

    def packet_writer(self, channels: int) -> OggOpusPacketWriter:
        """In the encoding pool."""
        if self.packets is None:
            self.packets = OggOpusPacketWriter(self.obj, channels)
        return self.packets

    def close_encoder(self) -> None:
        """In the encoding pool."""
        if self.packets is not None:
            self.packets.close()
        elif self.is_mix:
            if self.encoder is None:
                self.encoder = OggOpusEncoder(self.obj)
            self.encoder.close()
        self.obj.close_input()

    def duration_ns(self) -> int:
        if self.packets is not None:
            return self.packets.samples * 1_000_000_000 // SAMPLE_RATE
        end = self.end_tick if self.end_tick is not None else self.start_tick
        return max(0, end - self.start_tick) * TICK_NS

    async def upload_full_parts(self) -> None:
        """While the call runs: the full parts the spool holds go up, so long calls reach S3
        as they happen."""
        if self.end_tick is not None:
            return
        obj = self.obj
        uploader = self.room.uploader
        if obj.size - obj.state.uploaded_bytes < uploader.part_size:
            return
        async with self.upload_lock:
            try:
                await asyncio.to_thread(uploader.push, obj)
            except StorageError:
                # The spool keeps the audio; the next round or the end retries.
                logger.warning("part upload failed; kept in the spool", exc_info=True)

    # --- end -------------------------------------------------------------------------------

    async def end(self, *, tick: int, t0_ns: int, track: Track | None, error: str | None) -> None:
        """Close the file, upload what is left, verify, and report the Egress as ended.

        `tick` is the room clock's now, `t0_ns` the wall time of its tick 0; `track` is the
        track this recording is of, None for the mix."""
        room = self.room
        loop = asyncio.get_running_loop()
        self.end_tick = tick
        record = self.record
        record.info.status = ENDING
        if not record.info.started_at:
            record.info.started_at = t0_ns + self.start_tick * TICK_NS
        if track is not None:
            record.info.details = json.dumps(
                _describe_track(track) | _track_figures(track.timeline.stats)
            )
        record.publish("egress_updated")
        room.on_event()
        await loop.run_in_executor(room.pool, self.close_encoder)
        duration_ns = self.duration_ns()
        record.info.ended_at = (
            record.info.started_at + duration_ns if track is not None else t0_ns + tick * TICK_NS
        )
        if self.obj.size == 0:
            await self.abort()
            return
        try:
            await finish_upload(room.uploader, self.obj, self.upload_lock)
        except VerificationError as exc:
            # The spool copy is kept (it is never dropped unverified) for an operator.
            logger.error("stored recording failed verification", extra={"key": self.obj.key})
            error = f"the stored file failed verification: {exc}"
        record.info.file_results.append(
            lkegress.FileInfo(
                filename=self.obj.key,
                started_at=record.info.started_at,
                ended_at=record.info.ended_at,
                duration=duration_ns,
                size=self.obj.size,
                location=f"s3://{room.uploader.bucket}/{self.obj.key}",
            )
        )
        record.info.status = FAILED if error else COMPLETE
        record.info.error = error or ""
        await store_manifest(room.uploader, record, self.obj.key)
        record.publish("egress_ended")
        room.on_event()
        logger.info(
            "recording ended",
            extra={
                "egress_id": record.egress_id,
                "room_sid": room.room_sid,
                "status": lkegress.EgressStatus.Name(record.info.status),
                "duration_s": duration_ns / 1e9,
                "size": self.obj.size,
            },
        )

    async def abort(self) -> None:
        """The call ended before this recording got any audio (within the jitter buffer's
        priming): Opus makes no bytes for no audio, and an Ogg file without audio is not one
        players open, so there is no file, and the egress says why."""
        record = self.record
        await asyncio.to_thread(self.obj.discard)
        record.info.status = ABORTED
        record.info.error = NO_AUDIO_ERROR
        await store_manifest(self.room.uploader, record, self.obj.key)
        record.publish("egress_ended")
        self.room.on_event()
        logger.info(
            "recording aborted: no audio",
            extra={"egress_id": record.egress_id, "room_sid": self.room.room_sid},
        )


def _describe_track(track: Track) -> dict[str, str]:
    return {
        "participant_identity": track.identity,
        "participant_sid": track.participant_sid,
        "track_name": track.name,
    }


def _track_figures(stats: PacketStats) -> dict[str, int]:
    return {
        "lost_ms": stats.lost_samples * 1000 // SAMPLE_RATE,
        "gaps_over_100ms": stats.gaps_over_100ms,
        "late_packets": stats.late_packets,
        "dropped_packets": stats.dropped_packets,
    }
