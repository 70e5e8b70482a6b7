"""Every call recorded: the room mix and each speaker, complete, in the S3 server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

from .recordings import RATE, decode_ogg, rms, wait_for_recordings, write_tone

pytestmark = pytest.mark.e2e

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
    joined = time.time()
    bob = SyntheticCaller(
        cfg.api_url, name="Bob", mode="interpret", language="ja", room_name=alice.room_name
    )
    await bob.join()
    room_sid = await alice.room.sid
    # Alice speaks at ~5-11 s of the call, Bob at ~30-36 s; silence otherwise.
    await asyncio.sleep(5)
    alice_said = time.time()
    await alice.speak_wav(low)
    await asyncio.sleep(30 - (time.time() - joined))
    bob_said = time.time()
    await bob.speak_wav(high)
    await asyncio.sleep(60 - (time.time() - joined))
    await bob.leave()
    await alice.leave()
    left = time.time()

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

    start = mix.started_ns / 1e9
    a, b = alice_said - start, bob_said - start
    assert rms(audio, a + 0.5, a + 5.5) > VOICED
    assert rms(audio, b + 0.5, b + 5.5) > VOICED
    assert rms(audio, a + 7, b - 1) < SILENT
    assert rms(audio, b + 7, duration) < SILENT

    alice_rec = by_kind[("participant", alice.identity)]
    bob_rec = by_kind[("participant", bob.identity)]
    for own, other_at, own_at in ((alice_rec, b, a), (bob_rec, a, b)):
        assert own.status == "EGRESS_COMPLETE"
        samples = decode_ogg(own.data)
        offset = (own.started_ns - mix.started_ns) / 1e9
        assert offset >= 0
        # On the mix's timeline: the speaker's own words in, the other speaker's out.
        assert rms(samples, own_at - offset + 0.5, own_at - offset + 5.5) > VOICED
        if other_at - offset > 0:
            assert rms(samples, other_at - offset + 0.5, other_at - offset + 5.5) < SILENT
