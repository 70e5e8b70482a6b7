"""One person's audio track: speech-to-text once, captions, and sentences ready to translate.

A finished sentence is a `FinalText`, which knows whose it is and which voice speaks its
translations; a typed message (typed.py) is one too, and goes the same way from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import stt

from core.languages import base_language
from core.payloads import MAX_SEGMENT_TEXT, SegmentKind
from core.tasks import TaskOwner

from .. import metrics
from ..captions import Caption
from .log import logger
from .sentences import SentenceCommitter

STT_RATE = 16000
# Frames of this person's audio waiting for speech-to-text (10 ms each): 5 s, then the
# oldest are dropped by the SDK rather than memory growing.
AUDIO_QUEUE_FRAMES = 500
# Silence pushed after a track ends, so the VAD closes a sentence cut off mid-word.
TRAILING_SILENCE_S = 0.8


@dataclass(frozen=True)
class FinalText:
    """A finished sentence (or the end of an utterance) of one person, said or typed."""

    segment_id: str
    speaker: str  # the person's identity
    # What its captions name as the transcribed track, and its translated voices' prefix
    # (`<voice>-<language>`): the person's microphone track sid, or for a typed message
    # from someone with none, `chat-<identity>` (typed.py).
    voice: str
    text: str
    language: str  # as heard
    start_s: float
    end_s: float
    # When the text was known (monotonic): the start of its translation's lag.
    at: float
    # The sentence's latency ledger, stage by stage (agents/metrics.py), filled in as it
    # goes through the pipeline and stored with it.
    timings: dict[str, float] = field(default_factory=dict)
    kind: SegmentKind = "speech"
    # The language the person set, where speech-to-text heard another one plainly (and
    # transcribed it as heard: agents/stt/whisper_model.py); else None.
    language_setting: str | None = None

    def caption(self) -> Caption:
        """The sentence's final caption."""
        return Caption(
            segment_id=self.segment_id,
            track_id=self.voice,
            speaker=self.speaker,
            language=self.language,
            text=self.text,
            final=True,
            start_s=self.start_s,
            end_s=self.end_s,
            kind=self.kind,
            language_setting=self.language_setting,
        )

    def translation_caption(self, language: str, text: str) -> Caption:
        """A translation's caption: a final of its own segment, naming its source."""
        return Caption(
            segment_id=f"{self.segment_id}-{language}",
            track_id=self.voice,
            speaker=self.speaker,
            language=language,
            text=text,
            final=True,
            start_s=self.start_s,
            end_s=self.end_s,
            source_segment_id=self.segment_id,
            kind=self.kind,
        )

    def segment(self, translations: dict[str, str]) -> dict[str, Any]:
        """What the history API stores for the sentence (validated by the SegmentStore)."""
        return {
            "id": self.segment_id,
            "participant_identity": self.speaker,
            "language": self.language,
            "text": self.text[:MAX_SEGMENT_TEXT],
            "start_s": self.start_s,
            "end_s": self.end_s,
            "translations": translations,
            "kind": self.kind,
            "timings": self.timings,
        }


class SpeakerPipeline:
    """Runs one STT stream over one track; sends captions; hands final text on in order."""

    def __init__(
        self,
        *,
        identity: str,
        track: rtc.RemoteAudioTrack,
        track_sid: str,
        language: str,
        engine: stt.STT[Any],
        call_offset_s: float,
        send_caption: Callable[[Caption], Awaitable[None]],
        on_final: Callable[[FinalText], None],
    ) -> None:
        self.identity = identity
        self.track = track
        self.track_sid = track_sid
        self.language = language
        self.engine = engine
        # Seconds from the call's start to this stream's start: STT times are the stream's.
        self.call_offset_s = call_offset_s
        self._send_caption = send_caption
        self._on_final = on_final
        self.tasks = TaskOwner(logger, track=track_sid)
        self._task: asyncio.Task[None] | None = None
        self._audio: rtc.AudioStream | None = None
        self._closing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self.tasks.spawn(self._run(), f"speaker-{self.track_sid}")

    async def _run(self) -> None:
        audio = self._audio = rtc.AudioStream(
            self.track, sample_rate=STT_RATE, num_channels=1, capacity=AUDIO_QUEUE_FRAMES
        )
        stream = self.engine.stream(language=self.language)

        async def feed() -> None:
            try:
                async for event in audio:
                    stream.push_frame(event.frame)
            finally:
                # The track ended (the person left, or unpublished): close the open sentence.
                silence = rtc.AudioFrame.create(STT_RATE, 1, int(STT_RATE * TRAILING_SILENCE_S))
                with contextlib.suppress(RuntimeError):  # the stream is already closed
                    stream.push_frame(silence)
                    stream.end_input()

        feeder = self.tasks.spawn(feed(), f"speaker-feed-{self.track_sid}")
        try:
            await self._read(stream)
        finally:
            await self.tasks.cancel(feeder)
            await stream.aclose()
            await audio.aclose()

    async def _read(self, stream: stt.SpeechStream) -> None:
        committer = SentenceCommitter()
        async for event in stream:
            if not event.alternatives:
                continue
            data = event.alternatives[0]
            utterance = event.request_id or "u"
            start, end = self.call_offset_s + data.start_time, self.call_offset_s + data.end_time
            part = len(committer.committed)
            if event.type == stt.SpeechEventType.INTERIM_TRANSCRIPT:
                # An interim with an end of speech was decoded at a pause (agents/stt).
                paused_at = event.speech_end_time
                done, rest = committer.interim(data.text, paused=paused_at is not None)
                for index, sentence in enumerate(done, start=part):
                    # Only a sentence that ends the text was followed by the pause.
                    ended = paused_at if not rest and index == part + len(done) - 1 else None
                    self._final(f"{utterance}-{index}", sentence, data, start, end, ended)
                if rest:
                    segment_id = f"{utterance}-{len(committer.committed)}"
                    await self._send_caption(
                        self._caption(segment_id, rest, self._heard(data), start, end, False)
                    )
            elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                rest = committer.final(data.text)
                if rest:
                    self._final(
                        f"{utterance}-{part}", rest, data, start, end, event.speech_end_time
                    )

    def _heard(self, data: stt.SpeechData) -> str:
        """The language the text is in: the person's setting, unless speech-to-text heard
        another one plainly."""
        heard = str(data.language or "")
        if heard in ("", "und") or heard == base_language(self.language):
            return self.language
        return heard

    def _caption(
        self, segment_id: str, text: str, language: str, start: float, end: float, final: bool
    ) -> Caption:
        return Caption(
            segment_id=segment_id,
            track_id=self.track_sid,
            speaker=self.identity,
            language=language,
            text=text,
            final=final,
            start_s=round(start, 3),
            end_s=round(end, 3),
            language_setting=None if language == self.language else self.language,
        )

    def _final(
        self,
        segment_id: str,
        text: str,
        data: stt.SpeechData,
        start: float,
        end: float,
        speech_ended_at: float | None = None,
    ) -> None:
        """`speech_ended_at` (unix time) is known for a sentence the speaker paused or
        stopped after: one finished while its speaker goes on has no end of speech to
        measure from."""
        timings: dict[str, float] = {}
        if speech_ended_at is not None:
            timings["final_transcript"] = metrics.observe_stage(
                "interpret", "final_transcript", self.language, time.time() - speech_ended_at
            )
        heard = self._heard(data)
        self._on_final(
            FinalText(
                segment_id=segment_id,
                speaker=self.identity,
                voice=self.track_sid,
                text=text,
                language=heard,
                start_s=round(start, 3),
                end_s=round(max(end, start), 3),
                at=time.monotonic(),
                timings=timings,
                language_setting=None if heard == self.language else self.language,
            ),
        )

    def audio_depth(self) -> int:
        """Frames of this person's audio waiting for speech-to-text. The SDK's ring buffer
        drops its oldest frames past AUDIO_QUEUE_FRAMES without telling: a depth at that
        bound is the sign."""
        queue = getattr(getattr(self._audio, "_queue", None), "_queue", None)
        return len(queue) if queue is not None else 0

    def end_input(self) -> None:
        """The track is gone (or the call ends): stop reading it. The open sentence is then
        closed as final, and its translation and storage follow as usual."""
        if self._audio is not None and self._closing is None:
            self._closing = self.tasks.spawn(self._audio.aclose(), f"speaker-end-{self.track_sid}")

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])

    async def aclose(self) -> None:
        await self.tasks.aclose()
