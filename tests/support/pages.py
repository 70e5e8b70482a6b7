"""Driving the caller page in Chromium: open it, join a call, read its captions and what it
played, and wait for it to agree with the history."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, ViewportSize, expect

from core.paths import REPO_ROOT
from kaiwa.webcall import AUDIO_PROBE, heard, write_wav

from .calls import History

PHONE: ViewportSize = {"width": 390, "height": 844}
WIDE: ViewportSize = {"width": 1100, "height": 860}


def screenshot_folder(name: str) -> Path:
    """`artifacts/screenshots/<name>`, emptied for this run, and said where."""
    folder = REPO_ROOT / "artifacts" / "screenshots" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"{name} screenshots: {folder}")  # noqa: T201 - where to look
    return folder


def silent_microphone(folder: Path) -> Path:
    """A WAV of silence for the fake microphone: a caller who only types."""
    return write_wav(folder / "silence.wav", np.zeros(1, np.int16), 48000, lead_s=1, tail_s=30)


async def shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=folder / f"{name}.png", full_page=True)


# Whatever the page's Content-Security-Policy blocks, kept for the test to read.
CSP_PROBE = """
window.__blocked = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__blocked.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


async def blocked_by_csp(page: Page) -> list[str]:
    blocked: list[str] = await page.evaluate("window.__blocked")
    return blocked


async def open_page(browser: Browser, url: str, viewport: ViewportSize = PHONE) -> Page:
    """A new page at `url`, with the audio and Content-Security-Policy probes in it."""
    context = await browser.new_context(viewport=viewport, permissions=["microphone"])
    await context.add_init_script(AUDIO_PROBE)
    await context.add_init_script(CSP_PROBE)
    page = await context.new_page()
    # What the page logs, in the test's output when it fails.
    page.on("console", lambda message: print(f"page: {message.type}: {message.text}"))  # noqa: T201
    await page.goto(url)
    return page


async def join_call(page: Page, name: str, mode: str, language: str, room: str = "") -> str:
    await page.get_by_label("Your name").fill(name)
    choice = "Interpreted call" if mode == "interpret" else "Talk with the AI"
    await page.get_by_label(choice).check()
    await page.get_by_label("Your language").select_option(language)
    if room:
        await page.get_by_label("Room code").fill(room)
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
    return await page.locator("#room-name").inner_text()


async def caption_rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#captions li",
        """(items) => items.map((li) => ({
            id: li.dataset.segmentId,
            speaker: li.dataset.speaker,
            final: li.dataset.final === "true",
            text: li.querySelector(".text").textContent,
        }))""",
    )
    return rows


async def loudest(page: Page) -> dict[str, float]:
    return {name: float(found["peak"] or 0) for name, found in (await heard(page)).items()}


async def audio_tracks(page: Page) -> list[dict[str, str]]:
    tracks: list[dict[str, str]] = await page.eval_on_selector_all(
        "#audio audio",
        "(els) => els.map((e) => ({name: e.dataset.trackName, from: e.dataset.participant}))",
    )
    return tracks


async def poll(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"never happened: {what}")


async def settled(page: Page, history: History) -> list[dict[str, Any]]:
    """The page's final caption rows once they match the history's segments one for one:
    fails when a line is missing from the page (a gap) or shown under two ids."""
    page_rows: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []

    async def agree() -> bool:
        nonlocal page_rows, stored
        page_rows = [r for r in await caption_rows(page) if r["final"]]
        stored = await history.segments()
        return bool(stored) and [r["id"] for r in page_rows] == [s["id"] for s in stored]

    try:
        await poll(agree, 45, "page rows matching the history")
    except AssertionError:
        raise AssertionError(
            f"page: {[r['id'] for r in page_rows]}\nhistory: {[s['id'] for s in stored]}"
        ) from None
    return page_rows
