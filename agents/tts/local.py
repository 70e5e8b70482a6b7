"""One TTS plugin over any offline Voice, resampled to the room's rate where it leaves."""

from __future__ import annotations

import uuid
from typing import Never

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, tokenize, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from .voices import Voice

OUTPUT_RATE = 48000  # LiveKit rooms carry Opus at 48 kHz


class LocalTTS(tts.TTS[Never]):  # no events beyond the base ones
    def __init__(self, voice: Voice, *, sample_rate: int = OUTPUT_RATE) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        # Built per call over the process's voice, whose own thread synthesizes.
        self.voice = voice

    @property
    def model(self) -> str:
        return self.voice.name

    @property
    def provider(self) -> str:
        return "kaiwa"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> LocalChunkedStream:
        return LocalChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def streaming(self) -> tts.StreamAdapter:
        """Sentence by sentence: the first sentence is heard while the rest is synthesized."""
        return tts.StreamAdapter(
            tts=self, sentence_tokenizer=tokenize.blingfire.SentenceTokenizer(min_sentence_len=8)
        )


class LocalChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: LocalTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._local = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        voice = self._local.voice
        output_emitter.initialize(
            request_id=uuid.uuid4().hex[:12],
            sample_rate=self._local.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        pcm = await voice.synthesize_async(self._input_text)
        for frame in resample(pcm, voice.sample_rate, self._local.sample_rate):
            output_emitter.push(bytes(frame.data))
        output_emitter.flush()


def resample(pcm: np.ndarray, rate: int, out_rate: int) -> list[rtc.AudioFrame]:
    frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))
    if rate == out_rate or len(pcm) == 0:
        return [frame] if len(pcm) else []
    resampler = rtc.AudioResampler(rate, out_rate, num_channels=1)
    return [*resampler.push(frame), *resampler.flush()]
