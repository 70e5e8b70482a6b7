"""Helpers for tests of calls on the real stack: speech in our voices, what a caller heard,
and the stored history as an admin reads it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from difflib import SequenceMatcher
from typing import Any

import httpx
import numpy as np
from livekit import rtc

from agents import engines
from agents.stt.whisper_model import WhisperOptions
from api.admin_auth import mint_admin_token
from kaiwa.caller import HeardAudio, ReceivedText, SyntheticCaller
from kaiwa.stack.services import Stack


def speech(language: str, text: str) -> tuple[np.ndarray[Any, Any], int]:
    """`text` in the project's voice for `language`: mono 16-bit samples and their rate."""
    voice = engines.voice(language)
    return voice.synthesize(text), voice.sample_rate


def heard_on(caller: SyntheticCaller, track_name: str) -> np.ndarray[Any, Any]:
    frames = [h for h in caller.heard if h.track_name == track_name]
    if not frames:
        return np.zeros(0, dtype=np.float32)
    pcm = np.concatenate([h.samples for h in frames])
    resampler = rtc.AudioResampler(frames[0].sample_rate, 16000, num_channels=1)
    out = resampler.push(rtc.AudioFrame(pcm.tobytes(), frames[0].sample_rate, 1, len(pcm)))
    out += resampler.flush()
    return (
        np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]).astype(np.float32)
        / 32768.0
    )


async def transcribe(caller: SyntheticCaller, track_name: str, language: str) -> str:
    audio = heard_on(caller, track_name)
    engine = engines.whisper("whisper-base")
    result = await asyncio.to_thread(engine.transcribe, audio, WhisperOptions(language=language))
    return said_once(result.text)


def said_once(text: str) -> str:
    """Whisper-base sometimes loops on a sentence at the end of a buffer, writing it out a
    dozen times (seen once in CI: "On a clear sunny day, the sky will be blue." over and
    over, for one caption of it). A sentence repeated back to back counts once."""
    sentences = re.split(r"(?<=[.!?。？！])\s*", text.strip())
    kept: list[str] = []
    for sentence in sentences:
        if not kept or sentence.strip().lower() != kept[-1].strip().lower():
            kept.append(sentence)
    return " ".join(s for s in kept if s)


def agent_finals(caller: SyntheticCaller) -> list[ReceivedText]:
    """The final captions an agent sent this caller (its words, as it speaks them)."""
    agents = {p.identity for p in caller.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)}
    return [
        t
        for t in caller.texts
        if t.participant in agents and t.attributes.get("lk.transcription_final") == "true"
    ]


@contextlib.asynccontextmanager
async def dialog_caller(stack: Stack, name: str) -> AsyncIterator[SyntheticCaller]:
    """A caller in a new dialog room (the assistant scenario), once its agent has joined."""
    person = SyntheticCaller(stack.cfg.api_url, name=name, mode="dialog", language="en")
    await person.join(scenario="assistant")
    try:
        await person.wait_for_agent()
        yield person
    finally:
        await person.leave()


def agent_track(caller: SyntheticCaller) -> str:
    """The one track this caller has heard: the agent's voice."""
    names = {h.track_name for h in caller.heard}
    assert names, "nothing heard from the agent"
    (name,) = names
    return name


async def after_greeting(caller: SyntheticCaller) -> str:
    """Once the agent's greeting is captioned and has finished playing; its track."""
    await wait_for(lambda: agent_finals(caller), 60, "the agent's greeting", caller)
    track = agent_track(caller)
    await wait_quiet(caller, track)
    return track


def similarity(a: str, b: str) -> float:
    """How alike two texts are, letters only (0-1): a transcript against its caption."""

    def letters(text: str) -> str:
        return "".join(c for c in text.lower() if c.isalnum())

    return SequenceMatcher(None, letters(a), letters(b)).ratio()


def bigram_share(heard: str, said: str) -> float:
    """The share of what was said (character pairs) that was heard: for Japanese, which has
    no spaces to count words by."""

    def pairs(text: str) -> set[str]:
        chars = [c for c in text if c.isalnum()]
        return {a + b for a, b in zip(chars, chars[1:], strict=False)}

    wanted = pairs(said)
    return len(wanted & pairs(heard)) / max(1, len(wanted))


# A question of common words, which small models hear well: asked "What is the capital city
# of France?", a machine that heard "friends" was told "New York". Still, "sky" is sometimes
# heard as "this guy", and then answered so: "The guy on the clear sunny day is likely
# wearing a white shirt." (a CI run). So a reply answers it when it names the colour asked
# for, or takes up at least two of the question's words, as an answer to the words heard
# does. A greeting or an apology does neither.
SKY_QUESTION = "What color is the sky on a clear sunny day?"
SKY_WORDS = {"color", "sky", "clear", "sunny", "day"}
SKY_ANSWER = "blue"


def answers_sky(reply: str) -> bool:
    return SKY_ANSWER in reply.lower() or keyword_share(reply, SKY_WORDS) >= 0.4


def keyword_share(text: str, keywords: set[str]) -> float:
    """The share of `keywords` (lower-case words) found among the words of `text`.

    Small models hear and say a word differently on another CPU (kernels are picked by
    instruction set): content is asserted on a share of several words, never one word.
    """
    words = set(re.findall(r"\w+", text.lower()))
    return len(keywords & words) / len(keywords)


async def wait_for(
    predicate: Callable[[], object], timeout_s: float, what: str, *callers: SyntheticCaller
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            received = {c.name: [(t.text, t.attributes) for t in c.texts] for c in callers}
            raise AssertionError(f"timed out waiting for {what}; captions: {received}")
        await asyncio.sleep(0.2)


async def wait_interpreted(listener: SyntheticCaller, speaker: SyntheticCaller) -> None:
    """Until the interpreter offers `listener` a voice for `speaker` (whose microphone is
    open) in the listener's language: from then on it knows both, and translates what the
    speaker says. (It learns of a participant a moment after the server does: up to about
    2.5 s on 2 busy cores.)"""
    await wait_offered(listener, speaker.microphone_sid)


async def wait_offered(listener: SyntheticCaller, microphone_sid: str) -> None:
    """Until the interpreter offers `listener` the voice of the microphone track
    `microphone_sid` in the listener's language (it then hears that microphone)."""
    name = f"{microphone_sid}-{listener.language}"

    def offered() -> bool:
        return any(
            publication.name == name
            for agent in listener.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
            for publication in agent.track_publications.values()
        )

    await wait_for(offered, 30, f"the interpreter's {name} voice")


@contextlib.asynccontextmanager
async def interpreted_pair(api_url: str) -> AsyncIterator[tuple[SyntheticCaller, SyntheticCaller]]:
    """Alice (en) and Kenji (ja) in one interpreted call, microphones open as the caller
    page's are, each offered the other's translated voice."""
    alice = SyntheticCaller(api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    kenji = SyntheticCaller(
        api_url, name="Kenji", mode="interpret", language="ja", room_name=alice.room_name
    )
    await kenji.join()
    try:
        await alice.open_microphone(engines.voice("en").sample_rate)
        await kenji.open_microphone(engines.voice("ja").sample_rate)
        await wait_interpreted(kenji, alice)
        await wait_interpreted(alice, kenji)
        yield alice, kenji
    finally:
        await kenji.leave()
        await alice.leave()


async def wait_quiet(caller: SyntheticCaller, track_name: str, quiet_s: float = 1.0) -> None:
    """Until the last voiced frame heard on `track_name` is `quiet_s` old (the voice is done)."""

    def quiet() -> bool:
        spoken = [h.at for h in caller.heard if h.track_name == track_name and voiced(h)]
        return bool(spoken) and time.monotonic() - spoken[-1] > quiet_s

    await wait_for(quiet, 30, f"{track_name} to finish speaking")


def voiced(frame: HeardAudio) -> bool:
    return frame.peak > 1000


class History:
    """The stored transcript of a room, read as an admin through the API."""

    def __init__(self, stack: Stack, room_name: str) -> None:
        cfg = stack.cfg
        token, _ = mint_admin_token(cfg.secrets.livekit_api_secret, cfg.secrets.admin_password, 600)
        self.client = httpx.AsyncClient(
            base_url=cfg.api_url, headers={"Authorization": f"Bearer {token}"}
        )
        self.room_name = room_name

    async def conversation(self) -> dict[str, Any]:
        """The room's conversation as the admin API details it."""
        listing = await self.client.get("/api/conversations", params={"room": self.room_name})
        (item,) = listing.json()["items"]
        detail: dict[str, Any] = (await self.client.get(f"/api/conversations/{item['id']}")).json()
        return detail

    async def segments(self) -> list[dict[str, Any]]:
        listing = await self.client.get("/api/conversations", params={"room": self.room_name})
        (item,) = listing.json()["items"]
        body = (await self.client.get(f"/api/conversations/{item['id']}/transcript")).json()
        segments: list[dict[str, Any]] = body["segments"]
        return segments

    async def wait_until(
        self, predicate: Callable[[dict[str, Any]], object], what: str, timeout_s: float = 30
    ) -> dict[str, Any]:
        """The conversation once `predicate` holds for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            detail = await self.conversation()
            if predicate(detail):
                return detail
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; conversation: {detail}")
            await asyncio.sleep(0.5)

    async def wait_for_segments(self, ids: set[str], timeout_s: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            segments = await self.segments()
            if ids <= {s["id"] for s in segments} or time.monotonic() > deadline:
                return segments
            await asyncio.sleep(0.5)
