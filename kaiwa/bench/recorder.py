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
- dropped and late audio as the recorder itself counted it (EgressInfo details);
- uploads keeping up: time from the end of the calls until every file is stored and verified.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

RATE = 48_000
FRAME_S = 0.010
VOICED_RMS = 0.02


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _tone_wav(path: Path, freq: float, seconds: float) -> Path:
    import wave

    t = np.arange(int(RATE * seconds)) / RATE
    pcm = (np.sin(2 * np.pi * freq * t) * 6000).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    return path


def _decode(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    import io

    import av

    chunks = []
    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _voiced(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
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


async def _hold_call(room: Room, wavs: list[Path], seconds: float) -> None:
    for speaker in room.speakers:
        await speaker.caller.join(record=True)
        if not room.joined:
            room.joined = time.time()
    room.sid = await room.speakers[0].caller.room.sid

    await asyncio.gather(*(s.caller.speak_wav(w) for s, w in zip(room.speakers, wavs, strict=True)))
    for speaker in room.speakers:
        await speaker.caller.leave()
    room.left = time.time()


def _manifests(cfg: Any, room_sid: str) -> list[dict[str, Any]]:
    client = s3_client(cfg)
    listed = client.list_objects_v2(Bucket=cfg.s3_bucket, Prefix=f"recordings/{room_sid}/")
    out = []
    for item in listed.get("Contents", []):
        if item["Key"].endswith(".json"):
            body = client.get_object(Bucket=cfg.s3_bucket, Key=item["Key"])["Body"].read()
            out.append(json.loads(body))
    return out


def _object(cfg: Any, key: str) -> bytes:
    body: bytes = s3_client(cfg).get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()
    return body


async def run(rooms: int, seconds: float) -> dict[str, Any]:
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


async def _measure(cfg: Any, pid: int, n: int, seconds: float, state: Path) -> dict[str, Any]:
    wavs = [_tone_wav(state / f"tone{i}.wav", 300 + 70 * i, seconds) for i in range(2)]
    rooms = [
        Room([Speaker(SyntheticCaller(cfg.api_url, name=f"s{i}a", mode="interpret"))])
        for i in range(n)
    ]
    for i, room in enumerate(rooms):
        first = room.speakers[0].caller
        first.room_name = f"bench-{i}"
        room.speakers.append(
            Speaker(SyntheticCaller(cfg.api_url, name=f"s{i}b", room_name=first.room_name))
        )
    cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(_hold_call(room, wavs, seconds) for room in rooms))
    cpu, wall = _cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    calls_ended = time.monotonic()

    expected = 3 * n  # a mix and two speakers per room
    deadline = time.monotonic() + 120
    manifests: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        manifests = [m for r in rooms for m in await asyncio.to_thread(_manifests, cfg, r.sid)]
        if len(manifests) >= expected:
            break
        await asyncio.sleep(0.5)
    stored_after_s = time.monotonic() - calls_ended

    by_room = {r.sid: r for r in rooms}
    speaker_ratio, mix_ratio, start_lag, gaps, dropped_ms, underrun_ms = [], [], [], 0, 0, 0
    for manifest in manifests:
        file = manifest["fileResults"][0]
        audio = await asyncio.to_thread(
            _decode, await asyncio.to_thread(_object, cfg, file["filename"])
        )
        room = by_room[manifest["roomId"]]
        if "roomComposite" in manifest:
            mix_ratio.append(len(audio) / RATE / (room.left - room.joined))
            start_lag.append(int(manifest["startedAt"]) / 1e9 - room.joined)
            continue
        voiced = _voiced(audio)
        # Each speaker sent exactly `seconds` of tone.
        speaker_ratio.append(float(np.sum(voiced)) * FRAME_S / seconds)
        gaps += _gaps_over_100ms(voiced)
        details = json.loads(manifest.get("details") or "{}")
        dropped_ms += details.get("dropped_ms", 0)
        underrun_ms += details.get("underrun_ms", 0)

    cores_used = cpu / wall
    return {
        "rooms": n,
        "speakers": 2 * n,
        "call_s": seconds,
        "recordings_expected": expected,
        "recordings_stored": len(manifests),
        "recorder_cpu_cores": round(cores_used, 3),
        "recordings_per_core": round(n / cores_used, 1) if cores_used else None,
        "speaker_audio_kept_median": round(statistics.median(speaker_ratio), 4),
        "speaker_audio_kept_min": round(min(speaker_ratio), 4),
        "mix_duration_ratio_median": round(statistics.median(mix_ratio), 4),
        "mix_duration_ratio_min": round(min(mix_ratio), 4),
        "recording_start_lag_s_median": round(statistics.median(start_lag), 3),
        "gaps_over_100ms": gaps,
        "dropped_ms": dropped_ms,
        "underrun_ms": underrun_ms,
        "all_stored_after_calls_s": round(stored_after_s, 2),
        "machine_cpus": os.cpu_count(),
    }
