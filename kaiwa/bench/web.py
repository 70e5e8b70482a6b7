"""`kaiwa bench web`: how quickly the caller page joins and recovers, in a real Chromium.

It starts a stack of its own (as `make up` does, with the default offline engines) and
drives the caller page the way a person does:

- join to greeting: press Join in a dialog call (the assistant scenario) → the first
  audible frame of the agent's greeting at the page's <audio> element (a Web Audio probe,
  kaiwa/webcall.py). The first join warms the models and is reported apart; the median is
  over the rest.
- reconnect: in a call, the browser goes offline for 5 s (DevTools network emulation:
  it cuts the page's HTTP and signalling connections, not WebRTC's media packets), then
  back online → the page leaves its "reconnecting" state; and → the next caption arrives
  (the fake microphone says a sentence every few seconds, so this includes waiting for it).

All times are taken in the page, with performance.now().
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright, expect

from agents import engines
from kaiwa.stack.services import Stack, ephemeral_config
from kaiwa.webcall import AUDIO_PROBE, chromium, heard, write_wav

from .common import median

DROP_S = 5.0
# Marks, in the page's clock: the Join press, each change of the captions' text, the
# banner's hiding.
MARKS = """
(() => {
  window.kaiwaMarks = { join: null, captions: [], online: [] };
  document.addEventListener("submit", () => { window.kaiwaMarks.join = performance.now(); },
                            true);
  new MutationObserver(() => {
    const list = document.getElementById("captions");
    const banner = document.getElementById("reconnecting");
    if (!list || !banner || list.dataset.marked) return;
    list.dataset.marked = "1";
    // A re-render of the same rows (the history backfill) is not a new caption.
    let seen = "";
    new MutationObserver(() => {
      const now = [...list.children].map((li) => li.dataset.segmentId + li.textContent).join();
      if (now !== seen) window.kaiwaMarks.captions.push(performance.now());
      seen = now;
    }).observe(list, { childList: true, subtree: true, characterData: true });
    new MutationObserver(() => {
      if (banner.hidden) window.kaiwaMarks.online.push(performance.now());
    }).observe(banner, { attributes: true, attributeFilter: ["hidden"] });
  }).observe(document, { childList: true, subtree: true });
})();
"""


async def _join(page: Page, url: str) -> None:
    await page.goto(url)
    await page.get_by_label("Your name").fill("Bench")
    await page.get_by_label("Talk with the AI").check()
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#connection")).to_have_text("connected", timeout=30_000)


async def _greeting_after_join(page: Page, timeout_s: float = 60) -> float:
    """Seconds from the Join press to the first audible frame of the agent's voice."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        firsts = [f["first"] for f in (await heard(page)).values() if f["first"] is not None]
        if firsts:
            joined: float = await page.evaluate("window.kaiwaMarks.join")
            return (min(firsts) - joined) / 1000
        await asyncio.sleep(0.05)
    raise TimeoutError("the greeting was never heard")


async def _reconnect(page: Page) -> tuple[float, float]:
    """Seconds from the network's return to the page out of "reconnecting", and to the
    next caption."""
    await page.context.set_offline(True)
    await expect(page.locator("#reconnecting")).to_be_visible(timeout=10_000)
    await asyncio.sleep(DROP_S)
    await page.context.set_offline(False)
    restored: float = await page.evaluate("performance.now()")
    await expect(page.locator("#reconnecting")).to_be_hidden(timeout=60_000)
    await expect(page.locator("#connection")).to_have_text("connected")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        marks: dict[str, Any] = await page.evaluate("window.kaiwaMarks")
        online = [t for t in marks["online"] if t > restored]
        captions = [t for t in marks["captions"] if t > restored]
        if online and captions:
            return (online[0] - restored) / 1000, (captions[0] - restored) / 1000
        await asyncio.sleep(0.1)
    raise TimeoutError("no caption after the network came back")


async def run(joins: int, drops: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-web-") as state_dir:
        cfg = ephemeral_config(Path(state_dir))
        stack = Stack(cfg)
        voice = engines.voice("en")
        mic = write_wav(
            Path(state_dir) / "mic.wav",
            voice.synthesize("Tell me something."),
            voice.sample_rate,
            lead_s=6,
            tail_s=4,
        )
        try:
            await asyncio.to_thread(stack.start)
            async with async_playwright() as playwright, chromium(playwright, mic) as browser:
                greetings: list[float] = []
                for _ in range(joins + 1):  # the first warms the models
                    context = await browser.new_context(permissions=["microphone"])
                    await context.add_init_script(AUDIO_PROBE)
                    await context.add_init_script(MARKS)
                    page = await context.new_page()
                    await _join(page, cfg.api_url)
                    greetings.append(await _greeting_after_join(page))
                    if len(greetings) <= joins:
                        await page.get_by_role("button", name="Leave").click()
                        await context.close()
                back_online, captions_again = [], []
                for _ in range(drops):  # in the last call, still open
                    online_s, caption_s = await _reconnect(page)
                    back_online.append(online_s)
                    captions_again.append(caption_s)
                await context.close()
        finally:
            await asyncio.to_thread(stack.stop)
    warm = greetings[1:]
    return {
        "join_to_greeting_s_median": median(warm),
        "join_to_greeting_s": [round(g, 3) for g in warm],
        "join_to_greeting_first_s": round(greetings[0], 3),
        "network_drop_s": DROP_S,
        "reconnected_s_median": median(back_online),
        "reconnected_s": [round(t, 3) for t in back_online],
        "captions_again_s_median": median(captions_again),
        "captions_again_s": [round(t, 3) for t in captions_again],
        "machine_cpus": os.cpu_count(),
    }
