"""Records one room: a hidden, subscribe-only participant writing the mix and each speaker.

Layout of a room's recordings (each an Egress with one Ogg/Opus file):
- the room mix, a room-composite egress, from the first participant to the end of the call;
- one participant egress per speaker session, mixing that participant's audio tracks, on the
  same clock: its `started_at` minus the mix's is its exact offset in the mix.

The room clock (see `mixer`) ticks on the event loop; encoding and storage calls run in the
shared thread pool. The spool folder of each recording holds everything needed to finish it
if this process dies (see `service.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from livekit import api as lkapi
from livekit import rtc
from livekit.protocol import egress as lkegress

from .egress import (
    ABORTED,
    ACTIVE,
    COMPLETE,
    ENDING,
    FAILED,
    STARTING,
    EgressRecord,
    new_id,
    now_ns,
)
from .encoder import OggOpusEncoder
from .mixer import PRIME_MS, TICK_MS, JitterBuffer, Samples, TrackStats, mix
from .settings import RecorderSettings
from .upload import SpooledObject, StorageError, Uploader, VerificationError

logger = logging.getLogger("kaiwa.recorder")

TICK_S = TICK_MS / 1000
TICK_NS = TICK_MS * 1_000_000
# Every track is heard PRIME_MS late (its jitter buffer's depth): the mix's first ticks can
# only be that wait, so the mix starts after them and its time 0 is when the recorder began.
PRIME_TICKS = PRIME_MS // TICK_MS
NO_AUDIO_ERROR = "the call ended before any audio was recorded"
# Each AudioStream event carries this much audio: fewer, larger frames cost less per track.
STREAM_FRAME_MS = 200
# Frames an AudioStream holds for a slow reader before dropping the oldest (2 s).
STREAM_CAPACITY = 10
CALLER_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS,
)


def recorder_token(settings: RecorderSettings, room_name: str, identity: str) -> str:
    """Hidden, subscribe-only, this room only: all a recorder needs."""
    grants = lkapi.VideoGrants(
        room_join=True,
        room=room_name,
        hidden=True,
        recorder=True,
        can_subscribe=True,
        can_publish=False,
        can_publish_data=False,
        can_update_own_metadata=False,
    )
    return (
        lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name("recorder")
        .with_kind("egress")
        .with_grants(grants)
        .with_ttl(timedelta(minutes=10))
        .to_jwt()
    )


@dataclass
class Recording:
    """One file being written: its Egress, its spooled object, its encoder, its timeline."""

    record: EgressRecord
    obj: SpooledObject
    start_tick: int
    encoder: OggOpusEncoder | None = None
    end_tick: int | None = None
    upload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def encode(self, samples: Samples) -> None:
        """In the encoding pool."""
        if self.encoder is None:
            self.encoder = OggOpusEncoder(self.obj)
        self.encoder.encode(samples)

    def close_encoder(self) -> None:
        """In the encoding pool."""
        if self.encoder is None:
            self.encoder = OggOpusEncoder(self.obj)
        self.encoder.close()
        self.obj.close_input()


@dataclass
class Speaker:
    """A participant session with audio: its tracks' buffers and its own recording."""

    identity: str
    sid: str
    buffers: dict[str, JitterBuffer] = field(default_factory=dict)
    recording: Recording | None = None
    left: bool = False

    @property
    def drained(self) -> bool:
        return all(b.buffered_samples == 0 for b in self.buffers.values())

    def stats(self) -> TrackStats:
        total = TrackStats()
        for buffer in self.buffers.values():
            total.underrun_samples += buffer.stats.underrun_samples
            total.gaps_over_100ms += buffer.stats.gaps_over_100ms
            total.dropped_samples += buffer.stats.dropped_samples
        return total


class RoomRecorder:
    def __init__(
        self,
        settings: RecorderSettings,
        *,
        room_name: str,
        room_sid: str,
        uploader: Uploader,
        pool: Executor,
        on_event: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.room_name = room_name
        self.room_sid = room_sid
        self.uploader = uploader
        self.pool = pool
        self.on_event = on_event
        self.room = rtc.Room()
        self.speakers: dict[str, Speaker] = {}
        self.mix: Recording | None = None
        self.t0_ns = 0
        self.tick = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self._callers_changed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """End the recording early (recorder shutting down): the files are kept, marked."""
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        identity = f"recorder-{new_id('')}"
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("participant_disconnected", self._on_participant_disconnected)
        self.room.on("participant_connected", lambda _p: self._callers_changed.set())
        self.room.on("disconnected", lambda _reason: self._stop.set())
        await self.room.connect(
            self.settings.livekit_url,
            recorder_token(self.settings, self.room_name, identity),
            rtc.RoomOptions(auto_subscribe=True),
        )
        try:
            if await self._wait_for_callers(self.settings.recorder_first_caller_timeout_s):
                self._start_mix()
                await self._run_clock()
        finally:
            await self._finish()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.room.disconnect()

    def _callers_present(self) -> bool:
        return any(p.kind in CALLER_KINDS for p in self.room.remote_participants.values())

    async def _wait_for_callers(self, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._callers_present():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stop.is_set():
                return False
            self._callers_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._callers_changed.wait(), min(remaining, 1.0))
        return True

    # --- tracks ----------------------------------------------------------------------------

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        speaker = self.speakers.get(participant.sid)
        if speaker is None:
            speaker = Speaker(identity=participant.identity, sid=participant.sid)
            self.speakers[participant.sid] = speaker
        buffer = JitterBuffer()
        speaker.buffers[publication.sid] = buffer
        stream = rtc.AudioStream.from_track(
            track=track,
            sample_rate=48_000,
            num_channels=1,
            capacity=STREAM_CAPACITY,
            frame_size_ms=STREAM_FRAME_MS,
        )
        self._spawn(self._read(stream, buffer), f"recorder-read-{publication.sid}")

    async def _read(self, stream: rtc.AudioStream, buffer: JitterBuffer) -> None:
        try:
            async for event in stream:
                # Copied: the frame's memory belongs to the stream.
                buffer.push(np.frombuffer(event.frame.data, dtype=np.int16).copy())
        finally:
            await stream.aclose()

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        speaker = self.speakers.get(participant.sid)
        if speaker is not None:
            speaker.left = True
        self._callers_changed.set()

    # --- the clock -------------------------------------------------------------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        # Tick k mixes what was heard at t0 + k ticks: PRIME_MS before it was written.
        self.t0_ns = now_ns() - PRIME_MS * 1_000_000
        assert self.mix is not None
        self.mix.record.info.started_at = self.t0_ns + self.mix.start_tick * TICK_NS
        self.mix.record.info.status = ACTIVE
        self.mix.record.publish("egress_updated")
        self.on_event()
        self._spawn(self._upload_loop(), f"recorder-upload-{self.room_sid}")
        # Ticks made after the last caller left, held back: if a caller comes back (a reload)
        # they are written and the recording goes on; if not, the recording ends where the
        # last caller left, not a grace period later.
        held: list[tuple[Recording, Samples]] = []
        callers_gone: tuple[float, int] | None = None
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, start + (self.tick + 1) * TICK_S - loop.time()))
            due = int((loop.time() - start) / TICK_S)
            # A caller who just left still has audio in flight: not gone until it is written.
            present = self._callers_present() or any(s.left for s in self.speakers.values())
            if not present and callers_gone is None:
                callers_gone = (loop.time(), self.tick)
            batch: list[tuple[Recording, Samples]] = []
            while self.tick < due:
                batch.extend(self._take_tick(start_speakers=present))
                self.tick += 1
            if present:
                batch, held, callers_gone = held + batch, [], None
            else:
                held.extend(batch)
                batch = []
            await loop.run_in_executor(self.pool, _encode_batch, batch)
            await self._end_departed_speakers()
            if callers_gone and loop.time() - callers_gone[0] >= self.settings.recorder_end_grace_s:
                self.tick = callers_gone[1]
                break

    def _take_tick(self, *, start_speakers: bool) -> list[tuple[Recording, Samples]]:
        """One tick of every speaker and of the mix, for the encoding pool."""
        out: list[tuple[Recording, Samples]] = []
        voices: list[Samples] = []
        for speaker in self.speakers.values():
            parts = [s for b in speaker.buffers.values() if (s := b.pop_tick()) is not None]
            voice = mix(parts) if parts else None
            if voice is not None:
                voices.append(voice)
                if speaker.recording is None and start_speakers:
                    speaker.recording = self._start_speaker(speaker)
            if speaker.recording is not None:
                out.append((speaker.recording, voice if voice is not None else _silence()))
        assert self.mix is not None
        if self.tick >= self.mix.start_tick:
            out.append((self.mix, mix(voices)))
        return out

    # --- recordings ------------------------------------------------------------------------

    def _new_recording(self, info: lkegress.EgressInfo) -> Recording:
        info.egress_id = new_id("EG_")
        info.room_id = self.room_sid
        info.room_name = self.room_name
        info.source_type = lkegress.EgressSourceType.EGRESS_SOURCE_TYPE_SDK
        info.status = STARTING
        key = f"{self.settings.recorder_prefix}{self.room_sid}/{info.egress_id}.ogg"
        info.manifest_location = f"s3://{self.uploader.bucket}/{key}.json"
        spool = Path(self.settings.recorder_spool_dir)
        record = EgressRecord.create(spool, info)
        obj = SpooledObject.create(record.directory / "file", key)
        recording = Recording(record=record, obj=obj, start_tick=self.tick)
        record.publish("egress_started")
        self.on_event()
        return recording

    def _start_mix(self) -> None:
        request = lkegress.RoomCompositeEgressRequest(room_name=self.room_name, audio_only=True)
        self.mix = self._new_recording(lkegress.EgressInfo(room_composite=request))
        self.mix.start_tick = self.tick + PRIME_TICKS

    def _start_speaker(self, speaker: Speaker) -> Recording:
        request = lkegress.ParticipantEgressRequest(
            room_name=self.room_name, identity=speaker.identity
        )
        recording = self._new_recording(lkegress.EgressInfo(participant=request))
        info = recording.record.info
        info.started_at = self.t0_ns + self.tick * TICK_NS
        info.status = ACTIVE
        recording.record.publish("egress_updated")
        return recording

    async def _end_departed_speakers(self) -> None:
        """A speaker who left is ended once the audio still buffered for them is written."""
        for sid, speaker in list(self.speakers.items()):
            if speaker.left and speaker.drained:
                del self.speakers[sid]
                if speaker.recording is not None:
                    await self._end(speaker.recording, speaker.stats(), error=None)

    async def _finish(self) -> None:
        error = None
        if self._stop_reason is not None:
            error = f"recording stopped before the call ended: {self._stop_reason}"
        for speaker in list(self.speakers.values()):
            if speaker.recording is not None:
                await self._end(speaker.recording, speaker.stats(), error=error)
        self.speakers.clear()
        if self.mix is not None:
            await self._end(self.mix, None, error=error)

    async def _end(self, recording: Recording, stats: TrackStats | None, error: str | None) -> None:
        """Close the file, upload what is left, verify, and report the Egress as ended."""
        loop = asyncio.get_running_loop()
        recording.end_tick = self.tick
        record = recording.record
        record.info.status = ENDING
        if not record.info.started_at:
            record.info.started_at = self.t0_ns + recording.start_tick * TICK_NS
        record.info.ended_at = self.t0_ns + self.tick * TICK_NS
        if stats is not None:
            record.info.details = json.dumps(
                {
                    "underrun_ms": stats.underrun_samples // 48,
                    "gaps_over_100ms": stats.gaps_over_100ms,
                    "dropped_ms": stats.dropped_samples // 48,
                }
            )
        record.publish("egress_updated")
        self.on_event()
        await loop.run_in_executor(self.pool, recording.close_encoder)
        if recording.obj.size == 0:
            await self._abort(recording)
            return
        try:
            await finish_upload(self.uploader, recording.obj, recording.upload_lock)
        except VerificationError as exc:
            # The spool copy is kept (it is never dropped unverified) for an operator.
            logger.error("stored recording failed verification", extra={"key": recording.obj.key})
            error = f"the stored file failed verification: {exc}"
        duration_ns = max(0, recording.end_tick - recording.start_tick) * TICK_NS
        record.info.file_results.append(
            lkegress.FileInfo(
                filename=recording.obj.key,
                started_at=record.info.started_at,
                ended_at=record.info.ended_at,
                duration=duration_ns,
                size=recording.obj.size,
                location=f"s3://{self.uploader.bucket}/{recording.obj.key}",
            )
        )
        record.info.status = FAILED if error else COMPLETE
        record.info.error = error or ""
        await store_manifest(self.uploader, record, recording.obj.key)
        record.publish("egress_ended")
        self.on_event()
        logger.info(
            "recording ended",
            extra={
                "egress_id": record.egress_id,
                "room_sid": self.room_sid,
                "status": lkegress.EgressStatus.Name(record.info.status),
                "duration_s": duration_ns / 1e9,
                "size": recording.obj.size,
            },
        )

    async def _abort(self, recording: Recording) -> None:
        """The call ended before this recording got any audio (within the jitter buffer's
        priming): Opus makes no bytes for no audio, and an Ogg file without audio is not one
        players open, so there is no file, and the egress says why."""
        record = recording.record
        await asyncio.to_thread(recording.obj.discard)
        record.info.status = ABORTED
        record.info.error = NO_AUDIO_ERROR
        await store_manifest(self.uploader, record, recording.obj.key)
        record.publish("egress_ended")
        self.on_event()
        logger.info(
            "recording aborted: no audio",
            extra={"egress_id": record.egress_id, "room_sid": self.room_sid},
        )

    async def _upload_loop(self) -> None:
        """Uploads full parts while the call runs, so long calls reach S3 as they happen."""
        while True:
            await asyncio.sleep(self.settings.recorder_upload_interval_s)
            recordings = [s.recording for s in self.speakers.values() if s.recording]
            if self.mix is not None:
                recordings.append(self.mix)
            for recording in recordings:
                if recording.end_tick is not None:
                    continue
                obj = recording.obj
                if obj.size - obj.state.uploaded_bytes < self.uploader.part_size:
                    continue
                async with recording.upload_lock:
                    try:
                        await asyncio.to_thread(self.uploader.push, obj)
                    except StorageError:
                        # The spool keeps the audio; the next round or the end retries.
                        logger.warning("part upload failed; kept in the spool", exc_info=True)


def _silence() -> Samples:
    return mix([])


def _encode_batch(batch: list[tuple[Recording, Samples]]) -> None:
    for recording, samples in batch:
        recording.encode(samples)


async def finish_upload(
    uploader: Uploader, obj: SpooledObject, lock: asyncio.Lock | None = None
) -> None:
    """Push until the object is complete and verified, backing off while storage is away."""
    delay = 0.5
    while True:
        try:
            async with lock or contextlib.nullcontext():
                await asyncio.to_thread(uploader.push, obj)
            return
        except StorageError as exc:
            logger.warning(
                "upload failed; recording kept on local disk, retrying",
                extra={"key": obj.key, "retry_in_s": delay, "error": str(exc)[:300]},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def store_manifest(uploader: Uploader, record: EgressRecord, key: str) -> None:
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(
                uploader.put_small, f"{key}.json", record.manifest(), "application/json"
            )
            return
        except StorageError:
            logger.warning("manifest upload failed; retrying", extra={"key": key})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
