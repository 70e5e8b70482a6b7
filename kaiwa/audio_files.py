"""Audio files the synthetic callers speak and the checks read back: 16-bit mono WAVs, and
Ogg/Opus recordings decoded to float samples."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np

# LiveKit's Opus rate: what callers send and recordings hold.
RATE = 48_000


def save_wav(path: Path, pcm: np.ndarray[Any, np.dtype[np.int16]], rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def write_tone(path: Path, *, freq: float, seconds: float, amplitude: int = 8000) -> Path:
    """A steady sine: any gap in a recording of it is the recorder's."""
    t = np.arange(int(RATE * seconds)) / RATE
    return save_wav(path, (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16))


def decode_ogg(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Mono float samples at RATE."""
    chunks = []
    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
