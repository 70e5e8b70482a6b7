"""`kaiwa bench phone`: phone calls through the SIP bridge, placed by SIPp.

It starts a stack of its own (as `make up` does, bridge included) and provisions one number
whose calls reach the dialog agent in the `assistant` scenario. Measured at the phone, with
the wall clock of SIPp's message log and of our RTP socket on the same machine:

- answer: INVITE → first 180, and INVITE → 200 OK, over `--calls` calls. It includes the
  dispatch, the agent's join and its track's publication (the bridge answers once that
  track is subscribed);
- greeting: 200 OK → the first voiced audio at the phone;
- voice to voice: end of the caller's speech → first voiced audio of the reply, on the phone
  (G.711 A-law and G.722) and, on the same sentences in the same voice, from a browser
  caller (WebRTC, Opus);
- STT: the word error rate of what the agent stored of the caller's sentences, per path;
- flood: INVITEs from an address no trunk allows, 50 a second for 30 s; the CPU seconds of
  the bridge, livekit-server and Redis meanwhile, and the answer time of a real call
  placed during it;
- the bridge's resident memory when idle and during two calls.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np

from agents import engines
from api.admin_auth import mint_admin_token
from kaiwa.caller import SyntheticCaller
from kaiwa.eval.text import normalize
from kaiwa.phone import CallResult, PhoneCall, flood, phone_line, place_call, room_of
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import bench_grant, cpu_seconds, create_room, median, percentile
from .dialog import QUESTIONS, Conversation

NUMBER = "+15550100100"
CALLER = "+15550100999"
SENTENCES = QUESTIONS[:5]
# Each question is asked this long after the last one began: its answer is over by then.
SPACING_S = 16.0
FIRST_AT_S = 7.0  # after the greeting
VOICED = 1000  # int16 peak of 20 ms that carries speech


def _speech(text: str) -> tuple[np.ndarray[Any, Any], int]:
    voice = engines.voice("en")
    return voice.synthesize(text), voice.sample_rate


def _voiced_span(pcm: np.ndarray[Any, Any], rate: int) -> tuple[float, float]:
    """Where the voice in a synthesized sentence begins and ends, in seconds."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > VOICED)
    return (loud[0] / rate, loud[-1] / rate) if len(loud) else (0.0, len(pcm) / rate)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _ack_at(result: CallResult) -> float | None:
    """When the phone sent its ACK: SIPp starts its audio right after it."""
    acks = [m.at for m in result.messages if m.sent and m.first_line.startswith("ACK")]
    return acks[-1] if acks else None


def _onsets_after(result: CallResult, moments: list[float]) -> list[float | None]:
    """For each wall-clock moment, the first voiced 20 ms the phone heard after it."""
    pcm, arrivals = result.ear.audio(result.codec)
    step = len(pcm) // max(1, len(arrivals)) or 1
    voiced = [
        at
        for index, at in enumerate(arrivals)
        if at and np.abs(pcm[index * step : (index + 1) * step].astype(np.int32)).max() > VOICED
    ]
    return [next((at for at in voiced if at > moment), None) for moment in moments]


async def _stored_user_turns(cfg: StackConfig, room_name: str) -> list[str]:
    """The caller's turns as the history stored them, once the call has ended."""
    token, _ = mint_admin_token(cfg.secrets.livekit_api_secret, cfg.secrets.admin_password, 600)
    async with httpx.AsyncClient(
        base_url=cfg.api_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for _ in range(60):
            listed = (await client.get("/api/conversations", params={"room": room_name})).json()
            rooms = listed["items"]
            if rooms:
                detail = (await client.get(f"/api/conversations/{rooms[0]['id']}")).json()
                turns = [t["text"] for t in detail["transcript"] if t["role"] == "user"]
                if len(turns) >= len(SENTENCES) or detail.get("ended_at"):
                    return turns
            await asyncio.sleep(1.0)
    return []


def _wer(said: list[str]) -> float | None:
    if not said:
        return None
    reference = normalize(" ".join(SENTENCES), "en")
    return round(float(jiwer.wer(reference, normalize(" ".join(said), "en"))), 3)


async def _answer_times(stack: Stack, calls: int) -> dict[str, Any]:
    cfg = stack.cfg
    ringing: list[float] = []
    answered: list[float] = []
    greeting: list[float] = []
    for _ in range(calls):
        call = PhoneCall(cfg.ports.sip, NUMBER, caller=CALLER, hang_up_after_s=4.0)
        result = await place_call(call)
        result.ear.close()
        if result.invited_at is None or result.answered_at is None:
            continue
        if result.ringing_at is not None:
            ringing.append(result.ringing_at - result.invited_at)
        answered.append(result.answered_at - result.invited_at)
        if (delay := result.greeting_delay_s()) is not None:
            greeting.append(delay)
        await asyncio.sleep(1.0)  # the agent leaves the last room
    return {
        "calls": calls,
        "answered": len(answered),
        "invite_to_180_s_median": median(ringing),
        "invite_to_180_s_p95": percentile(ringing, 95),
        "invite_to_200_s_median": median(answered),
        "invite_to_200_s_p95": percentile(answered, 95),
        "answer_to_greeting_s_median": median(greeting),
        "answer_to_greeting_s_p95": percentile(greeting, 95),
    }


async def _phone_conversation(stack: Stack, codec: str) -> dict[str, Any]:
    """The sentences asked on one phone call: voice to voice, and what the agent stored."""
    cfg = stack.cfg
    sentences = [await asyncio.to_thread(_speech, s) for s in SENTENCES]
    rate = sentences[0][1]
    length_s = FIRST_AT_S + SPACING_S * len(sentences)
    audio = np.zeros(int(length_s * rate), dtype=np.int16)
    ends: list[float] = []  # where each sentence's voice ends, in seconds of the call
    for index, (pcm, _) in enumerate(sentences):
        start = int((FIRST_AT_S + SPACING_S * index) * rate)
        audio[start : start + len(pcm)] = pcm[: len(audio) - start]
        ends.append(start / rate + _voiced_span(pcm, rate)[1])
    codecs = ("G722", "PCMA") if codec == "G722" else ("PCMA",)
    caller = {"PCMA": "+15550101001", "G722": "+15550101002"}[codec]
    call = PhoneCall(
        cfg.ports.sip,
        NUMBER,
        caller=caller,
        codecs=codecs,
        speech=audio,
        speech_rate=rate,
        hang_up_after_s=length_s,
    )
    placing = asyncio.create_task(place_call(call))
    room_name = await room_of(cfg, f"sip_{caller}")
    result = await placing
    try:
        media_from = _ack_at(result)
        onsets = _onsets_after(result, [media_from + end for end in ends]) if media_from else []
    finally:
        result.ear.close()
    voice_to_voice = [
        onset - (media_from + end)
        for onset, end in zip(onsets, ends, strict=False)
        if onset is not None and media_from is not None
    ]
    said = await _stored_user_turns(cfg, room_name)
    return {
        "codec": result.codec,
        "voice_to_voice_s_median": median(voice_to_voice),
        "voice_to_voice_s_each": [round(v, 3) for v in voice_to_voice],
        "stt_wer": _wer(said),
        "stored": said,
    }


async def _browser_conversation(stack: Stack) -> dict[str, Any]:
    """The same sentences from a browser caller, each asked once the last answer ended."""
    cfg = stack.cfg
    room_name = f"bench-phone-browser-{os.getpid()}"
    await create_room(cfg, room_name, {"mode": "dialog", "scenario": "assistant"})
    caller = SyntheticCaller(
        cfg.api_url, name="Bench", mode="dialog", language="en", room_name=room_name
    )
    await caller.connect(bench_grant(cfg, room_name, "bench-caller", mode="dialog", language="en"))
    talk = Conversation(caller)
    voice_to_voice: list[float] = []
    try:
        await caller.wait_for_agent()
        joined = time.monotonic()
        await talk.reply_onset(joined)
        await talk.quiet(joined)
        for text in SENTENCES:
            pcm, rate = await asyncio.to_thread(_speech, text)
            ended = (await caller.speak(pcm, rate)).voice_until
            onset = await talk.reply_onset(ended)
            if onset is not None:
                voice_to_voice.append(onset - ended)
                await talk.quiet(onset)
    finally:
        await caller.leave(ended=True)
    said = await _stored_user_turns(cfg, room_name)
    return {
        "voice_to_voice_s_median": median(voice_to_voice),
        "voice_to_voice_s_each": [round(v, 3) for v in voice_to_voice],
        "stt_wer": _wer(said),
        "stored": said,
    }


async def _flood(stack: Stack) -> dict[str, Any]:
    cfg = stack.cfg
    pids = {
        name: stack.services[name].proc.pid  # type: ignore[union-attr]
        for name in ("sip", "livekit", "redis")
    }
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    flooding = asyncio.create_task(
        flood(cfg.ports.sip, NUMBER, local_ip="127.0.0.2", rate_per_s=50, seconds=30)
    )
    await asyncio.sleep(5.0)
    legit = await place_call(PhoneCall(cfg.ports.sip, NUMBER, caller=CALLER, hang_up_after_s=4))
    legit.ear.close()
    flooded = await flooding
    wall = time.monotonic() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    return {
        "invites_sent": flooded.sent,
        "invites_per_s": round(flooded.rate_per_s, 1),
        "answered_180": flooded.provisional,
        "cpu_share_of_one_core": {name: round(seconds / wall, 3) for name, seconds in cpu.items()},
        "legit_invite_to_200_s": (
            round(legit.answered_at - legit.invited_at, 3)
            if legit.answered_at and legit.invited_at
            else None
        ),
        "legit_answer_to_greeting_s": legit.greeting_delay_s(),
    }


async def _memory(stack: Stack) -> dict[str, Any]:
    cfg = stack.cfg
    pid = stack.services["sip"].proc.pid  # type: ignore[union-attr]
    idle = _rss_mb(pid)
    calls = [
        asyncio.create_task(
            place_call(
                PhoneCall(cfg.ports.sip, NUMBER, caller=f"+1555020000{i}", hang_up_after_s=8)
            )
        )
        for i in range(2)
    ]
    await asyncio.sleep(6.0)
    during = _rss_mb(pid)
    for result in await asyncio.gather(*calls):
        result.ear.close()
    return {"idle_mb": idle, "two_calls_mb": during}


async def run(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state_dir:
        cfg = ephemeral_config(Path(state_dir))
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            results: dict[str, Any] = {}
            async with phone_line(cfg, NUMBER, allowed_addresses=("127.0.0.1/32",)):
                results["bridge_rss"] = await _memory(stack)
                results["answer"] = await _answer_times(stack, calls)
                results["phone_pcma"] = await _phone_conversation(stack, "PCMA")
                results["phone_g722"] = await _phone_conversation(stack, "G722")
                results["browser"] = await _browser_conversation(stack)
                results["flood"] = await _flood(stack)
        finally:
            await asyncio.to_thread(stack.stop)
    browser = results["browser"]["voice_to_voice_s_median"]
    for path in ("phone_pcma", "phone_g722"):
        phone = results[path]["voice_to_voice_s_median"]
        if phone is not None and browser:
            results[path]["voice_to_voice_ratio_to_browser"] = round(phone / browser, 3)
    results["engines"] = {"stt": "whisper-base", "llm": cfg.llm_model, "tts": "piper"}
    results["machine_cpus"] = os.cpu_count()
    return results
