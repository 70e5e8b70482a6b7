"""Offline speech-to-text with faster-whisper, segmented by Silero VAD.

Whisper has no streaming mode. While someone speaks, the growing segment is re-decoded at a
bounded rate for interim results; when VAD says the speech ended, the segment is decoded
once more for the final result. Segments are cut at `max_segment_s` so memory and decode
time stay bounded on long speech.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Never

from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from core.errors import UnsupportedLanguage

from ..audio import MonoResampler, to_float32
from .whisper_model import (
    SAMPLE_RATE,
    WHISPER_LANGUAGES,
    Transcript,
    WhisperEngine,
    WhisperOptions,
)


class WhisperSTT(stt.STT[Never]):  # no events beyond the base ones
    def __init__(
        self,
        engine: WhisperEngine,
        vad_model: vad.VAD,
        options: WhisperOptions | None = None,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=True))
        self._engine = engine
        self._vad = vad_model
        self._options = options or WhisperOptions()

    @property
    def model(self) -> str:
        return "whisper"

    @property
    def provider(self) -> str:
        return "kaiwa"

    def _options_for(self, language: NotGivenOr[str]) -> WhisperOptions:
        if not (isinstance(language, str) and language):
            return self._options
        base = language.split("-")[0].lower()
        if base not in WHISPER_LANGUAGES:
            # Say so, and keep transcribing with language detection: the call goes on.
            self._emit_error(
                UnsupportedLanguage("speech-to-text", language, "detecting the language instead"),
                recoverable=True,
            )
            return WhisperOptions(**{**self._options.__dict__, "language": None})
        return WhisperOptions(**{**self._options.__dict__, "language": base})

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        resampler = MonoResampler(SAMPLE_RATE)
        mono = [f for frame in frames for f in resampler.push(frame)] + resampler.flush()
        audio = to_float32(mono)
        options = self._options_for(language)
        if len(audio) < options.min_speech_s * SAMPLE_RATE:
            return _event(stt.SpeechEventType.FINAL_TRANSCRIPT, "", "", 0.0, 0.0)
        result = await self._engine.transcribe_async(audio, options)
        return _event(
            stt.SpeechEventType.FINAL_TRANSCRIPT,
            result.text,
            result.language,
            0.0,
            result.duration_s,
            confidence=result.confidence,
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> WhisperStream:
        return WhisperStream(
            stt=self, options=self._options_for(language), conn_options=conn_options
        )


def _event(
    kind: stt.SpeechEventType,
    text: str,
    language: str,
    start: float,
    end: float,
    *,
    confidence: float = 0.0,
    request_id: str = "",
) -> stt.SpeechEvent:
    alternatives = (
        [
            stt.SpeechData(
                language=LanguageCode(language or "und"),
                text=text,
                start_time=start,
                end_time=end,
                confidence=confidence,
            )
        ]
        if text
        else []
    )
    return stt.SpeechEvent(type=kind, request_id=request_id, alternatives=alternatives)


class WhisperStream(stt.RecognizeStream):
    def __init__(
        self, *, stt: WhisperSTT, options: WhisperOptions, conn_options: APIConnectOptions
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._whisper = stt
        self._options = options
        self._normalizer = MonoResampler(SAMPLE_RATE)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        # Normalise here, not in the base class: it refuses rate changes and assumes mono.
        self._check_input_not_ended()
        self._check_not_closed()
        for mono in self._normalizer.push(frame):
            self._input_ch.send_nowait(mono)

    def flush(self) -> None:
        for mono in self._normalizer.flush():
            self._input_ch.send_nowait(mono)
        super().flush()

    async def _run(self) -> None:
        vad_stream = self._whisper._vad.stream()
        segment = _Segment()
        interim_task: asyncio.Task[None] | None = None

        async def forward_audio() -> None:
            async for item in self._input_ch:
                if isinstance(item, rtc.AudioFrame):
                    vad_stream.push_frame(item)
                else:
                    vad_stream.flush()
            vad_stream.end_input()

        async def interim(
            pending: asyncio.Task[Transcript] | None = None, paused_at: float | None = None
        ) -> None:
            """`pending`, if given, is an early decode that speech resumed after: it covers
            the speech up to a pause that began at `paused_at` (unix time)."""
            try:
                result = await (
                    pending
                    or self._whisper._engine.transcribe_async(
                        to_float32(segment.frames), self._options
                    )
                )
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
            if segment.active and result.text:
                event = _event(
                    stt.SpeechEventType.INTERIM_TRANSCRIPT,
                    result.text,
                    result.language,
                    segment.start_s,
                    segment.start_s + result.duration_s,
                    confidence=result.confidence,
                    request_id=segment.id,
                )
                # Set on an interim only where it ends at a pause: the reader may then take
                # the sentence it ends with as finished (interpret/sentences.py).
                event.speech_end_time = paused_at
                self._event_ch.send_nowait(event)

        early: asyncio.Task[Transcript] | None = None
        paused_at: float | None = None

        def decode(frames: list[rtc.AudioFrame]) -> asyncio.Task[Transcript]:
            audio = to_float32(frames)
            return asyncio.create_task(
                self._whisper._engine.transcribe_async(audio, self._options), name="whisper-final"
            )

        async def finalize(
            frames: list[rtc.AudioFrame],
            pending: asyncio.Task[Transcript] | None = None,
            *,
            speech_ended_at: float | None = None,
        ) -> None:
            """`speech_ended_at` (unix time) is when the last speech was heard, if it ended
            (not a long segment cut mid-speech): it starts the final's latency."""
            start, segment_id = segment.start_s, segment.id
            segment.reset()
            if (
                sum(f.samples_per_channel for f in frames)
                < self._options.min_speech_s * SAMPLE_RATE
            ):
                if pending is not None:
                    await utils.aio.cancel_and_wait(pending)
                return
            result = await (pending or decode(frames))
            # Usage is the speech transcribed (as a cloud STT bills it), not the silence.
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.RECOGNITION_USAGE,
                    request_id=segment_id,
                    recognition_usage=stt.RecognitionUsage(audio_duration=result.duration_s),
                )
            )
            if result.text:
                final = _event(
                    stt.SpeechEventType.FINAL_TRANSCRIPT,
                    result.text,
                    result.language,
                    start,
                    start + result.duration_s,
                    confidence=result.confidence,
                    request_id=segment_id,  # the interims' id: the final replaces them
                )
                final.speech_end_time = speech_ended_at
                self._event_ch.send_nowait(final)
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

        forward = asyncio.create_task(forward_audio(), name="whisper-forward")
        try:
            async for event in vad_stream:
                if event.type == vad.VADEventType.START_OF_SPEECH and not segment.active:
                    # The VAD's frames include the padding before speech started.
                    segment.begin(event.frames, event.timestamp - event.speech_duration)
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                    )
                elif event.type == vad.VADEventType.INFERENCE_DONE and segment.active:
                    # The segment is built from what the VAD has seen, window by window, so
                    # it stays aligned with its events however fast audio arrives.
                    segment.frames.extend(event.frames)
                    now = time.monotonic()
                    pausing = event.raw_accumulated_silence >= self._options.early_final_after_s
                    if pausing:
                        if early is None:
                            early = decode(list(segment.frames))
                            paused_at = time.time() - event.raw_accumulated_silence
                        continue  # no interims during a pause: the decode thread is the final's
                    if early is not None:
                        # Speech resumed: that decode is no longer the final, but it is the
                        # best interim there is: it heard all the speech before the pause.
                        # It replaces an interim still running, which heard less (a decode
                        # already started goes on in the engine's bounded pool; one queued
                        # there is dropped).
                        if interim_task is not None and not interim_task.done():
                            interim_task.cancel()
                        segment.last_interim = now
                        interim_task = asyncio.create_task(
                            interim(early, paused_at), name="whisper-interim"
                        )
                        early = None
                    if segment.duration_s >= self._options.max_segment_s:
                        await finalize(list(segment.frames))
                        segment.begin([], event.timestamp)
                    elif now - segment.last_interim >= self._options.interim_interval_s and (
                        interim_task is None or interim_task.done()
                    ):
                        # Bounded rate: at most one interim decode in flight.
                        segment.last_interim = now
                        interim_task = asyncio.create_task(interim(), name="whisper-interim")
                elif event.type == vad.VADEventType.END_OF_SPEECH and segment.active:
                    # The VAD calls the end after its own silence window: speech ended then.
                    ended_at = time.time() - event.silence_duration
                    if interim_task is not None:
                        await utils.aio.cancel_and_wait(interim_task)
                    # The early decode covers all the speech: only silence came after it.
                    await finalize(list(segment.frames), early, speech_ended_at=ended_at)
                    early = None
        finally:
            for task in (interim_task, early):
                if task is not None:
                    await utils.aio.cancel_and_wait(task)
            await utils.aio.cancel_and_wait(forward)
            await vad_stream.aclose()


class _Segment:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.active = False
        self.frames: list[rtc.AudioFrame] = []
        self.start_s = 0.0
        self.last_interim = 0.0
        self.id = ""

    def begin(self, frames: list[rtc.AudioFrame], start_s: float) -> None:
        self.active = True
        self.frames = list(frames)
        self.start_s = max(0.0, start_s)
        self.last_interim = time.monotonic()
        self.id = uuid.uuid4().hex[:12]

    @property
    def duration_s(self) -> float:
        return sum(f.samples_per_channel for f in self.frames) / SAMPLE_RATE
