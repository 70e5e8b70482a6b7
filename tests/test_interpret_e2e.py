"""Live interpretation on the real stack: callers of different languages understand each other.

Speech is made by the project's own voices (piper for English, Open JTalk for Japanese) and
spoken into each caller's always-on microphone; the interpreter's translated voices are
transcribed back with Whisper to check what was said.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import numpy as np
import pytest
from livekit import rtc

from agents import engines
from agents.stt.whisper import WhisperOptions
from api.admin_auth import mint_admin_token
from kaiwa.caller import ReceivedText, SyntheticCaller
from kaiwa.stack.services import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.models]


def speech(language: str, text: str) -> tuple[np.ndarray[Any, Any], int]:
    """`text` in the project's voice for `language`: mono 16-bit samples and their rate."""
    voice = engines.voice(language)
    return voice.synthesize(text), voice.sample_rate


def finals(caller: SyntheticCaller, language: str, *, source: bool | None = None) -> list[Any]:
    """Final captions in `language` this caller received; `source`: only source captions
    (True) or only translations (False)."""
    return [
        t
        for t in caller.texts
        if t.attributes.get("lk.transcription_final") == "true"
        and t.attributes.get("language") == language
        and (source is None or ("kaiwa.source_segment_id" not in t.attributes) == source)
    ]


def text_of(captions: list[ReceivedText]) -> str:
    return " ".join(c.text for c in captions)


def bigrams(text: str) -> set[str]:
    chars = [c for c in text if c.isalnum()]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)}


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
    return result.text


async def wait_for(
    predicate: Callable[[], object], timeout_s: float, what: str, *callers: SyntheticCaller
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            received = {c.name: [(t.text, t.attributes) for t in c.texts] for c in callers}
            raise AssertionError(f"timed out waiting for {what}; captions: {received}")
        await asyncio.sleep(0.2)


async def wait_quiet(caller: SyntheticCaller, track_name: str, quiet_s: float = 1.0) -> None:
    """Until the last voiced frame heard on `track_name` is `quiet_s` old (the voice is done)."""

    def quiet() -> bool:
        voiced = [h.at for h in caller.heard if h.track_name == track_name and _voiced(h)]
        return bool(voiced) and time.monotonic() - voiced[-1] > quiet_s

    await wait_for(quiet, 30, f"{track_name} to finish speaking")


def _voiced(frame: Any) -> bool:
    return bool(np.abs(frame.samples).max() > 1000)


class History:
    """The stored transcript of a room, read as an admin through the API."""

    def __init__(self, stack: Stack, room_name: str) -> None:
        cfg = stack.cfg
        token, _ = mint_admin_token(cfg.secrets.livekit_api_secret, cfg.secrets.admin_password, 600)
        self.client = httpx.AsyncClient(
            base_url=cfg.api_url, headers={"Authorization": f"Bearer {token}"}
        )
        self.room_name = room_name

    async def segments(self) -> list[dict[str, Any]]:
        listing = await self.client.get("/api/conversations", params={"room": self.room_name})
        (item,) = listing.json()["items"]
        body = (await self.client.get(f"/api/conversations/{item['id']}/transcript")).json()
        segments: list[dict[str, Any]] = body["segments"]
        return segments

    async def wait_for_segments(self, ids: set[str], timeout_s: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            segments = await self.segments()
            if ids <= {s["id"] for s in segments} or time.monotonic() > deadline:
                return segments
            await asyncio.sleep(0.5)


@pytest.fixture
async def alice_and_kenji(stack: Stack) -> AsyncIterator[tuple[SyntheticCaller, SyntheticCaller]]:
    alice = SyntheticCaller(stack.cfg.api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    kenji = SyntheticCaller(
        stack.cfg.api_url, name="Kenji", mode="interpret", language="ja", room_name=alice.room_name
    )
    await kenji.join()
    try:
        await alice.wait_for_agent()
        yield alice, kenji
    finally:
        await kenji.leave()
        await alice.leave()


async def test_english_and_japanese_callers_understand_each_other(
    stack: Stack, alice_and_kenji: tuple[SyntheticCaller, SyntheticCaller]
) -> None:
    alice, kenji = alice_and_kenji
    # Two sentences in one breath: the first is translated before Alice stops speaking.
    alice_says = speech(
        "en",
        "Good morning. I would like a large cup of hot coffee with milk and two sugars, please.",
    )
    kenji_says = speech("ja", "明日は雨が降りますか。")

    await alice.say(*alice_says)
    await wait_for(
        lambda: "コーヒー" in text_of(finals(kenji, "ja")), 40, "Alice's words in Japanese", kenji
    )
    await kenji.say(*kenji_says)
    await wait_for(lambda: finals(alice, "en", source=False), 40, "Kenji's words in English")
    await asyncio.sleep(4)  # the translated voices finish speaking
    alice_track, kenji_track = alice.microphone_sid, kenji.microphone_sid

    # Captions: each receives the other's words in both languages; a translation names its
    # source segment and track.
    alice_source = finals(kenji, "en", source=True)
    assert "coffee" in text_of(alice_source).lower(), alice_source
    alice_translated = finals(kenji, "ja", source=False)
    assert "コーヒー" in text_of(alice_translated), alice_translated
    assert [t.attributes["kaiwa.source_segment_id"] for t in alice_translated] == [
        s.attributes["lk.segment_id"] for s in alice_source
    ]
    for caption in alice_source + alice_translated:
        assert caption.attributes["lk.transcribed_track_id"] == alice_track
        assert float(caption.attributes["kaiwa.end_s"]) > float(caption.attributes["kaiwa.start_s"])
        assert float(caption.attributes["kaiwa.start_s"]) > 0
    kenji_source = finals(alice, "ja", source=True)
    kenji_translated = finals(alice, "en", source=False)
    assert "雨" in text_of(kenji_source), kenji_source
    assert "rain" in text_of(kenji_translated).lower(), kenji_translated
    # While Alice spoke her long sentence, interim captions came, replaced by its final.
    interims = [t for t in kenji.texts if t.attributes.get("lk.transcription_final") == "false"]
    assert any(
        i.attributes["lk.segment_id"] == f.attributes["lk.segment_id"] and i.at < f.at
        for i in interims
        for f in alice_source
    ), (interims, alice_source)

    # Voices: each hears the other in their own language, and never their own voice.
    assert {h.track_name for h in kenji.heard} == {f"{alice_track}-ja"}
    assert {h.track_name for h in alice.heard} == {f"{kenji_track}-en"}
    # What Kenji heard is the Japanese caption spoken: most of its character pairs come back
    # (Whisper mishears some Japanese words, as speech-eval.md records).
    heard_ja = await transcribe(kenji, f"{alice_track}-ja", "ja")
    said = bigrams(text_of(alice_translated))
    assert len(said & bigrams(heard_ja)) >= 0.4 * len(said), (heard_ja, alice_translated)
    heard_en = await transcribe(alice, f"{kenji_track}-en", "en")
    assert "rain" in heard_en.lower(), heard_en

    # History: every final segment exactly once, in order, with its translations.
    spoken = alice_source + kenji_source
    history = History(stack, alice.room_name or "")
    segments = await history.wait_for_segments({c.attributes["lk.segment_id"] for c in spoken})
    assert [s["id"] for s in segments] == [c.attributes["lk.segment_id"] for c in spoken]
    by_id = {s["id"]: s for s in segments}
    for source, translation in zip(alice_source, alice_translated, strict=True):
        stored = by_id[source.attributes["lk.segment_id"]]
        assert stored["participant_identity"] == alice.identity
        assert stored["language"] == "en"
        assert stored["text"] == source.text
        assert stored["translations"] == {"ja": translation.text}
    stored = by_id[kenji_source[0].attributes["lk.segment_id"]]
    assert stored["translations"] == {"en": kenji_translated[0].text}


async def test_listener_switching_language_gets_the_new_track_and_captions(stack: Stack) -> None:
    first = speech("en", "Where is the train station?")
    second = speech("en", "I would like a cup of coffee.")
    alice = SyntheticCaller(stack.cfg.api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    lee = SyntheticCaller(
        stack.cfg.api_url, name="Lee", mode="interpret", language="ja", room_name=alice.room_name
    )
    await lee.join()
    try:
        agent = await alice.wait_for_agent()
        await alice.say(*first)
        await wait_for(lambda: finals(lee, "ja", source=False), 40, "a Japanese caption")
        track = alice.microphone_sid
        await wait_quiet(lee, f"{track}-ja")
        assert {h.track_name for h in lee.heard} == {f"{track}-ja"}

        await lee.set_language("vi")

        def published() -> set[str]:
            return {p.name for p in agent.track_publications.values()}

        # The Vietnamese voice opens, and the Japanese one closes with its last listener.
        await wait_for(lambda: published() == {f"{track}-vi"}, 20, "the voices to follow Lee")
        heard_before = len(lee.heard)
        await alice.say(*second)
        await wait_for(lambda: finals(lee, "vi", source=False), 40, "a Vietnamese caption")
        await asyncio.sleep(4)
    finally:
        await lee.leave()
        await alice.leave()
    assert len(finals(lee, "ja", source=False)) == 1
    # (The Japanese track was closed before the second sentence: `published` above.)
    voiced = [h for h in lee.heard[heard_before:] if _voiced(h)]
    assert sum(h.track_name == f"{track}-vi" for h in voiced) > 50, "no Vietnamese speech heard"


async def test_api_restart_mid_call_loses_no_segment(
    stack: Stack, alice_and_kenji: tuple[SyntheticCaller, SyntheticCaller]
) -> None:
    alice, kenji = alice_and_kenji
    before = speech("en", "Where is the train station?")
    during = speech("en", "I would like a cup of coffee.")
    api = stack.services["api"]

    await alice.say(*before)
    await wait_for(lambda: len(finals(kenji, "ja", source=False)) == 1, 40, "the first caption")
    await asyncio.to_thread(api.stop)
    try:
        await alice.say(*during)
        # Captions do not depend on the API: the call goes on while it is down.
        await wait_for(
            lambda: len(finals(kenji, "ja", source=False)) == 2, 40, "the second caption"
        )
    finally:
        await asyncio.to_thread(api.start)
        await asyncio.to_thread(api.wait_ready)

    spoken = finals(kenji, "en", source=True)
    history = History(stack, alice.room_name or "")
    segments = await history.wait_for_segments({c.attributes["lk.segment_id"] for c in spoken})
    assert [s["id"] for s in segments] == [c.attributes["lk.segment_id"] for c in spoken]
    assert "coffee" in segments[-1]["text"].lower()
    assert segments[-1]["translations"]["ja"]
