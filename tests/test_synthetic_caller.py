"""The synthetic caller, which later benchmarks time with, hears what another caller says."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration

RATE = 16000


def write_tone_wav(path: Path, *, silence_s: float, tone_s: float) -> None:
    t = np.arange(int(RATE * tone_s)) / RATE
    tone = (0.4 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    gap = np.zeros(int(RATE * silence_s), dtype=np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(np.concatenate([gap, tone, gap]).tobytes())


async def test_listener_hears_the_speakers_wav_in_real_time(stack: Stack, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    write_tone_wav(wav, silence_s=1.0, tone_s=1.0)
    api = stack.cfg.api_url
    speaker = SyntheticCaller(api, name="Speaker", mode="interpret")
    await speaker.join()
    # Every track, not just translations: this listener hears the speaker's own voice.
    listener = SyntheticCaller(
        api, name="Listener", mode="interpret", room_name=speaker.room_name, listen="all"
    )
    await listener.join()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        finished_at = await speaker.speak_wav(wav)
        elapsed = loop.time() - started
        await asyncio.sleep(0.5)
    finally:
        await speaker.leave()
        await listener.leave()

    # Real-time pace: 3 s of audio takes about 3 s to send, not a burst.
    assert 2.8 <= elapsed <= 4.0, elapsed
    frames = [h for h in listener.heard if h.participant == speaker.identity]
    assert frames, "listener heard nothing from the speaker"
    loud = [h.at for h in frames if np.sqrt(np.mean(h.samples.astype(np.float64) ** 2)) > 3000]
    assert loud, "the tone never arrived"
    tone_heard_s = len(loud) * len(frames[0].samples) / frames[0].sample_rate
    assert 0.8 <= tone_heard_s <= 1.2, tone_heard_s
    # The tone ends about 1 s before the last frame left the speaker.
    assert 0.5 <= finished_at - loud[-1] <= 1.8, finished_at - loud[-1]
