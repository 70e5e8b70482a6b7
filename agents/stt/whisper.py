"""Offline speech-to-text with faster-whisper, segmented by Silero VAD.

Whisper has no streaming mode. While someone speaks, the growing segment is re-decoded at a
bounded rate for interim results; when VAD says the speech ended, the segment is decoded
once more for the final result. Segments are cut at `max_segment_s` so memory and decode
time stay bounded on long speech.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Never

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from core.errors import UnsupportedLanguage

from ..audio import MonoResampler, to_float32

SAMPLE_RATE = 16000
WHISPER_LANGUAGES = frozenset(_LANGUAGE_CODES)
UNSPACED_LANGUAGES = frozenset({"ja", "zh"})
WINDOW_S = 30  # the model's input: 30 s of audio, 100 feature frames a second
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
FRAMES_PER_S = 100
WINDOW_MARGIN_S = 2.0
MAX_TOKENS_BASE = 16
MAX_TOKENS_PER_S = 16


@dataclass(frozen=True)
class WhisperOptions:
    language: str | None = None  # None: detect per segment
    interim_interval_s: float = 0.7
    max_segment_s: float = 28.0  # Whisper's window is 30 s
    min_speech_s: float = 0.2  # shorter bursts are clicks and breaths, not words
    beam_size: int = 1  # greedy: on 2 cores, beam search costs more than it gains live
    # Segments Whisper itself rates as probably not speech are dropped (hallucination guard).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # Start decoding the final result this far into a pause, while VAD still waits to confirm
    # that speech ended (its min_silence_duration): the decode overlaps the wait. Not sooner:
    # gaps between words reach 0.1-0.2 s, and a decode started there, once speech resumes,
    # still holds one of the two decode threads (it cannot be stopped), so the real final
    # could queue behind it.
    early_final_after_s: float = 0.25
    # The shortest encoder window (see WhisperEngine._encode). Measured on 2 cores,
    # whisper-base: one decode of a 2 s question 1.0 s with the full 30 s, 0.3 s with 10 s.
    min_window_s: float = 10.0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    confidence: float


class WhisperEngine:
    """One loaded model and the threads that run it (shared by every stream)."""

    def __init__(self, model_dir: str, *, cpu_threads: int = 2, parallel: int = 2) -> None:
        # Two decodes at once, so a final never waits behind an interim already running (a
        # decode cannot be interrupted). Measured on 2 cores, 2 s of speech: one decode
        # 1.2 s; two at once 1.74 s for both, against 2.4 s one after the other.
        self.model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=parallel,
        )
        self.executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="whisper")

    def transcribe(self, audio: np.ndarray, options: WhisperOptions) -> Transcript:
        """Decode `audio` window by window (one window for anything up to 30 s); the language
        is detected on the first window when `options.language` is None."""
        language = options.language
        texts, probabilities = [], []
        for start in range(0, len(audio), WINDOW_SAMPLES):
            chunk = audio[start : start + WINDOW_SAMPLES]
            encoded = self._encode(chunk, options.min_window_s)
            if language is None:
                # [(token "<|ja|>", probability), ...], most likely first.
                language = self.model.model.detect_language(encoded)[0][0][0][2:-2]
            text, probability = self._decode(encoded, len(chunk), language, options)
            if text:
                texts.append(text)
                probabilities.append(probability)
        joiner = "" if language in UNSPACED_LANGUAGES else " "
        return Transcript(
            text=joiner.join(texts),
            language=language or "",
            duration_s=len(audio) / SAMPLE_RATE,
            confidence=float(np.mean(probabilities)) if probabilities else 0.0,
        )

    def _encode(self, chunk: np.ndarray, min_window_s: float) -> ctranslate2.StorageView:
        # The encoder's cost follows its window, not the speech in it, and Whisper pads every
        # input to 30 s: a 2 s question cost as much as 30 s of speech. The window is cut to
        # the speech plus a margin of silence (the model was trained on padded input, and
        # with no silence after the last word it tends to repeat it), and never below
        # `min_window_s`: shorter windows cost accuracy for little more speed.
        speech_s = len(chunk) / SAMPLE_RATE
        window_s = min(WINDOW_S, max(min_window_s, math.ceil(speech_s + WINDOW_MARGIN_S)))
        frames = int(window_s * FRAMES_PER_S)
        features = self.model.feature_extractor(chunk)[:, :frames]
        return self.model.encode(pad_or_trim(features, frames))

    def _decode(
        self,
        encoded: ctranslate2.StorageView,
        samples: int,
        language: str,
        options: WhisperOptions,
    ) -> tuple[str, float]:
        """(text, average token probability); no text where Whisper itself rates the window
        as probably not speech (its hallucination guard)."""
        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
        # A bound on the text (about 4 times the fastest speech's tokens per second): a
        # decoder that loops on a phrase stops there instead of at the model's 448 tokens.
        max_tokens = MAX_TOKENS_BASE + int(MAX_TOKENS_PER_S * samples / SAMPLE_RATE)
        # One decode, with no fallback re-decodes at higher temperatures: each costs a full
        # decode, live captions cannot wait for them, and the guard below drops what fails.
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=options.beam_size,
            max_length=min(self.model.max_length, len(prompt) + max_tokens),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = result.sequences_ids[0]
        # The score is the log probability per token; as in Whisper, the end token counts.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if (
            result.no_speech_prob > options.no_speech_threshold
            and avg_logprob < options.log_prob_threshold
        ):
            return "", 0.0
        text = tokenizer.decode(tokens).strip()
        if language in UNSPACED_LANGUAGES:
            text = text.replace(" ", "")
        return text, float(np.exp(avg_logprob))

    async def transcribe_async(self, audio: np.ndarray, options: WhisperOptions) -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.transcribe, audio, options)


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

        async def interim(pending: asyncio.Task[Transcript] | None = None) -> None:
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
                self._event_ch.send_nowait(
                    _event(
                        stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        result.text,
                        result.language,
                        segment.start_s,
                        segment.start_s + result.duration_s,
                        confidence=result.confidence,
                        request_id=segment.id,
                    )
                )

        early: asyncio.Task[Transcript] | None = None

        def decode(frames: list[rtc.AudioFrame]) -> asyncio.Task[Transcript]:
            audio = to_float32(frames)
            return asyncio.create_task(
                self._whisper._engine.transcribe_async(audio, self._options), name="whisper-final"
            )

        async def finalize(
            frames: list[rtc.AudioFrame], pending: asyncio.Task[Transcript] | None = None
        ) -> None:
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
                self._event_ch.send_nowait(
                    _event(
                        stt.SpeechEventType.FINAL_TRANSCRIPT,
                        result.text,
                        result.language,
                        start,
                        start + result.duration_s,
                        confidence=result.confidence,
                        request_id=segment_id,  # the interims' id: the final replaces them
                    )
                )
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
                        continue  # no interims during a pause: the decode thread is the final's
                    if early is not None:
                        # Speech resumed: that decode is no longer the final, but it is a
                        # fresh interim (its decode thread cannot be stopped anyway).
                        if interim_task is None or interim_task.done():
                            segment.last_interim = now
                            interim_task = asyncio.create_task(
                                interim(early), name="whisper-interim"
                            )
                        else:
                            early.cancel()
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
                    if interim_task is not None:
                        await utils.aio.cancel_and_wait(interim_task)
                    # The early decode covers all the speech: only silence came after it.
                    await finalize(list(segment.frames), early)
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
