"""Driving the caller page in a real Chromium: the browser tests and `kaiwa bench web`.

Chromium's fake microphone plays a WAV file in a loop; the page under test is the one
callers use, unchanged. What the page hears is measured in the page by an audio probe: a
Web Audio analyser on each of its <audio> elements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, Playwright

from .audio_files import save_wav

CHROMIUM = "/usr/bin/chromium"
WAV_RATE = 48000

# Records, per audio element (by its track name), when its level first rose above a
# whisper and the loudest level seen: `window.kaiwaHeard`. Times are performance.now().
AUDIO_PROBE = """
(() => {
  window.kaiwaHeard = {};
  const context = new AudioContext();
  const probed = new WeakSet();
  const probe = (element) => {
    if (probed.has(element) || !element.srcObject) return;
    probed.add(element);
    const name = element.dataset.trackName || "?";
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(element.srcObject).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const heard = (window.kaiwaHeard[name] = { first: null, peak: 0 });
    setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      heard.peak = Math.max(heard.peak, rms);
      if (heard.first === null && rms > 0.01) heard.first = performance.now();
    }, 20);
  };
  new MutationObserver(() => {
    context.resume();
    document.querySelectorAll("audio").forEach(probe);
  }).observe(document, { childList: true, subtree: true });
})();
"""


def write_wav(
    path: Path, samples: np.ndarray[Any, Any], rate: int, *, lead_s: float, tail_s: float
) -> Path:
    """`samples` (int16) at `rate`, resampled to 48 kHz, between two silences: what the
    fake microphone says, once per loop of the file."""
    source = np.asarray(samples, dtype=np.float32)
    positions = np.arange(int(len(source) * WAV_RATE / rate)) * rate / WAV_RATE
    resampled = np.interp(positions, np.arange(len(source)), source).astype(np.int16)
    pcm = np.concatenate(
        [
            np.zeros(int(lead_s * WAV_RATE), np.int16),
            resampled,
            np.zeros(int(tail_s * WAV_RATE), np.int16),
        ]
    )
    return save_wav(path, pcm, WAV_RATE)


@asynccontextmanager
async def chromium(playwright: Playwright, microphone: Path) -> AsyncIterator[Browser]:
    """A Chromium whose microphone plays `microphone`, and whose pages may play audio
    without a click (a reload rejoins on its own)."""
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    try:
        yield browser
    finally:
        await browser.close()


async def heard(page: Page) -> dict[str, dict[str, float | None]]:
    """The audio probe's findings: track name → {first, peak}."""
    found: dict[str, dict[str, float | None]] = await page.evaluate("window.kaiwaHeard ?? {}")
    return found
