"""A synthetic caller: joins like the web app does, speaks a WAV, records what it hears.

Tests assert on what it collects and benchmarks time it, so everything it receives carries a
monotonic timestamp taken on arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from livekit import rtc

from core.protocol import CAPTION_TOPIC, CHAT_TOPIC, MESSAGE_ID, NOTICE_TOPIC

FRAME_MS = 10
# A played file goes out in larger frames: the SDK cuts them into 10 ms packets itself, and a
# bench with dozens of callers in one process spent its CPU on per-frame calls instead.
FILE_FRAME_MS = 50


@dataclass
class HeardAudio:
    """One frame of remote audio, as it arrived."""

    at: float
    participant: str
    track_name: str
    sample_rate: int
    samples: np.ndarray[Any, np.dtype[np.int16]]
    peak: int  # the largest absolute sample: how loud the frame is


@dataclass
class ReceivedText:
    at: float  # when the stream ended (its text complete)
    participant: str
    topic: str
    text: str
    attributes: dict[str, str]
    opened: float = 0.0  # when its first bytes arrived (a spoken reply's text streams)


# A sample above this (about -36 dBFS) is voice, not the quiet before and after it.
VOICED_LEVEL = 500


@dataclass
class Utterance:
    """When an utterance left the microphone for the network (monotonic): its first and last
    voiced samples, and its last sample. A spoken WAV has quiet at both ends, which does not
    count as speech."""

    voice_from: float
    voice_until: float
    sent_until: float


class Microphone:
    """A published track that sends audio all the time, as a real microphone does: silence
    between utterances, so the listener's VAD sees a sentence end the way it would live."""

    def __init__(self, source: rtc.AudioSource) -> None:
        self.source = source
        self.rate = source.sample_rate
        self._per_frame = self.rate * FRAME_MS // 1000
        self._queued: deque[tuple[np.ndarray[Any, np.dtype[np.int16]], asyncio.Future[Utterance]]]
        self._queued = deque()
        self._silence = np.zeros(self._per_frame, dtype=np.int16)

    async def run(self) -> None:
        while True:
            if self._queued:
                pcm, done = self._queued.popleft()
                utterance = await self._speak(pcm)
                if not done.done():
                    done.set_result(utterance)
            else:
                await self._capture(self._silence)

    async def _speak(self, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> Utterance:
        voiced = np.flatnonzero(np.abs(pcm.astype(np.int32)) > VOICED_LEVEL)
        first, last = (int(voiced[0]), int(voiced[-1])) if len(voiced) else (0, len(pcm) - 1)
        voice_from = voice_until = leaves = time.monotonic()
        for start in range(0, len(pcm), self._per_frame):
            await self._capture(pcm[start : start + self._per_frame])
            # The frame just captured is last in the source's queue: it leaves once the audio
            # ahead of it has.
            leaves = time.monotonic() + self.source.queued_duration - FRAME_MS / 1000
            if start <= first < start + self._per_frame:
                voice_from = leaves + (first - start) / self.rate
            if start <= last < start + self._per_frame:
                voice_until = leaves + (last + 1 - start) / self.rate
        return Utterance(voice_from, voice_until, leaves + FRAME_MS / 1000)

    async def _capture(self, chunk: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        if len(chunk) < self._per_frame:
            chunk = np.pad(chunk, (0, self._per_frame - len(chunk)))
        frame = rtc.AudioFrame(chunk.tobytes(), self.rate, 1, self._per_frame)
        # capture_frame waits while the source's queue is full: that paces us in real time.
        await self.source.capture_frame(frame)

    async def speak(self, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> Utterance:
        """Speak `pcm` (mono, at the microphone's rate), after anything queued before it."""
        done: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()
        self._queued.append((pcm, done))
        return await done


@dataclass
class SyntheticCaller:
    api_url: str
    name: str
    mode: str = "dialog"
    language: str = "en"
    room_name: str | None = None
    identity: str | None = None
    # The rejoin ticket that came with the first token: proof of `identity` in `room_name`.
    rejoin: str | None = None
    # Bounded: a caller left listening for a long bench keeps at most this much audio.
    max_heard_frames: int = 100 * 60 * 10
    # In an interpreted call an app hears the interpreter's track in its own language, not
    # the other callers' own voices: `translations`. `all` subscribes to every audio track,
    # `none` to nothing (a load generator that only speaks).
    listen: str = "auto"

    room: rtc.Room = field(default_factory=rtc.Room)
    heard: list[HeardAudio] = field(default_factory=list)
    texts: list[ReceivedText] = field(default_factory=list)  # captions
    notices: list[ReceivedText] = field(default_factory=list)  # the agents' notices
    grant: dict[str, Any] = field(default_factory=dict)
    microphone: Microphone | None = None
    wav_started_at: float = 0.0  # when `speak_wav` sent its first frame (time.time())
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def request_token(self, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "mode": self.mode, "language": self.language}
        if self.room_name:
            body["room"] = self.room_name
        if self.identity:
            body["identity"] = self.identity
            body["rejoin"] = self.rejoin
        body.update(extra)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            response = await client.post("/api/token", json=body)
            response.raise_for_status()
            grant: dict[str, Any] = response.json()
        return grant

    async def join(self, **extra: Any) -> None:
        """Join as an app does: a token from the API, then the room."""
        await self.connect(await self.request_token(**extra))

    async def connect(self, grant: dict[str, Any]) -> None:
        """Join with `grant` (the API's token answer: url, token, room, identity, rejoin)."""
        self.grant = grant
        self.room_name, self.identity = self.grant["room"], self.grant["identity"]
        self.rejoin = self.grant.get("rejoin")
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.register_text_stream_handler(CAPTION_TOPIC, self._on_text_stream)
        self.room.register_text_stream_handler(NOTICE_TOPIC, self._on_text_stream)
        if self.listens_to_translations:
            self.room.on("track_published", lambda pub, _p: self._choose(pub))
        subscribe_all = self.listen != "none" and not self.listens_to_translations
        options = rtc.RoomOptions(auto_subscribe=subscribe_all)
        await self.room.connect(self.grant["url"], self.grant["token"], options)
        if self.listens_to_translations:
            self._choose_all()

    @property
    def listens_to_translations(self) -> bool:
        return self.listen == "translations" or (self.listen == "auto" and self.mode == "interpret")

    def _choose(self, publication: rtc.RemoteTrackPublication) -> None:
        """Subscribed to a translated track (`{source track}-{language}`) in our language only,
        never one made from our own voice."""
        own = {p.sid for p in self.room.local_participant.track_publications.values()}
        source, _, language = publication.name.rpartition("-")
        wanted = (
            publication.kind == rtc.TrackKind.KIND_AUDIO
            and language == self.language
            and source not in own
        )
        publication.set_subscribed(wanted)

    def _choose_all(self) -> None:
        for participant in self.room.remote_participants.values():
            if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                for publication in participant.track_publications.values():
                    self._choose(publication)

    async def set_language(self, language: str) -> None:
        """Switch language mid-call, as the app does: the API sets the attribute, then the
        caller picks its tracks."""
        response = await self._as_caller("PUT", "/api/call/language", json={"language": language})
        response.raise_for_status()
        self.language = language
        self._choose_all()

    async def set_typing(self, typing: bool) -> None:
        """Say whether this caller is typing, as the page does (the API sets the attribute)."""
        response = await self._as_caller("PUT", "/api/call/typing", json={"typing": typing})
        response.raise_for_status()

    async def set_voice_replies(self, on: bool) -> None:
        """Hear a dialog agent's replies, or read them only."""
        response = await self._as_caller("PUT", "/api/call/voice-replies", json={"on": on})
        response.raise_for_status()

    async def send_message(self, text: str, message_id: str | None = None) -> str:
        """Type `text` into the call, as the page does; the id it is captioned and stored
        under (`chat-<message id>`)."""
        message_id = message_id or uuid.uuid4().hex
        await self.room.local_participant.send_text(
            text, topic=CHAT_TOPIC, attributes={MESSAGE_ID: message_id}
        )
        return f"chat-{message_id}"

    async def deliver(self, text: str, *, ack_s: float = 8.0, tries: int = 3) -> str:
        """Type `text` as docs/mobile.md asks an app to: sent again, under the same id, until
        its caption comes (an agent that has just joined may not listen yet); its id."""
        message_id = uuid.uuid4().hex
        segment_id = f"chat-{message_id}"
        for _ in range(tries):
            await self.send_message(text, message_id)
            deadline = time.monotonic() + ack_s
            while time.monotonic() < deadline:
                if any(t.attributes.get("lk.segment_id") == segment_id for t in self.texts):
                    return segment_id
                await asyncio.sleep(0.1)
        raise TimeoutError(f"no caption of {segment_id} after {tries} tries")

    async def _as_caller(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the API on this caller's behalf, with its rejoin ticket."""
        headers = {"Authorization": f"Bearer {self.rejoin}"}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            return await client.request(method, path, headers=headers, **kwargs)

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._listen(track, publication.name, participant.identity))

    def _on_text_stream(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        self._spawn(self._read_text(reader, participant_identity))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: rtc.Track, track_name: str, identity: str) -> None:
        # capacity bounds the SDK's queue; a slow test drops the oldest frames, not memory.
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1, capacity=200)
        async for event in stream:
            frame = event.frame
            if len(self.heard) >= self.max_heard_frames:
                del self.heard[: len(self.heard) // 10]
            samples = np.frombuffer(frame.data, dtype=np.int16).copy()
            self.heard.append(
                HeardAudio(
                    at=time.monotonic(),
                    participant=identity,
                    track_name=track_name,
                    sample_rate=frame.sample_rate,
                    samples=samples,
                    peak=int(np.abs(samples.astype(np.int32)).max(initial=0)),
                )
            )

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        opened = time.monotonic()
        try:
            text = await reader.read_all()
        except rtc.StreamError:
            return  # cut off by a disconnect (ours, leaving mid-caption): no whole text came
        info = reader.info
        received = self.notices if info.topic == NOTICE_TOPIC else self.texts
        received.append(
            ReceivedText(
                at=time.monotonic(),
                participant=identity,
                topic=info.topic,
                text=text,
                attributes=dict(info.attributes or {}),
                opened=opened,
            )
        )

    async def speak_wav(self, path: Path, *, track_name: str = "microphone") -> float:
        """Publish a WAV at real-time pace; returns the monotonic time its last frame left."""
        with wave.open(str(path), "rb") as wav:
            rate, channels = wav.getframerate(), wav.getnchannels()
            if wav.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        source = rtc.AudioSource(rate, channels, queue_size_ms=200)
        track = rtc.LocalAudioTrack.create_audio_track(track_name, source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        per_frame = rate * FILE_FRAME_MS // 1000 * channels
        # Wall clock, like LiveKit's and the recorder's timestamps: once published, not before.
        self.wav_started_at = time.time()
        for start in range(0, len(pcm), per_frame):
            chunk = pcm[start : start + per_frame]
            if len(chunk) < per_frame:
                chunk = np.pad(chunk, (0, per_frame - len(chunk)))
            frame = rtc.AudioFrame(chunk.tobytes(), rate, channels, per_frame // channels)
            # capture_frame waits while the source's queue is full: that paces us in real time.
            await source.capture_frame(frame)
        await source.wait_for_playout()
        return time.monotonic()

    async def say(self, pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int) -> float:
        """Speak mono 16-bit `pcm` into this caller's always-on microphone (published on first
        use, at this rate); returns the monotonic time its last sample left."""
        return (await self.speak(pcm, rate)).sent_until

    async def speak(self, pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int) -> Utterance:
        """As `say`, with when its voice began and ended."""
        microphone = await self.open_microphone(rate)
        if rate != microphone.rate:
            raise ValueError(f"{rate} Hz audio; the microphone runs at {microphone.rate}")
        return await microphone.speak(pcm)

    async def open_microphone(self, rate: int) -> Microphone:
        """Publish the microphone `say` speaks on, at `rate`, if not yet: silence until then,
        as an app's open microphone sends."""
        if self.microphone is None:
            source = rtc.AudioSource(rate, 1, queue_size_ms=100)
            track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await self.room.local_participant.publish_track(track, options)
            self.microphone = Microphone(source)
            self._spawn(self.microphone.run())
        return self.microphone

    @property
    def microphone_sid(self) -> str:
        """The sid of the track `say` speaks on."""
        names = {p.name: p.sid for p in self.room.local_participant.track_publications.values()}
        return names["microphone"]

    def remote(self, kind: int | None = None) -> list[rtc.RemoteParticipant]:
        return [p for p in self.room.remote_participants.values() if kind is None or p.kind == kind]

    async def wait_for_agent(self, timeout_s: float = 30.0) -> rtc.RemoteParticipant:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            agents = self.remote(rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
            if agents:
                return agents[0]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no agent joined {self.room_name} within {timeout_s} s")

    async def leave(self, *, ended: bool = True) -> None:
        """Leave the call. `ended`: on purpose, as the page's Leave does (docs/mobile.md);
        without it, as a closed tab or a reload, which a dialog agent waits for."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if ended and self.room.isconnected():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._as_caller("POST", "/api/call/leave"), 2.0)
        await self.room.disconnect()
