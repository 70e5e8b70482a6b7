"""`kaiwa bench dialog`: how quickly the dialog agent answers, and how quickly it yields.

It starts a stack of its own (as `make up` does, with the default offline engines). A
synthetic caller joins a dialog room in the `assistant` scenario, waits for the greeting,
and holds a scripted conversation: ten questions, each asked after the previous answer
ended, then three requests for a story that the caller talks over. Speech is made by the
project's English voice and spoken into an always-on microphone. Measured at the caller,
on arrival; the caller's speech begins and ends at its first and last voiced samples as they
leave the microphone (the WAV's quiet ends and the microphone's queue are not counted):

- voice-to-voice: end of the caller's speech → first voiced frame of the reply;
- first reply text: end of the caller's speech → first caption text from the agent;
- barge-in stop: start of the caller's speech over a reply (0.8 s into it, at a moment the
  agent is heard in the middle of speaking) → last voiced frame of the reply (it includes
  the VAD's detection time and the audio path both ways);
- false interruptions: replies to the ten questions that the history marks interrupted,
  though nobody talked over them;
- CPU per session: CPU seconds of the agent worker and the LLM server per second of call
  (over the spoken questions and the barge-ins).

Then the caller types (kaiwa only: typed messages are ours to measure): five questions with
voice replies on, then five with them off, each sent after the previous answer ended:

- typed → first reply audio: the message sent → first voiced frame of the reply;
- typed → first reply text (voice replies off): the message sent → the first caption text
  of the reply, which then streams as the LLM writes it.

With `--compare` the same conversation runs again against a plain `AgentSession` with the
same engines and LiveKit's default turn handling (kaiwa/bench/reference/plain_dialog.py, in
the reference worker started beside the stack, whose CPU is then measured instead of the
product worker's), and the ratio of the median voice-to-voice latencies is printed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc

from agents import engines
from core.protocol import SPEAKER
from kaiwa.caller import ReceivedText, SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import (
    PRODUCT,
    REFERENCE,
    DesignWorker,
    bench_grant,
    cpu_seconds,
    create_room,
    ledger_medians,
    median,
    percentile,
    start_reference_worker,
    stored_lines,
)
from .reference import DESIGN

QUESTIONS = [
    "What is the capital city of France?",
    "How many days are there in a week?",
    "What color is the sky on a clear day?",
    "Can you recommend a good fruit for breakfast?",
    "What is two plus three?",
    "Which animal says meow?",
    "What do people usually drink in the morning?",
    "Is it cold in winter?",
    "What is the opposite of hot?",
    "Thank you, that was helpful.",
]
TYPED = [
    "What is the capital city of Japan?",
    "How many months are there in a year?",
    "What color is grass?",
    "Can you name a fruit that is yellow?",
    "What is four plus four?",
]
STORY = "Please tell me a story about a brave little cat."
BARGE_IN = "Sorry, wait a moment please, I have another question for you."
BARGE_INS = 3
VOICED = 1000  # int16 peak of a frame that carries speech
QUIET_S = 1.5  # a reply is over after this much silence
REPLY_TIMEOUT_S = 30.0
SPEAKING_NOW_S = 0.05  # the agent is speaking now: a voiced frame arrived this recently
SPOKEN_FOR_S = 0.3  # ... and it has been speaking for this long,
SPOKEN_SHARE = 0.6  # with this share of voiced frames (words have short dips between them)


def english_speech(text: str) -> tuple[np.ndarray[Any, Any], int]:
    voice = engines.voice("en")
    return voice.synthesize(text), voice.sample_rate


class Conversation:
    def __init__(self, caller: SyntheticCaller) -> None:
        self.caller = caller

    def agent_text_opened_after(self, at: float) -> float | None:
        """When the first caption text from the agent after `at` began to arrive."""
        agents = {
            p.identity for p in self.caller.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
        }
        opened = [t.opened for t in self.caller.texts if t.participant in agents and t.opened > at]
        return min(opened, default=None)

    def voiced_after(self, at: float) -> list[float]:
        """When the voiced frames heard since `at` arrived. Polled every few ms on the same
        two cores as the agent, so it reads only the frames since `at`."""
        voiced: list[float] = []
        for heard in reversed(self.caller.heard):
            if heard.at <= at:
                break
            if heard.peak >= VOICED:
                voiced.append(heard.at)
        return voiced[::-1]

    def reply_texts_after(self, at: float) -> list[ReceivedText]:
        """The agent's reply captions whose first text arrived after `at` (by the caption's
        speaker, not the sender: the agent sends the caller's own captions too)."""
        return [
            t
            for t in self.caller.texts
            if t.opened > at and t.attributes.get(SPEAKER, "").startswith("agent-")
        ]

    async def reply_text(self, after: float) -> ReceivedText | None:
        """The first whole reply caption after `after`: its text streamed in from `opened`."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            if replies := self.reply_texts_after(after):
                return min(replies, key=lambda t: t.opened)
            await asyncio.sleep(0.02)
        return None

    async def reply_onset(self, after: float) -> float | None:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            if voiced := self.voiced_after(after):
                return voiced[0]
            await asyncio.sleep(0.02)
        return None

    async def speaking(self) -> None:
        """Until the agent is heard in the middle of speaking: its latest frame, just in, is
        voiced, and so were most frames of the last `SPOKEN_FOR_S`. (A reply has pauses
        between its pieces; talking over one of those, or over a piece's last syllable,
        measures when the piece ended, not how soon the agent stops.)"""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        frames_per_s = 100  # the caller hears 10 ms frames
        while time.monotonic() < deadline:
            now = time.monotonic()
            recent = self.voiced_after(now - SPOKEN_FOR_S)
            if (
                recent
                and recent[-1] > now - SPEAKING_NOW_S
                and len(recent) >= SPOKEN_SHARE * SPOKEN_FOR_S * frames_per_s
            ):
                return
            await asyncio.sleep(0.01)

    async def quiet(self, after: float) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            voiced = self.voiced_after(after)
            last = voiced[-1] if voiced else after
            if time.monotonic() - last > QUIET_S:
                return
            await asyncio.sleep(0.05)


def _story_asked(lines: list[dict[str, Any]]) -> bool:
    return any(t["role"] == "user" and "story" in t["text"].lower() for t in lines)


def _false_interruptions(lines: list[dict[str, Any]]) -> int | None:
    """Stored replies marked interrupted before the first story was asked for: nobody
    talked over those."""
    stories = [
        float(t["start_s"]) for t in lines if t["role"] == "user" and "story" in t["text"].lower()
    ]
    if not stories:
        return None
    return sum(
        1 for t in lines if t["role"] == "agent" and t["interrupted"] and t["start_s"] < stories[0]
    )


def _pipeline_times(lines: list[dict[str, Any]]) -> list[float]:
    """End of the caller's speech → the reply's first frame out, per answered turn, as the
    agent measured it: the question's transcript and end of turn, then the reply's first
    token and first frame (agents/dialog/record.py: each stage from the one before)."""
    times = []
    for asked, reply in zip(lines, lines[1:], strict=False):
        stages = (
            asked["timings"].get("final_transcript", 0.0),
            asked["timings"].get("end_of_turn"),
            reply["timings"].get("llm_first_token"),
            reply["timings"].get("reply_first_frame"),
        )
        if asked["role"] == "user" and reply["role"] == "agent" and None not in stages:
            times.append(sum(stages))
    return times


async def _typed(caller: SyntheticCaller, talk: Conversation) -> dict[str, Any]:
    """Typed questions: answered in voice, then (voice replies off) in text alone."""
    to_audio: list[float] = []
    to_text: list[float] = []
    unanswered = 0
    for question in TYPED:
        sent = time.monotonic()
        await caller.send_message(question)
        onset = await talk.reply_onset(sent)
        if onset is None:
            unanswered += 1
            continue
        to_audio.append(onset - sent)
        await talk.quiet(onset)
    await caller.set_voice_replies(False)
    await asyncio.sleep(1.0)  # the agent reads the attribute as LiveKit relays it
    for question in TYPED:
        sent = time.monotonic()
        await caller.send_message(question)
        reply = await talk.reply_text(sent)
        if reply is None:
            unanswered += 1
            continue
        # A caption is kept once whole: the reply has been written out. A pause, as a reader.
        to_text.append(reply.opened - sent)
        await asyncio.sleep(QUIET_S)
    return {
        "typed_to_first_audio_s_median": median(to_audio),
        "typed_to_first_audio_s_each": [round(v, 3) for v in to_audio],
        "typed_to_first_text_s_median": median(to_text),
        "typed_to_first_text_s_each": [round(v, 3) for v in to_text],
        "typed_unanswered": unanswered,
    }


async def _conversation(
    cfg: StackConfig, stack: Stack, design: str, worker: DesignWorker
) -> dict[str, Any]:
    service = stack.services[worker.service]
    room_name = f"bench-dialog-{design}-{uuid.uuid4().hex[:6]}"
    dispatch = {"mode": "dialog", "scenario": "assistant"}
    await create_room(cfg, room_name, dispatch, agent_name=worker.agent_name)
    caller = SyntheticCaller(
        cfg.api_url, name="Bench", mode="dialog", language="en", room_name=room_name
    )
    questions = [await asyncio.to_thread(english_speech, q) for q in QUESTIONS]
    story = await asyncio.to_thread(english_speech, STORY)
    barge_in = await asyncio.to_thread(english_speech, BARGE_IN)
    await caller.connect(bench_grant(cfg, room_name, "bench-caller", mode="dialog", language="en"))
    talk = Conversation(caller)
    agent_pid = service.proc.pid  # type: ignore[union-attr]
    llm_pid = stack.services["llm"].proc.pid  # type: ignore[union-attr]
    voice_to_voice: list[float] = []
    first_text: list[float] = []
    stops: list[float] = []
    unanswered = 0
    try:
        await caller.wait_for_agent()
        joined = time.monotonic()
        await talk.reply_onset(joined)  # the greeting
        await talk.quiet(joined)
        cpu_before = cpu_seconds(agent_pid) + cpu_seconds(llm_pid)
        wall_before = time.monotonic()
        for pcm, rate in questions:
            ended = (await caller.speak(pcm, rate)).voice_until
            onset = await talk.reply_onset(ended)
            if onset is None:
                unanswered += 1
                continue
            voice_to_voice.append(onset - ended)
            await talk.quiet(onset)
            if (opened := talk.agent_text_opened_after(ended)) is not None:
                first_text.append(opened - ended)
        for _ in range(BARGE_INS):
            ended = (await caller.speak(*story)).voice_until
            onset = await talk.reply_onset(ended)
            if onset is None:
                unanswered += 1
                continue
            await asyncio.sleep(0.8)
            await talk.speaking()
            over = await caller.speak(*barge_in)
            heard = [at for at in talk.voiced_after(over.voice_from) if at <= over.sent_until]
            stops.append((heard[-1] if heard else over.voice_from) - over.voice_from)
            await talk.quiet(over.sent_until)  # its answer to the barge-in
        wall = time.monotonic() - wall_before
        cpu = cpu_seconds(agent_pid) + cpu_seconds(llm_pid) - cpu_before
        typed = await _typed(caller, talk) if design == "kaiwa" else {}
    finally:
        await caller.leave()
    lines = await stored_lines(cfg, room_name, done=_story_asked)
    pipeline = _pipeline_times(lines)
    return {
        "voice_to_voice_s_median": median(voice_to_voice),
        "voice_to_voice_s_p95": percentile(voice_to_voice, 95),
        "voice_to_voice_s_each": [round(v, 3) for v in voice_to_voice],
        "first_reply_text_s_median": median(first_text),
        "barge_in_stop_s_median": median(stops),
        "barge_in_stop_s_max": round(max(stops), 3) if stops else None,
        "barge_in_stop_s_each": [round(v, 3) for v in stops],
        "false_interruptions": _false_interruptions(lines),
        "unanswered": unanswered,
        "turns": len(voice_to_voice),
        "call_s": round(wall, 1),
        "cpu_s_per_call_s": round(cpu / wall, 3),
        **typed,
        # Inside the agent (the reference design keeps no ledger): what remains of
        # voice-to-voice is the network and playout, both ways.
        "ledger": ledger_medians(lines),
        "pipeline_s_median": median(pipeline),
        "network_and_playout_s_median": (
            round(statistics.median(voice_to_voice) - statistics.median(pipeline), 3)
            if pipeline and voice_to_voice
            else None
        ),
    }


async def run(
    compare: bool, keep_logs: Path | None = None, llm_model: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as state_dir:
        overrides = {"llm_model": llm_model} if llm_model else {}
        cfg = ephemeral_config(Path(state_dir), **overrides)
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            results: dict[str, Any] = {"kaiwa": await _conversation(cfg, stack, "kaiwa", PRODUCT)}
            if compare:
                await asyncio.to_thread(start_reference_worker, stack)
                plain = await _conversation(cfg, stack, DESIGN, REFERENCE)
                results[DESIGN] = plain
                ours, theirs = (
                    results["kaiwa"]["voice_to_voice_s_median"],
                    plain["voice_to_voice_s_median"],
                )
                if ours is not None and theirs:
                    results["voice_to_voice_ratio_median"] = round(ours / theirs, 3)
        finally:
            await asyncio.to_thread(stack.stop)
            if keep_logs is not None:
                shutil.copytree(cfg.logs_dir, keep_logs, dirs_exist_ok=True)
    results["engines"] = {"stt": "whisper-base", "llm": cfg.llm_model, "tts": "piper"}
    results["machine_cpus"] = os.cpu_count()
    return results
