"""Test speech: espeak-ng renders text to a WAV the tests feed to engines."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
from livekit import rtc


def espeak_wav(text: str, path: Path, *, voice: str = "en-us", rate_wpm: int = 150) -> Path:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return pcm, wav.getframerate(), wav.getnchannels()


def frames(
    pcm: np.ndarray, rate: int, channels: int = 1, frame_ms: int = 20
) -> list[rtc.AudioFrame]:
    per = rate * frame_ms // 1000
    if channels > 1:
        pcm = np.repeat(pcm, channels)  # the same voice on every channel
    step = per * channels
    out = []
    for start in range(0, len(pcm), step):
        chunk = pcm[start : start + step]
        if len(chunk) < step:
            chunk = np.pad(chunk, (0, step - len(chunk)))
        out.append(rtc.AudioFrame(chunk.tobytes(), rate, channels, per))
    return out


def resample(pcm: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    if rate == new_rate:
        return pcm
    resampler = rtc.AudioResampler(rate, new_rate, num_channels=1)
    out = []
    for frame in frames(pcm, rate):
        out.extend(resampler.push(frame))
    out.extend(resampler.flush())
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)
