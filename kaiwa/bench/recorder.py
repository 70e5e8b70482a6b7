"""`kaiwa bench recorder`: how many calls one core records, and how complete the files are.

It starts a stack of its own (Redis, LiveKit, the S3 server, the API, the recorder; no agent
and no LLM, so the recorder's cost is not mixed with theirs), then holds N rooms with two
synthetic speakers each. Every speaker publishes one continuous tone for the whole call, so
any gap in a recording is the recorder's (or the network's) and not a pause in speech.

Measured from outside the recorder:
- CPU: the recorder process's CPU seconds per second of calls (from /proc), turned into
  recordings per core;
- completeness: the room mix's duration ÷ the call's duration (first join to last leave),
  and the tone found in each speaker's own file ÷ the tone that speaker sent;
- gaps: silences over 100 ms inside a speaker's file;
- lost and dropped audio as the recorder itself counted it (EgressInfo details);
- uploads keeping up: time from the end of the calls until every file is stored and verified.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaiwa.audio_files import RATE, decode_ogg, write_tone
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.process import ManagedProcess
from kaiwa.stack.services import (
    api_service,
    ephemeral_config,
    livekit_service,
    recorder_service,
    redis_service,
    s3_client,
    s3_service,
)

FRAME_S = 0.010
VOICED_RMS = 0.02
STEADY_MARGIN_S = 3.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def voiced_frames(
    samples: np.ndarray[Any, np.dtype[np.float32]],
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    n = int(RATE * FRAME_S)
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    result: np.ndarray[Any, np.dtype[np.bool_]] = np.sqrt(np.mean(frames**2, axis=1)) > VOICED_RMS
    return result


def _gaps_over_100ms(voiced: np.ndarray[Any, np.dtype[np.bool_]]) -> int:
    idx = np.flatnonzero(voiced)
    if len(idx) < 2:
        return 0
    runs = np.diff(idx) - 1  # silent frames between voiced ones
    return int(np.sum(runs * FRAME_S > 0.100))


@dataclass
class Speaker:
    caller: SyntheticCaller


@dataclass
class Room:
    speakers: list[Speaker]
    sid: str = ""
    joined: float = 0.0
    left: float = 0.0
    spoken: float = 0.0  # when the speakers' tones were all sent (wall clock, as manifests)


async def _hold_call(room: Room, wavs: list[Path], all_joined: asyncio.Barrier) -> None:
    first, second = (s.caller for s in room.speakers)
    await first.join(record=True)
    room.joined = time.time()
    # A room code names a call in progress: the second speaker joins the first one's room.
    second.room_name = first.room_name
    await second.join()
    room.sid = await first.room.sid
    # Every room speaks at once, so the steady-state window sees all of them recorded.
    await all_joined.wait()
    await asyncio.gather(*(s.caller.speak_wav(w) for s, w in zip(room.speakers, wavs, strict=True)))
    room.spoken = time.time()
    for speaker in room.speakers:
        await speaker.caller.leave()
    room.left = time.time()


def recording_manifests(cfg: Any, room_sid: str) -> list[dict[str, Any]]:
    client = s3_client(cfg)
    listed = client.list_objects_v2(Bucket=cfg.s3_bucket, Prefix=f"recordings/{room_sid}/")
    out = []
    for item in listed.get("Contents", []):
        if item["Key"].endswith(".json"):
            body = client.get_object(Bucket=cfg.s3_bucket, Key=item["Key"])["Body"].read()
            out.append(json.loads(body))
    return out


def stored_object(cfg: Any, key: str) -> bytes:
    body: bytes = s3_client(cfg).get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()
    return body


async def run(rooms: int, seconds: float, keep_logs: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state:
        # Every synthetic caller asks for its token from this one address: lift the per-address
        # limit that would otherwise turn the 31st away.
        limit = {"TOKEN_RATE_LIMIT": str(max(30, 4 * rooms))}
        cfg = ephemeral_config(Path(state), env_name="test", llm_model="none", extra_env=limit)
        services: list[ManagedProcess] = []
        try:
            for build in (redis_service, livekit_service, s3_service, api_service):
                service = build(cfg)
                services.append(service)
                service.start()
                service.wait_ready()
            recorder = recorder_service(cfg)
            services.append(recorder)
            recorder.start()
            recorder.wait_ready()
            assert recorder.proc is not None
            return await _measure(cfg, recorder.proc.pid, rooms, seconds, Path(state))
        finally:
            for service in reversed(services):
                service.stop()
            if keep_logs is not None:
                shutil.copytree(cfg.logs_dir, keep_logs, dirs_exist_ok=True)


async def _measure(cfg: Any, pid: int, n: int, seconds: float, state: Path) -> dict[str, Any]:
    wavs = [
        write_tone(state / f"tone{i}.wav", freq=300 + 70 * i, seconds=seconds, amplitude=6000)
        for i in range(2)
    ]
    # The speakers only send: subscribing to each other would put decoding on the bench's
    # share of the cores, not the recorder's.
    rooms = [
        Room(
            [
                Speaker(
                    SyntheticCaller(cfg.api_url, name=f"s{i}{s}", mode="interpret", listen="none")
                )
                for s in "ab"
            ]
        )
        for i in range(n)
    ]
    all_joined = asyncio.Barrier(n + 1)
    cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
    calls = asyncio.gather(*(_hold_call(room, wavs, all_joined) for room in rooms))
    # Steady state: every room connected and speaking, joins and leaves outside the window.
    # This is the cost of a recording that goes on, which is what a core's capacity means.
    await all_joined.wait()
    await asyncio.sleep(STEADY_MARGIN_S)
    cpu_at, wall_at = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(max(1.0, seconds - 2 * STEADY_MARGIN_S))
    steady_cores = (_cpu_seconds(pid) - cpu_at) / (time.monotonic() - wall_at)
    await calls
    cpu, wall = _cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    calls_ended = time.monotonic()

    expected = 3 * n  # a mix and two speakers per room
    deadline = time.monotonic() + 120
    manifests: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        manifests = [
            m for r in rooms for m in await asyncio.to_thread(recording_manifests, cfg, r.sid)
        ]
        if len(manifests) >= expected:
            break
        await asyncio.sleep(0.5)
    stored_after_s = time.monotonic() - calls_ended

    by_room = {r.sid: r for r in rooms}
    by_identity = {s.caller.identity: s.caller for r in rooms for s in r.speakers}
    speaker_ratio, mix_ratio, start_lag, gaps, lost_ms, dropped_packets = [], [], [], 0, 0, 0
    # Where a speaker's missing tone is: before its first recorded sound, or after its last.
    missing_start: list[float] = []
    missing_end: list[float] = []
    for manifest in manifests:
        file = manifest["fileResults"][0]
        audio = await asyncio.to_thread(
            decode_ogg, await asyncio.to_thread(stored_object, cfg, file["filename"])
        )
        room = by_room[manifest["roomId"]]
        if "roomComposite" in manifest:
            mix_ratio.append(len(audio) / RATE / (room.left - room.joined))
            start_lag.append(int(manifest["startedAt"]) / 1e9 - room.joined)
            continue
        details = json.loads(manifest.get("details") or "{}")
        voiced = voiced_frames(audio)
        heard = np.flatnonzero(voiced)
        if len(heard):
            file_start = int(manifest["startedAt"]) / 1e9
            sent = by_identity[details["participant_identity"]].wav_started_at
            missing_start.append(max(0.0, file_start + heard[0] * FRAME_S - sent))
            missing_end.append(max(0.0, room.spoken - file_start - (heard[-1] + 1) * FRAME_S))
        # Each speaker sent exactly `seconds` of tone.
        speaker_ratio.append(float(np.sum(voiced)) * FRAME_S / seconds)
        gaps += _gaps_over_100ms(voiced)
        lost_ms += details.get("lost_ms", 0)
        dropped_packets += details.get("dropped_packets", 0)

    cores_used = cpu / wall
    return {
        "rooms": n,
        "speakers": 2 * n,
        "call_s": seconds,
        "recordings_expected": expected,
        "recordings_stored": len(manifests),
        "recorder_cpu_cores_steady": round(steady_cores, 3),
        "recordings_per_core": round(n / steady_cores, 1) if steady_cores else None,
        # With the joins, connection set-up and the files' finishing included.
        "recorder_cpu_cores_whole_call": round(cores_used, 3),
        "recordings_per_core_whole_call": round(n / cores_used, 1) if cores_used else None,
        "speaker_audio_kept_median": round(statistics.median(speaker_ratio), 4),
        "speaker_audio_kept_min": round(min(speaker_ratio), 4),
        "mix_duration_ratio_median": round(statistics.median(mix_ratio), 4),
        "mix_duration_ratio_min": round(min(mix_ratio), 4),
        "recording_start_lag_s_median": round(statistics.median(start_lag), 3),
        "speaker_missing_at_start_s_median": round(statistics.median(missing_start), 3),
        "speaker_missing_at_end_s_median": round(statistics.median(missing_end), 3),
        "gaps_over_100ms": gaps,
        "lost_ms": lost_ms,
        "dropped_packets": dropped_packets,
        "all_stored_after_calls_s": round(stored_after_s, 2),
        "machine_cpus": os.cpu_count(),
    }
