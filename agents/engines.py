"""Engines loaded once per worker process and shared by every call it serves."""

from __future__ import annotations

import functools

from livekit.agents import vad as agents_vad
from livekit.plugins import silero

from .models import ModelStore
from .stt.whisper import WhisperEngine
from .tts.voices import EspeakVoice, OpenJTalkVoice, PiperVoice, Voice


@functools.cache
def whisper(model: str = "whisper-base") -> WhisperEngine:
    return WhisperEngine(str(ModelStore().path(model)))


@functools.cache
def vad() -> agents_vad.VAD:
    # 0.4 s of silence ends a segment: shorter splits sentences at commas, longer adds lag.
    return silero.VAD.load(min_silence_duration=0.4, prefix_padding_duration=0.3)


@functools.cache
def voice(language: str) -> Voice:
    """The best offline voice for a language; UnsupportedLanguage if none speaks it."""
    base = language.split("-")[0].lower()
    if base == "en":
        return PiperVoice(ModelStore().path("piper-en-joe"), "en_US-joe-medium.onnx")
    if base == "ja":
        return OpenJTalkVoice()
    return EspeakVoice(base)
