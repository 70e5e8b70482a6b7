"""Engines loaded once per worker process and shared by every call it serves.

The worker runs jobs as threads of its own process (agents/worker.py), so these caches are
shared by all calls; loads are serialised so two calls starting together load a model once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from livekit.agents import vad as agents_vad
from livekit.plugins import silero

from .models import ModelStore
from .stt.whisper_model import WhisperEngine
from .tts.voices import EspeakVoice, OpenJTalkVoice, PiperVoice, Voice

T = TypeVar("T")
_lock = threading.RLock()
_loaded: dict[tuple[str, str], object] = {}
_loads = 0


def _once(kind: str, key: str, load: Callable[[], T]) -> T:
    global _loads
    with _lock:
        if (kind, key) not in _loaded:
            _loaded[(kind, key)] = load()
            _loads += 1
        return _loaded[(kind, key)]  # type: ignore[return-value]


def whisper(model: str = "whisper-base") -> WhisperEngine:
    return _once("stt", model, lambda: WhisperEngine(str(ModelStore().path(model))))


# 0.4 s of silence ends a segment: shorter splits sentences at commas, longer adds lag.
VAD_MIN_SILENCE_S = 0.4


def vad() -> agents_vad.VAD:
    return _once(
        "vad",
        "silero",
        lambda: silero.VAD.load(
            min_silence_duration=VAD_MIN_SILENCE_S, prefix_padding_duration=0.3
        ),
    )


def voice(language: str) -> Voice:
    """The best offline voice for a language; UnsupportedLanguage if none speaks it."""
    base = language.split("-")[0].lower()

    def load() -> Voice:
        if base == "en":
            return PiperVoice(ModelStore().path("piper-en-joe"), "en_US-joe-medium.onnx")
        if base == "ja":
            return OpenJTalkVoice()
        return EspeakVoice(base)

    return _once("tts", base, load)


def warm(stt_model: str = "whisper-base", languages: tuple[str, ...] = ("en", "ja")) -> None:
    """Load everything a call needs now, so the first caller does not wait for it.

    A missing or corrupt model raises ModelError here, at start-up, naming the file.
    """
    whisper(stt_model)
    vad()
    for language in languages:
        voice(language)


def loaded() -> dict[str, object]:
    """What this process holds, for the worker's presence record."""
    with _lock:
        return {"engines": [f"{kind}:{key}" for kind, key in _loaded], "loads": _loads}
