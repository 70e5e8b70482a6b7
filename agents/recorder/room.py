"""Records one room: a hidden, subscribe-only participant writing the mix and each track.

Layout of a room's recordings (each an Egress with one Ogg/Opus file):
- the room mix, a room-composite egress, from the first participant to the end of the call,
  decoded, mixed on the room clock and encoded;
- one track egress per audio track, its Opus packets stored as they came, without
  re-encoding (as LiveKit's track egress does). Its `started_at` minus the mix's is its
  offset in the mix, to the precision of the packets' arrival times.

The room clock (see `mixer`) ticks on the event loop; storing, decoding, encoding and storage
calls run in the shared thread pool. The spool folder of each recording holds everything
needed to finish it if this process dies (see `service.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from livekit import api as lkapi
from livekit.protocol import egress as lkegress
from livekit.protocol import models as lkmodels

from core.tasks import TaskOwner

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
from .encoder import OggOpusEncoder, OggOpusPacketWriter
from .log import logger
from .mixer import PRIME_MS, SAMPLE_RATE, TICK_MS, Samples, mix
from .settings import RecorderSettings
from .subscriber import OpusPacket, Subscriber
from .track import PacketStats, Track
from .upload import (
    SpooledObject,
    StorageError,
    Uploader,
    VerificationError,
    finish_upload,
    store_manifest,
)

TICK_S = TICK_MS / 1000
TICK_NS = TICK_MS * 1_000_000
# Every track is heard PRIME_MS late (its jitter buffer's depth): the mix's first ticks can
# only be that wait, so the mix starts after them and its time 0 is when the recorder began.
PRIME_TICKS = PRIME_MS // TICK_MS
NO_AUDIO_ERROR = "the call ended before any audio was recorded"
_KIND = lkmodels.ParticipantInfo.Kind
CALLER_KINDS = (_KIND.STANDARD, _KIND.SIP, _KIND.INGRESS)


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
    """One file being written: its Egress, its spooled object, its writer, its timeline."""

    record: EgressRecord
    obj: SpooledObject
    start_tick: int
    encoder: OggOpusEncoder | None = None  # the mix: PCM encoded
    packets: OggOpusPacketWriter | None = None  # a track: packets stored as received
    end_tick: int | None = None
    upload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
        self.subscriber = Subscriber(self._on_packet)
        self.tracks: dict[str, Track] = {}
        self._finished_tracks: set[str] = set()  # late packets of these are not a new track
        self.mix: Recording | None = None
        self.t0_ns = 0
        self.tick = 0
        self._tasks = TaskOwner(logger, room_sid=room_sid)
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def lost_connection(self) -> bool:
        return self.subscriber.lost

    def stop(self, reason: str) -> None:
        """End the recording early (recorder shutting down): the files are kept, marked."""
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        identity = f"recorder-{new_id('')}"
        await self.subscriber.connect(
            self.settings.livekit_url, recorder_token(self.settings, self.room_name, identity)
        )
        self._tasks.spawn(self._watch_connection(), f"recorder-connection-{self.room_sid}")
        try:
            if await self._wait_for_callers(self.settings.recorder_first_caller_timeout_s):
                self._start_mix()
                await self._run_clock()
        finally:
            await self._finish()
            await self._tasks.aclose()
            await self.subscriber.close()

    async def _watch_connection(self) -> None:
        await self.subscriber.closed.wait()
        if self._stop.is_set():
            return
        reason = self.subscriber.close_reason
        if self.subscriber.lost:
            # The files so far are kept, marked as ending early; the service records the rest
            # of the call, if it goes on, in new files.
            logger.warning("lost the room", extra={"room_sid": self.room_sid, "reason": reason})
            self.stop(f"lost the connection to LiveKit ({reason})")
        else:
            logger.info("left the room", extra={"room_sid": self.room_sid, "reason": reason})
            self._stop.set()

    def _callers_present(self) -> bool:
        return any(p.kind in CALLER_KINDS for p in self.subscriber.participants.values())

    async def _wait_for_callers(self, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._callers_present():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stop.is_set():
                return False
            self.subscriber.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscriber.changed.wait(), min(remaining, 1.0))
        return True

    # --- tracks ----------------------------------------------------------------------------

    def _on_packet(self, track_sid: str, packet: OpusPacket) -> None:
        track = self.tracks.get(track_sid)
        if track is None:
            if track_sid in self._finished_tracks:
                return
            track = self.tracks[track_sid] = Track(
                sid=track_sid, participant_sid="", identity="", name=""
            )
            self._describe(track)
        if not track.ended:
            track.receive(packet)

    def _describe(self, track: Track) -> None:
        """Who publishes the track, once LiveKit has said (participant updates come first)."""
        for participant in self.subscriber.participants.values():
            for info in participant.tracks:
                if info.sid == track.sid:
                    track.participant_sid = participant.sid
                    track.identity = participant.identity
                    track.name = info.name
                    return

    def _sync_tracks(self) -> None:
        """Marks the tracks whose publisher left or unpublished them as ended."""
        for track in self.tracks.values():
            if not track.identity:
                self._describe(track)
            participant = self.subscriber.participants.get(track.participant_sid)
            published = participant is not None and any(
                info.sid == track.sid for info in participant.tracks
            )
            if not published and track.identity and not track.ended:
                track.ended = True
                # What is buffered plays out now rather than waiting to fill the priming.
                track.buffer.prime_ms = 0

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
        self._tasks.spawn(self._upload_loop(), f"recorder-upload-{self.room_sid}")
        # Ticks made after the last caller left, held back: if a caller comes back (a reload)
        # they are written and the recording goes on; if not, the recording ends where the
        # last caller left, not a grace period later.
        held: list[Samples] = []
        callers_gone: tuple[float, int] | None = None
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, start + (self.tick + 1) * TICK_S - loop.time()))
            due = int((loop.time() - start) / TICK_S)
            self._sync_tracks()
            callers = self._callers_present()
            # A caller who just left still has audio in flight: not gone until it is written.
            present = callers or any(t.ended for t in self.tracks.values())
            if not present and callers_gone is None:
                callers_gone = (loop.time(), self.tick)
            ticks: list[Samples] = []
            while self.tick < due:
                ticks.extend(self._take_tick())
                self.tick += 1
            if present:
                ticks, held, callers_gone = held + ticks, [], None
            else:
                held.extend(ticks)
                ticks = []
            work = []
            for track in self.tracks.values():
                packets = track.take_pending()
                if packets and track.recording is None and callers:
                    track.recording = self._start_track(track, packets[0].arrived_ns)
                work.append((track, packets))
            decoded = await loop.run_in_executor(self.pool, _process, self.mix, ticks, work)
            for track, samples in decoded:
                track.buffer.push(samples)
            await self._end_departed_tracks()
            if callers_gone and loop.time() - callers_gone[0] >= self.settings.recorder_end_grace_s:
                break
        if callers_gone is not None:
            # The call ended where the last caller left, whatever stopped us during the wait
            # for a return: the held ticks are not written, and the recording is whole.
            self.tick = callers_gone[1]
            self._stop_reason = None

    def _take_tick(self) -> list[Samples]:
        """One tick of the mix, if it has started."""
        voices = [s for t in self.tracks.values() if (s := t.buffer.pop_tick()) is not None]
        assert self.mix is not None
        return [mix(voices)] if self.tick >= self.mix.start_tick else []

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

    def _start_track(self, track: Track, first_arrival_ns: int) -> Recording:
        request = lkegress.TrackEgressRequest(room_name=self.room_name, track_id=track.sid)
        # A track egress names no participant: who it was travels in the details.
        details = json.dumps(_describe_track(track))
        recording = self._new_recording(lkegress.EgressInfo(track=request, details=details))
        info = recording.record.info
        info.started_at = first_arrival_ns
        info.status = ACTIVE
        recording.record.publish("egress_updated")
        return recording

    async def _end_departed_tracks(self) -> None:
        """A track that ended is closed once the audio still buffered for it is written."""
        for sid, track in list(self.tracks.items()):
            if track.ended and track.drained:
                del self.tracks[sid]
                self._finished_tracks.add(sid)
                if track.recording is not None:
                    await self._end(track.recording, track, error=None)

    async def _finish(self) -> None:
        error = None
        if self._stop_reason is not None:
            error = f"recording stopped before the call ended: {self._stop_reason}"
        for track in list(self.tracks.values()):
            if track.recording is not None:
                await self._end(track.recording, track, error=error)
        self.tracks.clear()
        if self.mix is not None:
            await self._end(self.mix, None, error=error)

    async def _end(self, recording: Recording, track: Track | None, error: str | None) -> None:
        """Close the file, upload what is left, verify, and report the Egress as ended."""
        loop = asyncio.get_running_loop()
        recording.end_tick = self.tick
        record = recording.record
        record.info.status = ENDING
        if not record.info.started_at:
            record.info.started_at = self.t0_ns + recording.start_tick * TICK_NS
        if track is not None:
            record.info.details = json.dumps(
                _describe_track(track) | _track_figures(track.timeline.stats)
            )
        record.publish("egress_updated")
        self.on_event()
        await loop.run_in_executor(self.pool, recording.close_encoder)
        duration_ns = recording.duration_ns()
        record.info.ended_at = (
            record.info.started_at + duration_ns
            if track is not None
            else self.t0_ns + self.tick * TICK_NS
        )
        if recording.obj.size == 0:
            await self._abort(recording)
            return
        try:
            await finish_upload(self.uploader, recording.obj, recording.upload_lock)
        except VerificationError as exc:
            # The spool copy is kept (it is never dropped unverified) for an operator.
            logger.error("stored recording failed verification", extra={"key": recording.obj.key})
            error = f"the stored file failed verification: {exc}"
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
            recordings = [t.recording for t in self.tracks.values() if t.recording]
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


def _process(
    mix_recording: Recording | None,
    ticks: list[Samples],
    work: list[tuple[Track, list[OpusPacket]]],
) -> list[tuple[Track, Samples]]:
    """In the pool, once per clock tick: encode the mix's ticks, then store and decode each
    track's new packets (their audio joins the mix on a later tick)."""
    if mix_recording is not None:
        for samples in ticks:
            mix_recording.encode(samples)
    decoded = []
    for track, packets in work:
        pcm = track.ingest(packets)
        if pcm is not None:
            decoded.append((track, pcm))
    return decoded


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
