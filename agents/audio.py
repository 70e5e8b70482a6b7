"""Audio entering a stage: any rate, mono or stereo, becomes mono at the stage's rate.

Every pipeline stage resamples where audio enters it, never in the middle (house style).
"""

from __future__ import annotations

import numpy as np
from livekit import rtc


class MonoResampler:
    """Turns frames of any sample rate and channel count into mono frames at `rate`.

    A change of input rate mid-stream (a caller switching devices, a SIP leg re-negotiating)
    flushes the old resampler and starts a new one instead of failing.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._input_rate = 0
        self._resampler: rtc.AudioResampler | None = None

    def push(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        out: list[rtc.AudioFrame] = []
        if frame.sample_rate != self._input_rate:
            out.extend(self.flush())
            self._input_rate = frame.sample_rate
            self._resampler = (
                rtc.AudioResampler(frame.sample_rate, self.rate, num_channels=1)
                if frame.sample_rate != self.rate
                else None
            )
        mono = downmix(frame)
        if self._resampler is None:
            out.append(mono)
        else:
            out.extend(self._resampler.push(mono))
        return out

    def flush(self) -> list[rtc.AudioFrame]:
        return list(self._resampler.flush()) if self._resampler is not None else []


def downmix(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    if frame.num_channels == 1:
        return frame
    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    mono = samples.mean(axis=1).astype(np.int16)
    return rtc.AudioFrame(mono.tobytes(), frame.sample_rate, 1, len(mono))


def to_float32(frames: list[rtc.AudioFrame]) -> np.ndarray:
    """Concatenate mono int16 frames into float32 samples in [-1, 1]."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    return pcm.astype(np.float32) / 32768.0
