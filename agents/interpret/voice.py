"""One translated voice: a published audio track speaking one speaker's words in one language.

Sentences are spoken in order. A sentence that waited longer than `max_lag_s` between its
translation being ready and its turn to play is dropped unplayed (its caption already went
out): a listener hears a little less rather than falling further and further behind.
Each sentence says when its first frame went out (`Sentence.first_frame`), for its ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import tts

from core.tasks import TaskOwner

from .. import metrics
from .log import logger

# Audio handed to the track ahead of real time: enough to ride out a slow synthesis.
SOURCE_QUEUE_MS = 1000
# Sentences waiting for their turn; the oldest go first when more come (never unbounded).
MAX_WAITING = 16


@dataclass(frozen=True)
class Sentence:
    segment_id: str
    text: str
    # When the translation was ready (monotonic): the start of its wait to be spoken.
    ready_at: float
    # When its first frame was handed to the track (monotonic), or None when it was not
    # spoken (dropped, failed, or the voice closed first).
    first_frame: asyncio.Future[float | None]

    def settle(self, at: float | None) -> None:
        if not self.first_frame.done():
            self.first_frame.set_result(at)


class TranslatedVoice:
    def __init__(
        self,
        room: rtc.Room,
        *,
        name: str,
        language: str,
        engine: tts.TTS[Any],
        max_lag_s: float,
        on_speaking: Callable[[bool], None],
        on_drop: Callable[[], None],
    ) -> None:
        self.room = room
        self.name = name
        self.language = language
        self.engine = engine
        self.max_lag_s = max_lag_s
        self._on_speaking = on_speaking
        self._on_drop = on_drop
        self._source = rtc.AudioSource(engine.sample_rate, 1, queue_size_ms=SOURCE_QUEUE_MS)
        self._track = rtc.LocalAudioTrack.create_audio_track(name, self._source)
        self._waiting: deque[Sentence] = deque()
        metrics.QUEUE_DEPTHS.track("voice_sentences", self, lambda voice: len(voice._waiting))
        self._wakeup = asyncio.Event()
        self.tasks = TaskOwner(logger, track=name)
        self._speaking = False
        self.dropped = 0
        self.spoken = 0

    async def start(self) -> None:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(self._track, options)
        self.tasks.spawn(self._run(), f"voice-{self.name}")

    def say(self, segment_id: str, text: str) -> asyncio.Future[float | None]:
        """Queue a sentence; the future says when its first frame went out (monotonic)."""
        if len(self._waiting) >= MAX_WAITING:
            self._drop(self._waiting.popleft())
        first_frame: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(Sentence(segment_id, text, time.monotonic(), first_frame))
        self._wakeup.set()
        return first_frame

    def _drop(self, sentence: Sentence) -> None:
        self.dropped += 1
        sentence.settle(None)
        metrics.QUEUE_DROPPED.labels("voice_sentences").inc()
        self._on_drop()
        logger.info(
            "translated sentence dropped: audio too far behind",
            extra={"track": self.name, "segment_id": sentence.segment_id},
        )

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            sentence = self._waiting.popleft()
            # What is still queued on the track plays before this sentence could start.
            behind = time.monotonic() - sentence.ready_at + self._source.queued_duration
            if behind > self.max_lag_s:
                self._drop(sentence)
                continue
            self._set_speaking(True)
            try:
                await self._speak(sentence)
                self.spoken += 1
            except Exception:  # a failed synthesis costs one sentence, not the voice
                logger.exception("speech synthesis failed", extra={"track": self.name})
            finally:
                sentence.settle(None)
                if not self._waiting:
                    await self._source.wait_for_playout()
                    self._set_speaking(False)

    def _set_speaking(self, speaking: bool) -> None:
        # Report changes only: the room counts how many voices are speaking.
        if speaking != self._speaking:
            self._speaking = speaking
            self._on_speaking(speaking)

    async def _speak(self, sentence: Sentence) -> None:
        async with self.engine.synthesize(sentence.text) as stream:
            async for chunk in stream:
                # capture_frame waits while the source's queue is full: real-time pacing.
                await self._source.capture_frame(chunk.frame)
                sentence.settle(time.monotonic())

    async def aclose(self) -> None:
        await self.tasks.aclose()
        for sentence in self._waiting:
            sentence.settle(None)
        self._set_speaking(False)
        with contextlib.suppress(Exception):  # the room may already be gone
            await self.room.local_participant.unpublish_track(self._track.sid)
        await self._source.aclose()
