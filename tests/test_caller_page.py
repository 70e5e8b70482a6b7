"""The caller page in a real Chromium against the real stack: join, talk, hear, read the
captions, and keep them across a reload and a network drop.

Each browser's fake microphone plays a WAV of speech in a loop (kaiwa/webcall.py).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    BrowserContext,
    Page,
    async_playwright,
    expect,
)

from core.protocol import (
    CAPTION_TOPIC,
    FINAL,
    KIND,
    LANGUAGE_ATTRIBUTE,
    NOTICE_TOPIC,
    SEGMENT_ID,
    SPEAKER,
)
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack
from kaiwa.webcall import chromium, write_wav

from .support.calls import SKY_QUESTION, History, speech, wait_for
from .support.pages import (
    PHONE,
    WIDE,
    audio_tracks,
    blocked_by_csp,
    caption_rows,
    join_call,
    loudest,
    open_page,
    poll,
    screenshot_folder,
    settled,
    shot,
)

pytestmark = pytest.mark.e2e

JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]{3}")
# A reply is computed on two shared cores by local models: allow for it.
REPLY_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def screenshots() -> Path:
    return screenshot_folder("caller")


def _microphone(folder: Path, language: str, text: str, *, lead_s: float) -> Path:
    samples, rate = speech(language, text)
    return write_wav(folder / f"{language}.wav", samples, rate, lead_s=lead_s, tail_s=40)


# ---- dialog ------------------------------------------------------------------------------


# The caller's question as the agent heard it: any of its words (one may be misheard).
ASKED = re.compile(r"\b(colou?r|sky|sunny)\b", re.IGNORECASE)


async def test_dialog_page_hears_the_agent_and_keeps_every_turn_across_a_reload(
    stack: Stack, tmp_path: Path, screenshots: Path
) -> None:
    # Long enough a lead for the agent's greeting to finish before the question.
    mic = _microphone(tmp_path, "en", SKY_QUESTION, lead_s=9)
    async with async_playwright() as playwright, chromium(playwright, mic) as browser:
        page = await open_page(browser, stack.cfg.api_url)
        await expect(page.get_by_label("Scenario")).to_contain_text("café")
        await shot(page, screenshots, "01-join")
        await join_call(page, "Aiko", "dialog", "en")
        state = page.locator("#agent-state")
        await expect(state).to_have_attribute(
            "data-state", re.compile("listening|speaking|thinking"), timeout=30_000
        )

        agent = page.locator("#captions li:not(.own)[data-final=true]")
        own = page.locator("#captions li.own[data-final=true]")
        # The greeting, then the caller's question, then a reply to it.
        await expect(agent.first).to_contain_text(re.compile(r"\w{3}"), timeout=30_000)
        await expect(own.first).to_contain_text(ASKED, timeout=REPLY_TIMEOUT_MS)

        async def replied() -> bool:
            rows = [r for r in await caption_rows(page) if r["final"]]
            asked = [i for i, r in enumerate(rows) if ASKED.search(r["text"])]
            return bool(asked) and any(r["speaker"].startswith("agent-") for r in rows[asked[0] :])

        await poll(replied, REPLY_TIMEOUT_MS / 1000, "a reply after the question")
        await shot(page, screenshots, "02-dialog-captions")

        # The reply was heard: the agent's track, and it carried sound.
        (track,) = await audio_tracks(page)
        assert track["from"].startswith("agent-")
        assert (await loudest(page))[track["name"]] > 0.02
        assert await blocked_by_csp(page) == []

        # Reload mid-call: every turn stays, once; the question, asked again, is answered.
        history = History(stack, await page.locator("#room-name").inner_text())
        before = await settled(page, history)
        await page.reload()
        await expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
        await poll(
            lambda: _more_turns(page, len(before) + 2), REPLY_TIMEOUT_MS / 1000, "a second reply"
        )
        after = await settled(page, history)
        assert [r["id"] for r in after][: len(before)] == [r["id"] for r in before]

        await page.get_by_role("button", name="Leave").click()
        await expect(page.get_by_role("heading", name="Call ended")).to_be_visible()
        await expect(page.locator("#summary-transcript")).to_contain_text(ASKED)
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Download the transcript").click()
        saved = await (await download_info.value).path()
        downloaded = await asyncio.to_thread(Path(saved).read_text)
        assert ASKED.search(downloaded), downloaded
        await shot(page, screenshots, "06-summary")


async def _more_turns(page: Page, count: int) -> bool:
    rows = [r for r in await caption_rows(page) if r["final"]]
    return len(rows) >= count and rows[-1]["speaker"].startswith("agent-")


# ---- interpreted call --------------------------------------------------------------------


@dataclass
class InterpretedCall:
    english: Page
    japanese: Page
    room: str
    history: History
    api_url: str


@pytest.fixture(scope="module")
async def interpreted(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, screenshots: Path
) -> AsyncIterator[InterpretedCall]:
    """Two pages in one interpreted room: an English speaker and a Japanese speaker."""
    folder = tmp_path_factory.mktemp("caller-page")
    # The English speaker waits for the Japanese one to be there, so it is translated.
    en = _microphone(folder, "en", "The hotel is near the station.", lead_s=10)
    ja = _microphone(folder, "ja", "明日の会議は十時に始まります。", lead_s=4)
    async with (
        async_playwright() as playwright,
        chromium(playwright, en) as en_browser,
        chromium(playwright, ja) as ja_browser,
    ):
        english = await open_page(en_browser, stack.cfg.api_url, WIDE)
        room = await join_call(english, "Emma", "interpret", "en")
        japanese = await open_page(ja_browser, stack.cfg.api_url)
        await join_call(japanese, "Kenji", "interpret", "ja", room)
        yield InterpretedCall(english, japanese, room, History(stack, room), stack.cfg.api_url)
        for page in (english, japanese):
            await page.context.close()


async def test_each_page_reads_and_hears_the_other_in_its_own_language(
    interpreted: InterpretedCall, screenshots: Path
) -> None:
    en, ja = interpreted.english, interpreted.japanese
    # Each sees the other's words translated. (A line said before the other joined has no
    # translation into their language and shows as said, so look for any translated one.)
    from_japanese = en.locator("#captions li:not(.own)[data-final=true] .text")
    await expect(from_japanese.filter(has_text=LATIN).first).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    from_english = ja.locator("#captions li:not(.own)[data-final=true] .text")
    await expect(from_english.filter(has_text=JAPANESE).first).to_be_visible(
        timeout=REPLY_TIMEOUT_MS
    )
    # With "show original", the source line too.
    await en.get_by_label("Show original").check()
    await expect(en.locator("#captions li:not(.own) .original").first).to_have_text(JAPANESE)
    await shot(en, screenshots, "03-interpreted-en")
    await shot(ja, screenshots, "04-interpreted-ja")

    # Each plays only the interpreter's voice in its own language, and hears it.
    for page, language in ((en, "en"), (ja, "ja")):
        tracks = await audio_tracks(page)
        assert tracks, f"the {language} page plays nothing"
        for track in tracks:
            assert track["from"].startswith("agent-"), track
            assert track["name"].endswith(f"-{language}"), track

    async def translated_voice_heard() -> bool:
        peaks = await loudest(ja)
        return any(peak > 0.02 for name, peak in peaks.items() if name.endswith("-ja"))

    await poll(translated_voice_heard, REPLY_TIMEOUT_MS / 1000, "the ja voice on the ja page")
    # The whole call ran under the page's Content-Security-Policy, with nothing blocked.
    assert await blocked_by_csp(en) == [] and await blocked_by_csp(ja) == []


async def test_reload_keeps_every_line_once(
    interpreted: InterpretedCall, screenshots: Path
) -> None:
    en = interpreted.english
    await expect(en.locator("#captions li.own[data-final=true]").first).to_be_visible(
        timeout=REPLY_TIMEOUT_MS
    )
    before = await settled(en, interpreted.history)
    identity = await en.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity")

    await en.reload()
    await expect(en.locator("#connection")).to_have_text("connected", timeout=20_000)
    assert await en.locator("#room-name").inner_text() == interpreted.room
    after_identity = await en.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity")
    assert after_identity == identity
    # The microphone's file starts again: new lines come after the old ones.
    own_before = sum(1 for r in before if r["speaker"] == identity)

    async def spoke_again() -> bool:
        rows = await caption_rows(en)
        return sum(1 for r in rows if r["final"] and r["speaker"] == identity) > own_before

    await poll(spoke_again, REPLY_TIMEOUT_MS / 1000, "a new line after the reload")
    after = await settled(en, interpreted.history)
    ids_before = [r["id"] for r in before]
    assert [r["id"] for r in after][: len(before)] == ids_before
    assert len(after) > len(before)

    # The reload came back with the call's rejoin ticket. A new browser has none: with the
    # same room code it joins as somebody new, and Emma keeps her place.
    assert await en.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).rejoin")
    browser = en.context.browser
    assert browser is not None
    stranger = await open_page(browser, interpreted.api_url)
    try:
        await join_call(stranger, "Eve", "interpret", "en", interpreted.room)
        eve = await stranger.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity")
        assert eve != identity
        await expect(en.locator("#connection")).to_have_text("connected")
    finally:
        await stranger.context.close()


async def test_network_drop_shows_reconnecting_and_recovers(
    interpreted: InterpretedCall, screenshots: Path
) -> None:
    ja = interpreted.japanese
    context: BrowserContext = ja.context
    await context.set_offline(True)
    await expect(ja.locator("#reconnecting")).to_be_visible(timeout=10_000)
    await shot(ja, screenshots, "05-reconnecting")
    await ja.wait_for_timeout(5_000)
    await context.set_offline(False)
    await expect(ja.locator("#reconnecting")).to_be_hidden(timeout=30_000)
    await expect(ja.locator("#connection")).to_have_text("connected")
    rows = len(await caption_rows(ja))
    # Captions keep coming, and the page holds every stored line once.
    await expect(ja.locator("#captions li[data-final=true]")).not_to_have_count(
        rows, timeout=REPLY_TIMEOUT_MS
    )
    await settled(ja, interpreted.history)


async def test_switching_language_changes_captions_and_audio_without_reload(
    interpreted: InterpretedCall,
) -> None:
    """Kenji switches to English: he now reads Emma's lines as she said them and hears her
    own voice, no longer the Japanese interpretation."""
    ja = interpreted.japanese
    emma = await interpreted.english.evaluate(
        "JSON.parse(sessionStorage.getItem('kaiwa.call')).identity"
    )
    url = ja.url
    await ja.locator("#call-language").select_option("en")
    emma_lines = ja.locator(f'#captions li[data-speaker="{emma}"][data-final=true] .text')
    await expect(emma_lines.first).to_have_text(LATIN, timeout=5_000)
    try:
        await poll(lambda: _plays_only(ja, lambda t: t["from"] == emma), 10, "her voice only")
    except AssertionError:
        raise AssertionError(f"Emma is {emma}; the page plays {await audio_tracks(ja)}") from None
    assert ja.url == url


async def test_livekit_down_for_10_s_then_both_pages_carry_on_with_no_gap(
    interpreted: InterpretedCall, stack: Stack
) -> None:
    """The server stops answering for 10 s (frozen, as a host under stress can be): every
    connection in the call drops at once, the agent's too. Both pages say so, then carry on
    in the same room and show what was said since, each line once."""
    livekit = stack.services["livekit"].proc
    assert livekit is not None
    pages = (interpreted.english, interpreted.japanese)
    finals = "#captions li[data-final=true]"
    before = [await page.locator(finals).count() for page in pages]
    stopped_at = time.monotonic()
    livekit.send_signal(signal.SIGSTOP)
    try:
        for page in pages:
            await expect(page.locator("#reconnecting")).to_be_visible(timeout=10_000)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped_at)))
    finally:
        livekit.send_signal(signal.SIGCONT)
    for page, rows in zip(pages, before, strict=True):
        await expect(page.locator("#connection")).to_have_text("connected", timeout=60_000)
        await expect(page.locator("#reconnecting")).to_be_hidden()
        await expect(page.locator(finals)).not_to_have_count(rows, timeout=REPLY_TIMEOUT_MS)
        assert await page.locator("#room-name").inner_text() == interpreted.room
        await settled(page, interpreted.history)


async def test_a_caller_cannot_caption_for_a_page_nor_mark_its_message_delivered(
    interpreted: InterpretedCall,
) -> None:
    """Mallory is a caller in Emma's call, and her token lets her send text streams on any
    topic. She sends a caption of a line Emma never said, a caption of Emma's typed message
    (whose id every caller sees: it went to the room on `lk.chat`), and a notice. Emma's page
    takes captions and notices from agents only: it shows none of them, and the message,
    which the agent refused and so never captioned, is still not delivered."""
    en, ja = interpreted.english, interpreted.japanese
    emma = await en.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity")
    # A message the agent refuses (a control character) is never captioned, and waits for
    # the caller's retry: only a forged caption could mark it delivered.
    rows = en.locator("#captions li.own.typed")
    before = set(await rows.evaluate_all(_IDS))
    await en.get_by_label("Message").fill("ring\u0007")
    await en.get_by_label("Message").press("Enter")
    await expect(rows).to_have_count(len(before) + 1)
    (message_row,) = set(await rows.evaluate_all(_IDS)) - before
    refused = en.locator(f'#captions li[data-segment-id="{message_row}"] .delivery.refused')
    await expect(refused).to_contain_text("control characters", timeout=30_000)

    forged_row = f"forged-{uuid.uuid4().hex}"
    forged = {
        forged_row: "Emma never said this.",
        message_row: "ring",
    }
    mallory, witness = (
        SyntheticCaller(
            interpreted.api_url,
            name=name,
            mode="interpret",
            room_name=interpreted.room,
            listen="none",
        )
        for name in ("Mallory", "Wendy")
    )
    await mallory.join()
    await witness.join()
    try:
        await expect(en.locator(f'#people li[data-identity="{mallory.identity}"]')).to_have_count(
            1, timeout=15_000
        )
        for segment_id, text in forged.items():
            attributes = {
                SEGMENT_ID: segment_id,
                FINAL: "true",
                LANGUAGE_ATTRIBUTE: "en",
                SPEAKER: emma,
                KIND: "text",
            }
            await mallory.room.local_participant.send_text(
                text, topic=CAPTION_TOPIC, attributes=attributes
            )
        await mallory.room.local_participant.send_text("FORGED NOTICE", topic=NOTICE_TOPIC)

        # LiveKit passed them on: another caller in the room got them all.
        def passed_on() -> bool:
            captioned = {t.attributes.get(SEGMENT_ID) for t in witness.texts}
            return set(forged) <= captioned and bool(witness.notices)

        await wait_for(passed_on, 15, "the forged streams at another caller", witness)
        # The pages got them too, by now (the same server, the same moment): none shows.
        await en.wait_for_timeout(2_000)
        await expect(refused).to_contain_text("control characters")
        outbox = await en.evaluate("sessionStorage.getItem('kaiwa.outbox')")
        assert message_row.removeprefix("chat-") in outbox
        for page in (en, ja):
            await expect(
                page.locator(f'#captions li[data-segment-id="{forged_row}"]')
            ).to_have_count(0)
            await expect(page.locator("#notice")).not_to_contain_text("FORGED")
    finally:
        await mallory.leave()
        await witness.leave()


_IDS = "(items) => items.map((li) => li.dataset.segmentId)"


async def _plays_only(page: Page, wanted: Any) -> bool:
    tracks = await audio_tracks(page)
    return bool(tracks) and all(wanted(t) for t in tracks)


# ---- faults at the door ------------------------------------------------------------------


async def test_clear_messages_for_a_denied_microphone_a_missing_room_and_no_server(
    stack: Stack, tmp_path: Path
) -> None:
    mic = _microphone(tmp_path, "en", "Hello.", lead_s=1)
    async with async_playwright() as playwright, chromium(playwright, mic) as browser:
        context = await browser.new_context(viewport=PHONE)  # no microphone permission
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(stack.cfg.api_url)

        # A malformed room code is refused by the browser's own check, before any request.
        await page.get_by_label("Interpreted call").check()
        code = page.get_by_label("Room code")
        await code.fill("no such room!")
        assert await code.evaluate("(input) => input.validity.patternMismatch")
        assert not await page.locator("#join").evaluate("(form) => form.checkValidity()")
        await code.fill("no-such-room")
        assert not await code.evaluate("(input) => input.validity.patternMismatch")
        # Chromium compiles `pattern` with the v flag: one it cannot compile is logged and
        # never checked.
        assert [e for e in errors if "regular expression" in e or "pattern" in e.lower()] == []

        await _join_expecting_error(page, room="no-such-room")
        await expect(page.locator("#error")).to_contain_text("no call with room code")

        await page.route("**/api/token", lambda route: route.abort("connectionrefused"))
        await _join_expecting_error(page)
        await expect(page.locator("#error")).to_contain_text("cannot be reached")
        await page.unroute("**/api/token")
        await page.get_by_role("button", name="Try again").click()

        await expect(page.locator("#error")).to_contain_text("Microphone access was denied")
        await expect(page.locator("#connection")).to_have_text("connected")
        await context.grant_permissions(["microphone"])
        await page.get_by_role("button", name="Try again").click()
        await expect(page.locator("#error")).to_be_hidden()
        await expect(page.get_by_role("button", name="Mute")).to_be_visible()
        await context.close()


async def _join_expecting_error(page: Page, room: str = "") -> None:
    await page.get_by_label("Your name").fill("Noa")
    if room:
        await page.get_by_label("Interpreted call").check()
        await page.get_by_label("Room code").fill(room)
    else:
        await page.get_by_label("Talk with the AI").check()
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#error")).to_be_visible()
