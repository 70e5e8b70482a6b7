"""Every call recorded: the room mix and each speaker, complete, in the S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from livekit import api as lkapi
from livekit import rtc

from agents.recorder.subscriber import Subscriber
from kaiwa.audio_files import RATE, decode_ogg, write_tone
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack, s3_client

from .support.recordings import StoredRecording, rms, stored_recordings, wait_for_recordings

pytestmark = pytest.mark.e2e

logger = logging.getLogger(__name__)

SILENT = 0.01  # float RMS: a quiet line decodes to well under this
VOICED = 0.05  # an 8000-amplitude tone decodes to about 0.17


async def test_call_is_recorded_whole_with_each_speaker_in_place(
    stack: Stack, tmp_path: Path
) -> None:
    """A 60 s call, two speakers: a mix as long as the call, each speaker where they spoke."""
    cfg = stack.cfg
    low = write_tone(tmp_path / "low.wav", freq=330, seconds=6)
    high = write_tone(tmp_path / "high.wav", freq=990, seconds=6)
    alice = SyntheticCaller(cfg.api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    # Durations by the monotonic clock: this machine's wall clock has been seen to step by
    # seconds mid-call. The wall clock only anchors the call's start to the mix's.
    joined, joined_wall = time.monotonic(), time.time()
    bob = SyntheticCaller(
        cfg.api_url, name="Bob", mode="interpret", language="ja", room_name=alice.room_name
    )
    await bob.join()
    room_sid = await alice.room.sid
    # Alice speaks at ~5-11 s of the call, Bob at ~30-36 s; silence otherwise.
    await asyncio.sleep(5)
    alice_said = time.monotonic() - joined
    await alice.speak_wav(low)
    await asyncio.sleep(30 - (time.monotonic() - joined))
    bob_said = time.monotonic() - joined
    await bob.speak_wav(high)
    await asyncio.sleep(60 - (time.monotonic() - joined))
    await bob.leave()
    await alice.leave()
    left = time.monotonic()

    recordings = await wait_for_recordings(cfg, room_sid, count=3)
    by_kind = {(r.kind, r.identity): r for r in recordings}
    mix = by_kind[("room", None)]
    assert mix.status == "EGRESS_COMPLETE"
    assert mix.file["filename"] == f"recordings/{room_sid}/{mix.manifest['egressId']}.ogg"
    assert int(mix.file["size"]) == len(mix.data)

    audio = decode_ogg(mix.data)
    duration = len(audio) / RATE
    call = left - joined
    assert abs(duration - call) / call < 0.01, (duration, call)

    call_at = joined_wall - mix.started_ns / 1e9  # the call's start in the mix
    a, b = call_at + alice_said, call_at + bob_said
    assert rms(audio, a + 0.5, a + 5.5) > VOICED
    assert rms(audio, b + 0.5, b + 5.5) > VOICED
    assert rms(audio, a + 7, b - 1) < SILENT
    assert rms(audio, b + 7, duration) < SILENT

    await _check_the_api_serves_the_recordings(stack, room_sid, recordings)

    alice_rec = by_kind[("track", alice.identity)]
    bob_rec = by_kind[("track", bob.identity)]
    for own, other_at, own_at in ((alice_rec, b, a), (bob_rec, a, b)):
        assert own.status == "EGRESS_COMPLETE"
        samples = decode_ogg(own.data)
        offset = (own.started_ns - mix.started_ns) / 1e9
        assert offset >= 0
        # On the mix's timeline: the speaker's own words in, the other speaker's out.
        assert rms(samples, own_at - offset + 0.5, own_at - offset + 5.5) > VOICED
        if other_at - offset > 0:
            assert rms(samples, other_at - offset + 0.5, other_at - offset + 5.5) < SILENT


async def test_a_caller_who_joins_after_another_left_is_recorded(
    stack: Stack, tmp_path: Path
) -> None:
    """LiveKit gives a newcomer's track the place of one that has gone: it is recorded too."""
    cfg = stack.cfg
    low = write_tone(tmp_path / "low.wav", freq=330, seconds=3)
    high = write_tone(tmp_path / "high.wav", freq=990, seconds=3)
    alice, bob, room_sid = await _start_call(stack)
    await asyncio.sleep(2)
    await alice.speak_wav(low)
    await bob.speak_wav(low)
    await bob.leave()
    await asyncio.sleep(4)  # Bob's track is gone from the recorder's connection
    carol = SyntheticCaller(
        cfg.api_url, name="Carol", mode="interpret", language="ja", room_name=alice.room_name
    )
    await carol.join()
    await asyncio.sleep(2)
    said = time.time()
    await carol.speak_wav(high)
    await asyncio.sleep(2)
    await carol.leave()
    await alice.leave()

    deadline = time.monotonic() + 60
    while True:
        recordings = await wait_for_recordings(cfg, room_sid, count=4)
        own = [r for r in recordings if r.identity == carol.identity]
        if own or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert own, [(r.kind, r.identity) for r in recordings]
    for recording in (own[0], next(r for r in recordings if r.kind == "room")):
        audio = decode_ogg(recording.data)
        at = max(0.0, said - recording.started_ns / 1e9)
        assert rms(audio, at + 0.5, at + 2.5) > VOICED, (recording.kind, at)


async def _start_call(stack: Stack) -> tuple[SyntheticCaller, SyntheticCaller, str]:
    alice = SyntheticCaller(stack.cfg.api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    bob = SyntheticCaller(
        stack.cfg.api_url, name="Bob", mode="interpret", language="ja", room_name=alice.room_name
    )
    await bob.join()
    return alice, bob, await alice.room.sid


async def test_storage_outage_at_the_end_of_a_call_loses_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """S3 is away for 20 s, covering the call's end: the recording is finished when it returns."""
    s3 = stack.services["s3"]
    tone = write_tone(tmp_path / "tone.wav", freq=440, seconds=4)
    alice, bob, room_sid = await _start_call(stack)
    try:
        await asyncio.sleep(3)
        s3.stop()
        outage_began = time.monotonic()
        said = time.time()
        await alice.speak_wav(tone)  # spoken while storage is away
        await asyncio.sleep(2)
    finally:
        await bob.leave()
        await alice.leave()
    await asyncio.sleep(max(0.0, 20 - (time.monotonic() - outage_began)))
    s3.start()
    s3.wait_ready()

    # The mix and Alice's own (Bob published no track).
    recordings = await wait_for_recordings(stack.cfg, room_sid, count=2, timeout_s=90)
    mix = next(r for r in recordings if r.kind == "room")
    assert mix.status == "EGRESS_COMPLETE"
    assert int(mix.file["size"]) == len(mix.data)
    audio = decode_ogg(mix.data)
    at = said - mix.started_ns / 1e9
    assert rms(audio, at + 0.5, at + 3.5) > VOICED
    # Each object was completed (the recorder checked its size and multipart ETag against
    # its spool before letting the spool go): no upload is left open in the store.
    client = s3_client(stack.cfg)
    listed = client.list_multipart_uploads(
        Bucket=stack.cfg.s3_bucket, Prefix=f"recordings/{room_sid}/"
    )
    assert listed.get("Uploads", []) == []


async def test_killed_recorder_leaves_a_partial_recording_and_a_new_one_continues(
    stack: Stack, tmp_path: Path
) -> None:
    """SIGKILL mid-call: what was recorded is finished as partial; the call is recorded on."""
    recorder = stack.services["recorder"]

    async def kill_and_restart() -> None:
        await asyncio.sleep(2)
        assert recorder.proc is not None
        recorder.proc.kill()
        recorder.proc.wait()
        recorder.start()
        recorder.wait_ready()

    # The restarted recorder finds the live room and rejoins.
    call = await _call_across(stack, tmp_path, kill_and_restart, new_mix=True)
    # Interrupted: mix + Alice's own (+ the interpreter's silent voice track, published for
    # Bob). Continued: mix + Alice's own (Bob never spoke).
    partial, continued = await _two_mixes(stack, call.room_sid)
    assert "ends early" in partial.manifest["error"]
    assert _voiced_at(partial, call.said_before)
    assert _voiced_at(continued, call.said_after)
    # Nothing is left half-done in the spool.
    spool = stack.cfg.state_dir / "recorder"
    await _wait_for_empty(spool)


def _spooled(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir()]


async def _wait_for_empty(folder: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(_spooled, folder):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"spool not empty: {_spooled(folder)}")


async def test_a_room_created_with_record_false_is_not_recorded(
    stack: Stack, tmp_path: Path
) -> None:
    tone = write_tone(tmp_path / "tone.wav", freq=440, seconds=2)
    private = SyntheticCaller(stack.cfg.api_url, name="Private", mode="interpret")
    await private.join(record=False)
    room_sid = await private.room.sid
    await private.speak_wav(tone)
    await private.leave()
    # A recorded room's files are stored within a few seconds of its end (see above); the
    # listing runs every 5 s, so two rounds have passed when nothing is there.
    await asyncio.sleep(12)
    assert await asyncio.to_thread(stored_recordings, stack.cfg, room_sid) == []
    assert room_sid not in await _recorder_rooms(stack)


async def _recorder_rooms(stack: Stack) -> list[str]:
    async with httpx.AsyncClient(base_url=stack.cfg.recorder_url) as client:
        rooms: list[str] = (await client.get("/healthz")).json()["recording"]
    return rooms


async def _check_the_api_serves_the_recordings(
    stack: Stack, room_sid: str, stored: list[StoredRecording]
) -> None:
    """The history API lists the call with its recordings; play URLs give the same bytes."""
    cfg = stack.cfg
    async with httpx.AsyncClient(base_url=cfg.api_url, timeout=10) as api:
        login = await api.post("/api/admin/session", json={"password": cfg.secrets.admin_password})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        deadline = time.monotonic() + 30
        while True:  # the egress webhooks arrive shortly after the files are stored
            listed = (await api.get("/api/conversations", headers=auth)).json()["items"]
            mine = [c for c in listed if c["room_sid"] == room_sid]
            if mine:
                detail = (await api.get(f"/api/conversations/{mine[0]['id']}", headers=auth)).json()
                if len(detail["recordings"]) == len(stored) and all(
                    r["status"] == "complete" for r in detail["recordings"]
                ):
                    break
            assert time.monotonic() < deadline, "recordings did not reach the API"
            await asyncio.sleep(0.5)
        assert mine[0]["has_recording"]
        by_size = {int(r.file["size"]): r.data for r in stored}
        async with httpx.AsyncClient(timeout=10) as storage:
            for recording in detail["recordings"]:
                play = await api.get(f"/api/recordings/{recording['id']}/play", headers=auth)
                assert play.status_code == 200, play.text
                body = (await storage.get(play.json()["url"])).content
                assert body == by_size[recording["size"]]


async def test_livekit_frozen_mid_call_loses_only_what_it_never_forwarded(
    stack: Stack, tmp_path: Path
) -> None:
    """LiveKit stops answering for 10 s mid-call: every connection stalls, the recorder's own
    client too. What was said before and after is recorded; nothing is left unfinished."""
    livekit = stack.services["livekit"].proc
    assert livekit is not None

    async def freeze() -> None:
        livekit.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(10)
        finally:
            livekit.send_signal(signal.SIGCONT)

    # The callers reconnect; a recorder that lost the room would rejoin. Whether its client
    # lost the room shows some seconds after the thaw, so the wait for a recording with both
    # callers in it begins 8 s after.
    call = await _call_across(stack, tmp_path, freeze, new_mix=False, settle_s=8)
    await wait_for_recordings(stack.cfg, call.room_sid, count=2, timeout_s=90)
    await asyncio.sleep(5)  # a second recording, if the first one lost the room
    recordings = await asyncio.to_thread(stored_recordings, stack.cfg, call.room_sid)
    mixes = [r for r in recordings if r.kind == "room"]
    assert any(_voiced_at(m, call.said_before) for m in mixes)
    assert any(_voiced_at(m, call.said_after) for m in mixes)
    for recording in recordings:
        assert recording.status in ("EGRESS_COMPLETE", "EGRESS_FAILED")
        assert int(recording.file["size"]) == len(recording.data)


async def test_livekit_restarted_mid_call_keeps_what_was_recorded_and_records_on(
    stack: Stack, tmp_path: Path
) -> None:
    """LiveKit restarts: the recorder's connection is gone (its client does not reconnect).
    What it recorded is finished and marked; a new recording takes the call on."""
    livekit = stack.services["livekit"]

    async def restart() -> None:
        livekit.stop()
        livekit.start()
        livekit.wait_ready()

    # The callers reconnect; the room listing finds the room for a new recording.
    call = await _call_across(stack, tmp_path, restart, new_mix=True)
    lost, continued = await _two_mixes(stack, call.room_sid)
    assert "lost the connection to LiveKit" in lost.manifest["error"]
    assert _voiced_at(lost, call.said_before)
    assert _voiced_at(continued, call.said_after)


@dataclass
class Interrupted:
    room_sid: str
    said_before: float  # when Alice's tone before the fault began (wall clock)
    said_after: float


async def _call_across(
    stack: Stack,
    tmp_path: Path,
    fault: Callable[[], Awaitable[None]],
    *,
    new_mix: bool,
    settle_s: float = 0.0,
) -> Interrupted:
    """Alice speaks, the fault happens, and once the recorder records the call again (in a mix
    begun after the fault, if `new_mix`; not before `settle_s`) she speaks again; both leave."""
    before = write_tone(tmp_path / "before.wav", freq=330, seconds=3)
    after = write_tone(tmp_path / "after.wav", freq=660, seconds=3)
    alice, bob, room_sid = await _start_call(stack)
    try:
        await asyncio.sleep(2)
        said_before = time.time()
        await alice.speak_wav(before)
        fault_ns = time.time_ns()
        await fault()
        await asyncio.sleep(settle_s)
        # Not only a fixed wait: how long the callers take to reconnect, and the recorder to find
        # the room, depends on how busy the machine is.
        await _recording_again(stack, room_sid, fault_ns if new_mix else 0, alice, bob)
        said_after = time.time()
        await alice.speak_wav(after)
        await asyncio.sleep(2)
    finally:
        await bob.leave()
        await alice.leave()
    return Interrupted(room_sid, said_before, said_after)


async def _recording_again(
    stack: Stack,
    room_sid: str,
    mix_after_ns: int,
    *callers: SyntheticCaller,
    timeout_s: float = 60.0,
) -> None:
    """Waits until the callers are connected and the recorder's mix of the room, begun after
    `mix_after_ns`, has them all in it, as its health answer says."""
    deadline = time.monotonic() + timeout_s
    status: object = None
    async with httpx.AsyncClient(base_url=stack.cfg.recorder_url, timeout=5) as client:
        while time.monotonic() < deadline:
            connected = all(
                c.room.connection_state == rtc.ConnectionState.CONN_CONNECTED for c in callers
            )
            with contextlib.suppress(httpx.HTTPError):
                status = (await client.get("/healthz")).json()["rooms"].get(room_sid)
            if (
                connected
                and isinstance(status, dict)
                and status["mix_started_ns"] > mix_after_ns
                and status["callers"] >= len(callers)
            ):
                return
            await asyncio.sleep(0.25)
    raise AssertionError(f"the recorder did not record the call again: {status}")


async def _two_mixes(stack: Stack, room_sid: str) -> tuple[StoredRecording, StoredRecording]:
    """The mix that was cut short and the one that took the call on, each stored whole."""
    recordings = await wait_for_recordings(stack.cfg, room_sid, count=4, timeout_s=90, mixes=2)
    mixes = sorted((r for r in recordings if r.kind == "room"), key=lambda r: r.started_ns)
    assert [m.status for m in mixes] == ["EGRESS_FAILED", "EGRESS_COMPLETE"]
    for mix in mixes:
        assert int(mix.file["size"]) == len(mix.data)
    return mixes[0], mixes[1]


def _voiced_at(mix: StoredRecording, said: float) -> bool:
    """The 3 s tone said at `said` (wall clock) is heard in the mix where it belongs."""
    audio = decode_ogg(mix.data)
    at = said - mix.started_ns / 1e9
    length = len(audio) / RATE
    if not (0 <= at and at + 2.5 < length):
        logger.warning("the tone at %.2f s is outside the mix of %.2f s", at, length)
        return False
    level = rms(audio, at + 0.5, at + 2.5)
    logger.info("the tone at %.2f s of %.2f s: RMS %.3f", at, length, level)
    return level > VOICED


async def test_the_recorders_own_leave_is_not_a_lost_connection(stack: Stack) -> None:
    """Only a connection that dropped makes the service record a live room again."""
    secrets = stack.cfg.secrets
    grants = lkapi.VideoGrants(room_join=True, room="leave-check", hidden=True, can_publish=False)
    token = (
        lkapi.AccessToken(secrets.livekit_api_key, secrets.livekit_api_secret)
        .with_identity("recorder-leave-check")
        .with_grants(grants)
        .to_jwt()
    )
    subscriber = Subscriber(lambda _track, _packet: None)
    await subscriber.connect(stack.cfg.livekit_url, token)
    await subscriber.close()
    assert subscriber.closed.is_set()
    assert not subscriber.lost, subscriber.close_reason
