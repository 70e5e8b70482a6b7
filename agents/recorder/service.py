"""The recorder service: finds rooms to record, records them, and finishes what it started.

Rooms are found two ways: LiveKit's `room_started` / `participant_joined` webhooks, sent to
this service's own endpoint, start a recording at once; a periodic room listing catches the
rest (a missed webhook, rooms live when this process starts). A Redis lock per room keeps
one recorder per room when several run.

On start, spool folders left by a recorder that died are finished first: the audio they
hold is uploaded, verified, and reported as a partial recording (Egress status FAILED, with
the file). Their rooms, if still live, get a new recording from the listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import av
import redis.asyncio as aioredis
from aiohttp import web
from livekit.protocol import egress as lkegress
from livekit.protocol import room as lkroom
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from core.livekit_nodes import NodeAPIs
from core.loop_metrics import LOOP_TASKS
from core.retry import RetryPolicy
from core.storage import s3_client
from core.tasks import TaskOwner
from core.webhooks import WebhookMalformed, WebhookRejected, sign_webhook, verify_webhook

from .egress import FAILED, EgressRecord
from .log import logger
from .metrics import RECORDINGS_ACTIVE
from .room import CALLER_KINDS, RoomRecorder
from .settings import RecorderSettings
from .upload import SpooledObject, Uploader, finish_upload, store_manifest

LOCK_KEY = "kaiwa:recorder:room:{}"
MAX_WEBHOOK_BYTES = 1 << 20
PARTIAL_ERROR = "the recorder stopped during the call; the recording ends early"
# LiveKit's participant kinds as webhooks spell them.
CALLER_KIND_VALUES = {int(k) for k in CALLER_KINDS}
# The outbox's waits while the API refuses or is away: 1 s doubling to 30 s, from the first
# failed round (a new event wakes it sooner). While all is delivered it looks every 5 s.
OUTBOX_RETRY = RetryPolicy(initial_s=1.0, max_s=30.0)
OUTBOX_IDLE_S = 5.0
# At shutdown, the rooms' recorders get this long to finish their files.
SHUTDOWN_ROOMS_S = 30.0
# After a room was lost: the rooms are listed every second this long, to record the rest of
# the call as soon as it is back on a live node (its caller reconnects within LiveKit's and
# the page's retries, about 10 s).
LOST_ROOM_WATCH_S = 30.0
LOST_ROOM_POLL_S = 1.0


def make_s3_client(settings: RecorderSettings) -> Any:
    # Our own loop retries with backoff for as long as it takes (upload.py): fail fast here.
    return s3_client(settings, max_attempts=1, read_timeout_s=30)


def recording_wanted(metadata: str) -> bool:
    """A room is recorded unless its creator asked otherwise (`record: false`)."""
    try:
        return json.loads(metadata or "{}").get("record", True) is not False
    except (json.JSONDecodeError, AttributeError):
        return True


def ogg_duration_ns(path: Path) -> int:
    """The playable length of a (possibly truncated) Ogg/Opus file, from its packets."""
    end = 0
    base = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            base = stream.time_base
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration is not None:
                    end = max(end, packet.pts + packet.duration)
    except (av.FFmpegError, EOFError, IndexError):
        # Cut short, possibly before its first audio page (a recorder killed early on a
        # quiet track): what was read so far is what plays.
        pass
    return int(end * base * 1_000_000_000) if base is not None else 0


class RecorderService:
    def __init__(self, settings: RecorderSettings) -> None:
        self.settings = settings
        self.spool = Path(settings.recorder_spool_dir)
        self.pool = ThreadPoolExecutor(settings.recorder_threads, thread_name_prefix="recorder")
        self.uploader = Uploader(
            make_s3_client(settings), settings.s3_bucket, settings.recorder_part_size
        )
        self.redis = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2, decode_responses=True
        )
        self.recorders: dict[str, RoomRecorder] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Rooms whose recording ended while the room lived on (an agent still in it): only a
        # caller joining again starts a new one, not the listing.
        self.finished: set[str] = set()
        self._outbox_wakeup = asyncio.Event()
        # Set when a room's connection was lost: the listing looks again at once, then every
        # second for a while, as the call comes back on another node within seconds (when
        # its caller reconnects) and its recording should go on as soon as it does.
        self._relist = asyncio.Event()
        self._watch_lost_until = 0.0
        self._tasks = TaskOwner(logger)
        # LiveKit's server API and the room joins, on the first node that answers.
        self._livekit: NodeAPIs | None = None
        self._http: aiohttp.ClientSession | None = None
        RECORDINGS_ACTIVE.set_function(
            lambda: sum(r.recordings_active() for r in list(self.recorders.values()))
        )

    # --- rooms -----------------------------------------------------------------------------

    async def ensure_recording(self, room_sid: str, room_name: str, metadata: str) -> None:
        if not self.settings.recording_enabled or not recording_wanted(metadata):
            return
        if room_sid in self.tasks or not room_sid:
            return
        key = LOCK_KEY.format(room_sid)
        me = self.settings.instance_id
        ttl = self.settings.recorder_lock_ttl_s
        if not await self.redis.set(key, me, nx=True, ex=ttl):
            owner = await self.redis.get(key)
            if owner != me:
                return  # another recorder has it
            await self.redis.expire(key, ttl)  # ours, from before a restart
        assert self._livekit is not None
        recorder = RoomRecorder(
            self.settings,
            livekit_url=await self._livekit.nodes.first(),
            room_name=room_name,
            room_sid=room_sid,
            uploader=self.uploader,
            pool=self.pool,
            on_event=self._outbox_wakeup.set,
        )
        self.recorders[room_sid] = recorder
        self.finished.discard(room_sid)
        self.tasks[room_sid] = self._tasks.spawn(
            self._record(room_sid, recorder), name=f"room-{room_sid}"
        )
        logger.info("recording room", extra={"room_sid": room_sid})

    async def _record(self, room_sid: str, recorder: RoomRecorder) -> None:
        try:
            await recorder.run()
        except Exception:
            logger.exception("room recorder failed", extra={"room_sid": room_sid})
        finally:
            self.recorders.pop(room_sid, None)
            self.tasks.pop(room_sid, None)
            if recorder.lost_connection:
                # A lost connection is not the end of the call: the room listing starts a
                # new recording while the room is live.
                self._watch_lost_until = asyncio.get_running_loop().time() + LOST_ROOM_WATCH_S
                self._relist.set()
            else:
                self.finished.add(room_sid)
            with contextlib.suppress(Exception):
                key = LOCK_KEY.format(room_sid)
                if await self.redis.get(key) == self.settings.instance_id:
                    await self.redis.delete(key)
            self._outbox_wakeup.set()

    async def _poll_rooms(self) -> None:
        assert self._livekit is not None
        while True:
            try:
                livekit = await self._livekit.api()
                listed = await livekit.room.list_rooms(lkroom.ListRoomsRequest())
                for room in listed.rooms:
                    if room.num_participants > 0 and room.sid not in self.finished:
                        await self.ensure_recording(room.sid, room.name, room.metadata)
            except Exception:
                logger.warning("listing rooms failed", exc_info=True)
            watching = asyncio.get_running_loop().time() < self._watch_lost_until
            interval = LOST_ROOM_POLL_S if watching else self.settings.recorder_poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._relist.wait(), interval)
            self._relist.clear()

    async def _refresh_locks(self) -> None:
        ttl = self.settings.recorder_lock_ttl_s
        while True:
            await asyncio.sleep(ttl / 3)
            for room_sid in list(self.tasks):
                with contextlib.suppress(Exception):
                    await self.redis.set(
                        LOCK_KEY.format(room_sid), self.settings.instance_id, ex=ttl
                    )

    # --- LiveKit's webhooks ----------------------------------------------------------------

    async def _on_webhook(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            return web.Response(status=413)
        raw = await request.content.read(MAX_WEBHOOK_BYTES + 1)
        if len(raw) > MAX_WEBHOOK_BYTES:
            return web.Response(status=413)
        try:
            event = verify_webhook(
                raw,
                request.headers.get("Authorization", ""),
                self.settings.livekit_api_key,
                self.settings.livekit_api_secret,
            )
        except WebhookRejected:
            return web.Response(status=401)
        except WebhookMalformed:
            return web.Response(status=400)
        room = event.room
        starts = event.event == "room_started" or (
            event.event == "participant_joined"
            and int(event.participant.kind) in CALLER_KIND_VALUES
        )
        if starts and room.sid:
            await self.ensure_recording(room.sid, room.name, room.metadata)
        return web.json_response({"ok": True})

    async def _on_health(self, _request: web.Request) -> web.Response:
        rooms = {sid: recorder.status() for sid, recorder in sorted(self.recorders.items())}
        return web.json_response({"recording": sorted(self.tasks), "rooms": rooms})

    async def _on_metrics(self, _request: web.Request) -> web.Response:
        # On the event loop, as the recordings it counts change there.
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- egress webhooks to the API --------------------------------------------------------

    async def _deliver(self, path: Path) -> bool:
        assert self._http is not None
        body = await asyncio.to_thread(path.read_bytes)
        headers = {
            "Authorization": sign_webhook(
                body, self.settings.livekit_api_key, self.settings.livekit_api_secret
            ),
            "Content-Type": "application/webhook+json",
        }
        try:
            async with self._http.post(
                self.settings.recorder_webhook_url, data=body, headers=headers
            ) as response:
                if response.status == 400:
                    # Retrying cannot fix a body the API cannot read; keep it for a human.
                    await asyncio.to_thread(path.rename, path.with_suffix(".rejected"))
                    logger.error("egress webhook rejected as malformed", extra={"file": path.name})
                    return True
                if response.status >= 300:
                    logger.warning("egress webhook refused", extra={"status": response.status})
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        await asyncio.to_thread(path.unlink)
        return True

    async def _deliver_all(self) -> bool:
        """One pass over every outbox, in order; False if something is still waiting."""
        healthy = True
        for directory in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            try:
                record = EgressRecord.load(directory)
            except (OSError, ValueError):
                continue
            for path in record.pending():
                if not await self._deliver(path):
                    healthy = False
                    break
            if record.ended and not record.pending():
                self._discard_if_done(directory)
        return healthy

    async def _send_outbox(self) -> None:
        delays = OUTBOX_RETRY.delays()
        while True:
            if await self._deliver_all():
                delays = OUTBOX_RETRY.delays()
                wait_s = OUTBOX_IDLE_S
            else:
                wait_s = next(delays, OUTBOX_RETRY.max_s)
            self._outbox_wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that
            # arrives in the step the event is set (a room ending as the recorder stops),
            # and the outbox would then not stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._outbox_wakeup.wait()

    def _discard_if_done(self, directory: Path) -> None:
        file_dir = directory / "file"
        if file_dir.exists():
            obj = SpooledObject.load(file_dir)
            if not obj.state.completed:
                return
        shutil.rmtree(directory, ignore_errors=True)

    # --- recovery --------------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish every recording a previous recorder process left unfinished.

        Each on its own: one whose storage keeps failing does not hold up the others.
        """
        for directory in sorted(p for p in self.spool.iterdir() if p.is_dir()):
            try:
                record = EgressRecord.load(directory)
            except (OSError, ValueError):
                logger.exception("unreadable spool folder", extra={"folder": directory.name})
                continue
            if not record.ended:
                self._tasks.spawn(self._recover_one(record), f"recover-{directory.name}")

    async def _recover_one(self, record: EgressRecord) -> None:
        logger.warning("finishing an interrupted recording", extra={"egress": record.egress_id})
        info = record.info
        file_dir = record.directory / "file"
        obj = SpooledObject.load(file_dir) if file_dir.exists() else None
        if obj is not None and obj.size > 0:
            if not obj.state.input_closed:
                obj.close_input()
            await finish_upload(self.uploader, obj)
            duration = await asyncio.to_thread(ogg_duration_ns, obj.data_path)
            info.ended_at = (info.started_at or info.updated_at) + duration
            del info.file_results[:]
            info.file_results.append(
                lkegress.FileInfo(
                    filename=obj.key,
                    started_at=info.started_at,
                    ended_at=info.ended_at,
                    duration=duration,
                    size=obj.size,
                    location=f"s3://{self.uploader.bucket}/{obj.key}",
                )
            )
            info.status = FAILED
            info.error = PARTIAL_ERROR
            await store_manifest(self.uploader, record, obj.key)
        else:
            if obj is not None:
                await asyncio.to_thread(obj.discard)
            info.status = FAILED
            info.error = "the recorder stopped before any audio was written"
        record.publish("egress_ended")
        self._outbox_wakeup.set()

    # --- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        LOOP_TASKS.watch()
        self.spool.mkdir(parents=True, exist_ok=True)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._livekit = self.settings.livekit_apis()
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
        app.router.add_post("/livekit/webhook", self._on_webhook)
        app.router.add_get("/healthz", self._on_health)
        app.router.add_get("/metrics", self._on_metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(
            runner, self.settings.recorder_http_host, self.settings.recorder_http_port
        ).start()
        try:
            self._tasks.spawn(self.recover(), "recover")
            self._tasks.spawn(self._send_outbox(), "outbox")
            self._tasks.spawn(self._poll_rooms(), "poll-rooms")
            self._tasks.spawn(self._refresh_locks(), "refresh-locks")
            logger.info("recorder ready", extra={"port": self.settings.recorder_http_port})
            await stop.wait()
        finally:
            await self._shutdown(runner)

    async def _shutdown(self, runner: web.AppRunner) -> None:
        for recorder in self.recorders.values():
            recorder.stop("the recorder was shut down")
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=SHUTDOWN_ROOMS_S)
        # The service's loops, and any room that did not finish in time (its spool is
        # finished by the next start).
        await self._tasks.aclose()
        # One last delivery round; what is left stays in the spool for the next start.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._deliver_all(), 5)
        await runner.cleanup()
        if self._http is not None:
            await self._http.close()
        if self._livekit is not None:
            await self._livekit.aclose()
        await self.redis.aclose()
        self.pool.shutdown(wait=True)


def main() -> None:
    from core.logs import setup_logging

    setup_logging()
    settings = RecorderSettings()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await RecorderService(settings).run(stop)

    asyncio.run(serve())
