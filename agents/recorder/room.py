"""Records one room: a hidden, subscribe-only participant writing the mix and each track.

Layout of a room's recordings (each an Egress with one Ogg/Opus file):
- the room mix, a room-composite egress, from the first participant to the end of the call,
  decoded, mixed on the room clock and encoded;
- one track egress per audio track, its Opus packets stored as they came, without
  re-encoding (as LiveKit's track egress does). Its `started_at` minus the mix's is its
  offset in the mix, to the precision of the packets' arrival times.

The room clock (its rules in `clock`, its buffers in `mixer`) ticks on the event loop;
storing, decoding, encoding and storage calls run in the shared thread pool. A recording's
start and end are in `recording`. The spool folder of each recording holds everything needed
to finish it if this process dies (see `service.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from pathlib import Path

from livekit import api as lkapi
from livekit.protocol import models as lkmodels

from core.tasks import TaskOwner

from .clock import FirstCallerWait, RoomClock
from .egress import ACTIVE, new_id, now_ns
from .log import logger
from .mixer import PRIME_MS, TICK_MS, Samples, mix
from .recording import TICK_NS, RecordedRoom, Recording
from .settings import RecorderSettings
from .subscriber import OpusPacket, Subscriber
from .track import Track
from .upload import Uploader

TICK_S = TICK_MS / 1000
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


class RoomRecorder:
    def __init__(
        self,
        settings: RecorderSettings,
        *,
        livekit_url: str,
        room_name: str,
        room_sid: str,
        uploader: Uploader,
        pool: Executor,
        on_event: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.livekit_url = livekit_url
        self.room_name = room_name
        self.room_sid = room_sid
        self.pool = pool
        self.on_event = on_event
        self.room = RecordedRoom(
            room_sid=room_sid,
            room_name=room_name,
            key_prefix=settings.recorder_prefix,
            spool_dir=Path(settings.recorder_spool_dir),
            uploader=uploader,
            pool=pool,
            on_event=on_event,
        )
        self.subscriber = Subscriber(self._on_packet)
        self.tracks: dict[str, Track] = {}
        self._finished_tracks: set[str] = set()  # late packets of these are not a new track
        self.mix: Recording | None = None
        self.t0_ns = 0
        self.clock: RoomClock[Samples] = RoomClock(TICK_S, settings.recorder_end_grace_s)
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

    def recordings_active(self) -> int:
        """The mix and the track recordings still being written."""
        recordings = [self.mix, *(track.recording for track in self.tracks.values())]
        return sum(1 for r in recordings if r is not None and r.end_tick is None)

    def status(self) -> dict[str, int]:
        """For the health answer: when the mix began (0 while it waits for a first caller)
        and how many callers are in the room. Counts only: identities can be phone numbers."""
        started_ns = self.mix.record.info.started_at if self.mix is not None else 0
        callers = sum(1 for p in self.subscriber.participants.values() if p.kind in CALLER_KINDS)
        return {"mix_started_ns": started_ns, "callers": callers}

    async def run(self) -> None:
        identity = f"recorder-{new_id('')}"
        await self.subscriber.connect(
            self.livekit_url, recorder_token(self.settings, self.room_name, identity)
        )
        self._tasks.spawn(self._watch_connection(), f"recorder-connection-{self.room_sid}")
        try:
            if await self._wait_for_callers(self.settings.recorder_first_caller_timeout_s):
                self.mix = Recording.start_mix(self.room, self.clock.tick)
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
        loop = asyncio.get_running_loop()
        wait = FirstCallerWait(loop.time(), timeout_s)
        while not self._callers_present():
            wait_s = wait.next_wait_s(loop.time())
            if wait_s is None or self._stop.is_set():
                return False
            self.subscriber.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscriber.changed.wait(), wait_s)
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
        clock = self.clock
        clock.start(loop.time())
        # Tick k mixes what was heard at t0 + k ticks: PRIME_MS before it was written.
        self.t0_ns = now_ns() - PRIME_MS * 1_000_000
        assert self.mix is not None
        self.mix.record.info.started_at = self.t0_ns + self.mix.start_tick * TICK_NS
        self.mix.record.info.status = ACTIVE
        self.mix.record.publish("egress_updated")
        self.on_event()
        self._tasks.spawn(self._upload_loop(), f"recorder-upload-{self.room_sid}")
        while not self._stop.is_set():
            await asyncio.sleep(clock.next_tick_in_s(loop.time()))
            now = loop.time()
            self._sync_tracks()
            callers = self._callers_present()
            # A caller who just left still has audio in flight: not gone until it is written.
            clock.callers(now, callers or any(t.ended for t in self.tracks.values()))
            made = [
                mixed for tick in clock.due(now) if (mixed := self._take_tick(tick)) is not None
            ]
            ticks = clock.release(made)
            work = []
            for track in self.tracks.values():
                packets = track.take_pending()
                if packets and track.recording is None and callers:
                    track.recording = Recording.start_track(
                        self.room, track, packets[0].arrived_ns, clock.tick
                    )
                work.append((track, packets))
            decoded = await loop.run_in_executor(self.pool, _process, self.mix, ticks, work)
            for track, samples in decoded:
                track.buffer.push(samples)
            await self._end_departed_tracks()
            if clock.grace_over(loop.time()):
                break
        if clock.end():
            # The call ended where the last caller left, whatever stopped us during the wait
            # for a return: the held ticks are not written, and the recording is whole.
            self._stop_reason = None

    def _take_tick(self, tick: int) -> Samples | None:
        """Tick `tick` of the mix, None before the mix starts (the tracks play it either way)."""
        voices = [s for t in self.tracks.values() if (s := t.buffer.pop_tick()) is not None]
        assert self.mix is not None
        return mix(voices) if tick >= self.mix.start_tick else None

    # --- ending ----------------------------------------------------------------------------

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
        await recording.end(tick=self.clock.tick, t0_ns=self.t0_ns, track=track, error=error)

    async def _upload_loop(self) -> None:
        """Uploads full parts while the call runs, so long calls reach S3 as they happen."""
        while True:
            await asyncio.sleep(self.settings.recorder_upload_interval_s)
            recordings = [t.recording for t in self.tracks.values() if t.recording]
            if self.mix is not None:
                recordings.append(self.mix)
            for recording in recordings:
                await recording.upload_full_parts()


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
