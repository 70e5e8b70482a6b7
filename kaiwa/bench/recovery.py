"""`kaiwa bench recovery`: a dialog call's worker killed mid-utterance, and a drain.

It starts a stack of its own with two agent workers (or, with `--workers 1`, the one of the
stack `make up` starts, restarted when it dies as `kaiwa up` restarts it) and the watchdog.
Each round a caller
joins a dialog (the `assistant` scenario), hears the greeting, and starts a sentence; the
worker serving the call is SIGKILLed in the middle of it. Measured from the kill, on one
machine's clock:

- orphan detected: the watchdog's "a call has no live agent" (the lease must expire first:
  CALL_LEASE_TTL_S after the agent's last refresh);
- dispatched: the watchdog's "a new agent is dispatched";
- agent joined: the caller sees the new agent's participant;
- first audio: the caller hears the new agent's first voiced audio (its "Sorry, I lost you");
- speech lost: the caller's voiced speech while no agent listened: the sentence in flight,
  from its start until the new agent joined (or its end, if that came first).

The killed worker is started again before the next round, so each kill finds every worker.

Then the drain: a call on one worker asks three questions (voice to voice, before), the
worker gets SIGTERM, the caller asks three more (during the drain) and hangs up; SIGTERM →
the call's end → the worker's exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc

from agents import engines
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.process import ManagedProcess
from kaiwa.stack.services import Stack, ephemeral_config
from kaiwa.stack.workers import ensure_workers, serving_worker, start_worker

from .common import median
from .dialog import QUESTIONS, Conversation

# The kill lands in the middle of this sentence, which ends before a new agent can join:
# the new agent's first words then come as soon as it can speak, not when the caller
# happens to stop (an agent does not talk over a caller).
IN_FLIGHT = "On Saturday I went to the market with my sister."
KILL_AFTER_S = 1.5  # from the microphone's first sample of it
TAKEOVER_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60


def _speech(text: str) -> tuple[np.ndarray[Any, Any], int]:
    voice = engines.voice("en")
    return voice.synthesize(text), voice.sample_rate


def _log_times(path: Path, message: str, room: str) -> list[float]:
    """Wall-clock times of a JSON log's lines with `message` about `room`."""
    times = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") == message and entry.get("room") == room:
            times.append(_ts(entry["ts"]))
    return times


def _ts(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def _agents(caller: SyntheticCaller) -> set[str]:
    return {p.identity for p in caller.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)}


async def _greeted(caller: SyntheticCaller) -> None:
    talk = Conversation(caller)
    onset = await talk.reply_onset(time.monotonic() - 60)
    if onset is None:
        raise RuntimeError("no greeting heard")
    await talk.quiet(onset)


async def _kill_round(
    stack: Stack, number: int, sentence: tuple[Any, int], workers: int
) -> dict[str, Any]:
    caller = SyntheticCaller(stack.cfg.api_url, name=f"Kill {number}", mode="dialog")
    await caller.join(scenario="assistant")
    try:
        await caller.wait_for_agent()
        await _greeted(caller)
        room = caller.grant["room"]
        worker = await serving_worker(stack, room)
        assert worker.proc is not None
        before = _agents(caller)
        joined_at: dict[str, float] = {}
        caller.room.on(
            "participant_connected",
            lambda p: joined_at.setdefault(p.identity, time.monotonic()),
        )
        await caller.open_microphone(sentence[1])
        speaking = asyncio.create_task(caller.speak(*sentence))
        await asyncio.sleep(KILL_AFTER_S)
        killed_mono, killed_wall = time.monotonic(), time.time()
        os.kill(worker.proc.pid, signal.SIGKILL)
        utterance = await speaking
        first_audio = None
        deadline = killed_mono + TAKEOVER_TIMEOUT_S
        while time.monotonic() < deadline and first_audio is None:
            new = _agents(caller) - before
            voiced = [
                h.at
                for h in caller.heard
                if h.participant in new and h.at > killed_mono and h.peak >= 1000
            ]
            if voiced:
                first_audio = voiced[0]
            await asyncio.sleep(0.02)
        joined = min((at for who, at in joined_at.items() if who not in before), default=None)
        watchdog_log = stack.services["watchdog"].log_path
        detected = _log_times(watchdog_log, "a call has no live agent", room)
        dispatched = _log_times(watchdog_log, "a new agent is dispatched", room)
        # What the caller said while no agent listened is lost: the sentence in flight, from
        # its start (nothing of it was stored) until the new agent joined, if it was still
        # going on then.
        heard_again = joined if joined is not None else utterance.voice_until
        lost_s = max(0.0, min(utterance.voice_until, heard_again) - utterance.voice_from)
        return {
            "detected_s": round(detected[0] - killed_wall, 3) if detected else None,
            "dispatched_s": round(dispatched[0] - killed_wall, 3) if dispatched else None,
            "joined_s": round(joined - killed_mono, 3) if joined else None,
            "first_audio_s": round(first_audio - killed_mono, 3) if first_audio else None,
            "speech_lost_s": round(lost_s, 3),
        }
    finally:
        await caller.leave()
        await ensure_workers(stack, workers)


async def _voice_to_voice(caller: SyntheticCaller, question: tuple[Any, int]) -> float | None:
    talk = Conversation(caller)
    utterance = await caller.speak(*question)
    onset = await talk.reply_onset(utterance.voice_until)
    if onset is None:
        return None
    await talk.quiet(onset)
    return onset - utterance.voice_until


async def _drain(stack: Stack, workers: int) -> dict[str, Any]:
    caller = SyntheticCaller(stack.cfg.api_url, name="Drain", mode="dialog")
    await caller.join(scenario="assistant")
    worker: ManagedProcess | None = None
    try:
        await caller.wait_for_agent()
        await _greeted(caller)
        worker = await serving_worker(stack, caller.grant["room"])
        assert worker.proc is not None
        questions = [await asyncio.to_thread(_speech, q) for q in QUESTIONS[:6]]
        before = [await _voice_to_voice(caller, q) for q in questions[:3]]
        sigterm = time.monotonic()
        os.kill(worker.proc.pid, signal.SIGTERM)
        during = [await _voice_to_voice(caller, q) for q in questions[3:]]
    finally:
        await caller.leave()
    ended = time.monotonic()
    assert worker is not None and worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, DRAIN_TIMEOUT_S + 30)
    exited = time.monotonic()
    await ensure_workers(stack, workers)
    return {
        "voice_to_voice_before_s_median": median([v for v in before if v is not None]),
        "voice_to_voice_during_drain_s_median": median([v for v in during if v is not None]),
        "sigterm_to_call_end_s": round(ended - sigterm, 3),
        "call_end_to_exit_s": round(exited - ended, 3),
        "exit_code": code,
    }


async def _supervise(stack: Stack, stop: asyncio.Event) -> None:
    """What `kaiwa up` does each second: a service that exited is started again."""
    while not stop.is_set():
        await asyncio.to_thread(stack.supervise, on_restart=lambda _service, _code: None)
        try:
            await asyncio.wait_for(stop.wait(), 1)
        except TimeoutError:
            pass


async def run(kills: int, workers: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state_dir:
        cfg = ephemeral_config(
            Path(state_dir), extra_env={"AGENT_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S)}
        )
        stack = Stack(cfg)
        stop_supervising = asyncio.Event()
        supervisor: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(stack.start)
            if workers == 2:
                await asyncio.to_thread(start_worker, stack, 2)
            else:
                supervisor = asyncio.create_task(_supervise(stack, stop_supervising))
            sentence = await asyncio.to_thread(_speech, IN_FLIGHT)
            rounds = [await _kill_round(stack, n, sentence, workers) for n in range(kills)]
            drain = await _drain(stack, workers)
        finally:
            stop_supervising.set()
            if supervisor is not None:
                await supervisor
            await asyncio.to_thread(stack.stop)

    def med(key: str) -> float | None:
        return median([r[key] for r in rounds if r[key] is not None])

    return {
        "kills": kills,
        "workers": workers,
        "kill_to_detected_s_median": med("detected_s"),
        "kill_to_dispatched_s_median": med("dispatched_s"),
        "kill_to_agent_joined_s_median": med("joined_s"),
        "kill_to_first_audio_s_median": med("first_audio_s"),
        "kill_to_first_audio_s_max": max(
            (r["first_audio_s"] for r in rounds if r["first_audio_s"] is not None), default=None
        ),
        "taken_over": sum(r["first_audio_s"] is not None for r in rounds),
        "speech_lost_s_median": med("speech_lost_s"),
        "rounds": rounds,
        "drain": drain,
        "engines": {"stt": "whisper-base", "llm": cfg.llm_model, "tts": "piper"},
        "machine_cpus": os.cpu_count(),
    }
