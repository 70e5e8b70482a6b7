"""Typed messages in a call, on the real stack with a real Chromium: a typed question is a
turn the agent answers (in voice, or in text alone), stored as typed, taken once however
often it is sent, and kept through a reload or a lost connection; bad messages get a clear
refusal; others see who is in the call and who is typing.

What the agent answers is the local LLM's: only that it answers is asserted here.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from agents.dialog.turn_captions import LEAVE_NOTICE_S
from agents.translate import unavailable_notice
from api.deps import TYPING_UPDATES_PER_MINUTE
from core.protocol import MAX_MESSAGE_CHARS, MESSAGE_WINDOW_S, MESSAGES_PER_WINDOW
from kaiwa.bench.common import metric_values
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack
from kaiwa.webcall import chromium

from .support.calls import (
    History,
    bigram_share,
    interpreted_pair,
    transcribe,
    voiced,
    wait_for,
    wait_offered,
    wait_quiet,
)
from .support.pages import (
    WIDE,
    audio_tracks,
    caption_rows,
    join_call,
    loudest,
    open_page,
    poll,
    screenshot_folder,
    settled,
    shot,
    silent_microphone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.models]

# A reply is computed on two shared cores by local models: allow for it.
REPLY_TIMEOUT_S = 90
QUESTION = "What should I pack for a trip to Kyoto in winter?"
SECOND_QUESTION = "And which temple should I see first?"
OUTBOX = "kaiwa.outbox"


@pytest.fixture(scope="module")
def screenshots() -> Path:
    return screenshot_folder("chat")


@dataclass
class DialogPage:
    page: Page
    room: str
    history: History
    stack: Stack


@pytest.fixture(scope="module")
async def dialog(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DialogPage]:
    """A dialog call from a page whose microphone hears nothing: the caller only types."""
    folder = tmp_path_factory.mktemp("chat")
    async with (
        async_playwright() as playwright,
        chromium(playwright, silent_microphone(folder)) as browser,
    ):
        page = await open_page(browser, stack.cfg.api_url, WIDE)
        room = await join_call(page, "Aiko", "dialog", "en")
        # The greeting first: what follows is an answer to what was typed.
        greeting = page.locator("#captions li:not(.own)[data-final=true]")
        await expect(greeting.first).to_contain_text(re.compile(r"\w{3}"), timeout=30_000)
        yield DialogPage(page, room, History(stack, room), stack)
        await page.context.close()


async def _type_and_send(page: Page, text: str) -> str:
    """Types `text` and presses Enter; the id of the row it shows as."""
    rows = page.locator("#captions li.own.typed")
    before = set(await rows.evaluate_all(_IDS))
    await page.get_by_label("Message").fill(text)
    await page.get_by_label("Message").press("Enter")
    await expect(page.get_by_label("Message")).to_have_value("")
    await expect(rows).to_have_count(len(before) + 1)
    (new,) = set(await rows.evaluate_all(_IDS)) - before
    return str(new)


_IDS = "(items) => items.map((li) => li.dataset.segmentId)"


async def _taken(page: Page, row_id: str) -> None:
    """The agent took the message: its caption under the same id replaced the page's note."""
    row = page.locator(f'#captions li[data-segment-id="{row_id}"]')
    try:
        await expect(row.locator(".delivery")).to_have_count(0, timeout=30_000)
    except AssertionError:
        note = await row.locator(".delivery").all_inner_texts()
        raise AssertionError(f"{row_id} never taken; the page says {note}") from None


async def _reply_after(page: Page, row_id: str) -> dict[str, object]:
    """The agent's first final row after the row `row_id`."""
    found: dict[str, object] = {}

    async def answered() -> bool:
        rows = await caption_rows(page)
        ids = [r["id"] for r in rows]
        if row_id not in ids:
            return False
        after = rows[ids.index(row_id) + 1 :]
        replies = [r for r in after if r["speaker"].startswith("agent-") and r["final"]]
        if replies and replies[0]["text"].strip():
            found.update(replies[0])
            return True
        return False

    await poll(answered, REPLY_TIMEOUT_S, f"a reply after {row_id}")
    return found


async def _stored(history: History, segment_id: str) -> dict[str, Any]:
    stored = await history.wait_for_segments({segment_id}, timeout_s=REPLY_TIMEOUT_S)
    (segment,) = [s for s in stored if s["id"] == segment_id]
    return segment


async def _agent_peak(page: Page) -> float:
    (track,) = [t for t in await audio_tracks(page) if t["from"].startswith("agent-")]
    peak: float = await page.evaluate(f"window.kaiwaHeard[{json.dumps(track['name'])}].peak")
    return peak


async def _reset_agent_peak(page: Page) -> None:
    await page.evaluate("Object.values(window.kaiwaHeard).forEach((h) => { h.peak = 0; })")


async def _chat_counter(stack: Stack, result: str) -> float:
    """The agent worker's count of typed messages with `result` (taken, duplicate, ...)."""
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{stack.cfg.ports.agent_metrics}/metrics")).text
    return metric_values(body, "kaiwa_chat_messages_total", "result").get(result, 0.0)


# ---- a dialog ----------------------------------------------------------------------------


async def test_a_typed_question_is_answered_in_voice_and_stored_as_typed(
    dialog: DialogPage, screenshots: Path
) -> None:
    page = dialog.page
    await _reset_agent_peak(page)
    row_id = await _type_and_send(page, QUESTION)
    assert re.fullmatch(r"chat-[0-9a-f]{32}", row_id), row_id
    await _taken(page, row_id)
    reply = await _reply_after(page, row_id)

    # Heard as well as read: the reply's voice played on the page.
    assert await _agent_peak(page) > 0.02
    # Stored as typed, under the page's id, then the agent's answer.
    typed = await _stored(dialog.history, row_id)
    assert (typed["kind"], typed["role"], typed["text"]) == ("text", "user", QUESTION)
    answer = await _stored(dialog.history, str(reply["id"]))
    assert (answer["kind"], answer["role"]) == ("speech", "agent")
    await shot(page, screenshots, "01-dialog-typed-question")


async def test_a_message_typed_while_the_agent_speaks_interrupts_it(
    dialog: DialogPage,
) -> None:
    """As talking over the agent does: its reply stops, is stored as interrupted with what
    was said of it, and the typed message is answered next."""
    page = dialog.page
    await _reset_agent_peak(page)
    story_id = await _type_and_send(page, "Please tell me a long story about a brave little cat.")
    await _taken(page, story_id)

    told: list[str] = []

    async def telling() -> bool:
        rows = await caption_rows(page)
        ids = [r["id"] for r in rows]
        told[:] = [
            r["id"] for r in rows[ids.index(story_id) + 1 :] if r["speaker"].startswith("agent-")
        ]
        if not told:
            # Until the story's caption shows, what the page hears is the tail of the last
            # reply: a peak from it once let the test type before the story was heard.
            await _reset_agent_peak(page)
            return False
        return await _agent_peak(page) > 0.02

    await poll(telling, REPLY_TIMEOUT_S, "the story being told")
    story_reply = told[0]
    interrupting = await _type_and_send(page, "Sorry, stop. What time is it in Tokyo?")
    await _taken(page, interrupting)
    await _reply_after(page, interrupting)
    stored = await _stored(dialog.history, story_reply)
    assert stored["interrupted"], stored
    turns = [t["id"] for t in (await dialog.history.conversation())["transcript"]]
    assert turns.index(story_id) < turns.index(story_reply) < turns.index(interrupting), turns


STREAM_PROBE = """
window.replyTexts = [];
new MutationObserver(() => {
  for (const li of document.querySelectorAll('#captions li:not(.own)')) {
    const text = li.querySelector('.text').textContent;
    window.replyTexts.push({id: li.dataset.segmentId, final: li.dataset.final, text});
  }
}).observe(document.getElementById('captions'), {childList: true, subtree: true});
"""


async def test_with_voice_replies_off_the_reply_streams_as_text_and_is_not_spoken(
    dialog: DialogPage, screenshots: Path
) -> None:
    page = dialog.page
    async with page.expect_response("**/api/call/voice-replies") as switched:
        await page.get_by_label("Voice replies").uncheck()
    assert (await switched.value).status == 204
    await asyncio.sleep(1)  # the agent reads the attribute as LiveKit relays it
    await _reset_agent_peak(page)
    await page.evaluate(STREAM_PROBE)

    row_id = await _type_and_send(page, SECOND_QUESTION)
    reply = await _reply_after(page, row_id)

    # The text came as it was written: the row showed growing, unfinished text first.
    seen = await page.evaluate("window.replyTexts")
    partial = {s["text"] for s in seen if s["id"] == reply["id"] and s["final"] == "false"}
    assert len(partial) >= 2, seen
    # Nothing was synthesized: the agent's track stayed silent.
    assert await _agent_peak(page) < 0.005
    # Stored as written, not spoken.
    answer = await _stored(dialog.history, str(reply["id"]))
    assert (answer["kind"], answer["role"]) == ("text", "agent")

    async with page.expect_response("**/api/call/voice-replies"):
        await page.get_by_label("Voice replies").check()


async def test_a_reply_being_written_when_the_page_reloads_goes_on_there(
    dialog: DialogPage,
) -> None:
    page = dialog.page
    async with page.expect_response("**/api/call/voice-replies"):
        await page.get_by_label("Voice replies").uncheck()
    await asyncio.sleep(1)
    row_id = await _type_and_send(page, "Please tell me a long story about a fox and a crow.")

    # The reply has begun to stream in: reload now.
    reply_id = ""

    async def writing() -> bool:
        nonlocal reply_id
        rows = await caption_rows(page)
        ids = [r["id"] for r in rows]
        after = rows[ids.index(row_id) + 1 :] if row_id in ids else []
        started = [r for r in after if r["speaker"].startswith("agent-") and r["text"].strip()]
        reply_id = started[0]["id"] if started else ""
        return bool(started)

    await poll(writing, REPLY_TIMEOUT_S, "the reply starting")
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)

    # It goes on, and ends, on the new page; the rows are the history's, id for id.
    reply = page.locator(f'#captions li[data-segment-id="{reply_id}"]')
    await expect(reply).to_have_attribute("data-final", "true", timeout=REPLY_TIMEOUT_S * 1000)
    await settled(page, dialog.history)
    stored = await _stored(dialog.history, reply_id)
    assert not stored["interrupted"]
    # The same words: the page shows the reply's line breaks as spaces.
    shown = await reply.locator(".text").inner_text()
    assert stored["text"].split() == shown.split()

    async with page.expect_response("**/api/call/voice-replies"):
        await page.get_by_label("Voice replies").check()


async def test_a_message_sent_again_after_a_reload_is_answered_once(dialog: DialogPage) -> None:
    page = dialog.page
    row_id = await _type_and_send(page, "How do you say 'thank you' in Japanese?")
    await _taken(page, row_id)
    reply = await _reply_after(page, row_id)
    await _stored(dialog.history, str(reply["id"]))  # the history is complete before the reload

    # The page reloads believing the send never finished: it sends the message again.
    message = {
        "id": row_id.removeprefix("chat-"),
        "text": "How do you say 'thank you' in Japanese?",
        "speaker": await page.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity"),
        "language": "en",
        "state": "sending",
        "tries": 1,
    }
    await page.evaluate(f"sessionStorage.setItem('{OUTBOX}', {json.dumps(json.dumps([message]))})")
    before = [r["id"] for r in await dialog.history.segments()]
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)

    # Shown once, stored once, answered once: no new turn came of it. (The page finds the
    # message in the history and stops sending it; an agent that gets it again takes it
    # once, below.)
    await asyncio.sleep(10)
    rows = [r["id"] for r in await caption_rows(page) if r["final"]]
    assert rows.count(row_id) == 1
    assert [r["id"] for r in await dialog.history.segments()] == before
    assert await page.evaluate(f"sessionStorage.getItem('{OUTBOX}')") == "[]"


async def test_a_message_sent_twice_is_taken_and_answered_once(stack: Stack) -> None:
    caller = SyntheticCaller(stack.cfg.api_url, name="Ren", mode="dialog")
    await caller.join()
    history = History(stack, str(caller.room_name))
    try:
        await caller.wait_for_agent()
        await history.wait_until(lambda d: d["transcript"], "the greeting stored")
        duplicates = await _chat_counter(stack, "duplicate")
        segment_id = await caller.send_message("What day is it today?", "ren-00000001")
        await asyncio.sleep(2)
        assert await caller.send_message("What day is it today?", "ren-00000001") == segment_id

        async def seen_twice() -> bool:
            return await _chat_counter(stack, "duplicate") > duplicates

        await poll(seen_twice, 30, "the agent seeing the message again")
        await history.wait_until(
            lambda d: d["transcript"][-1]["role"] == "agent" and len(d["transcript"]) >= 3,
            "the answer stored",
            timeout_s=REPLY_TIMEOUT_S,
        )
        await asyncio.sleep(5)  # a second answer would have begun by now
        detail = await history.conversation()
        turns = [(t["role"], t["id"]) for t in detail["transcript"]]
        assert [t for t in turns if t[0] == "user"] == [("user", segment_id)], turns
        assert [t[0] for t in turns] == ["agent", "user", "agent"], turns
    finally:
        await caller.leave()


def _answered(asked: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a conversation holds the turn `asked` and, after it, the agent's answer."""

    def answered(detail: dict[str, Any]) -> bool:
        roles = [(t["id"], t["role"]) for t in detail["transcript"]]
        ids = [i for i, _ in roles]
        return asked in ids and any(r == "agent" for _, r in roles[ids.index(asked) + 1 :])

    return answered


async def test_a_reply_that_ends_while_the_caller_is_away_is_sent_them_on_return(
    stack: Stack,
) -> None:
    """With voice replies off, a reply goes on while the caller's connection is gone (a
    reload). One that ends before they are back is sent them whole on return: a page that
    read the history before the reply was stored would miss it otherwise. So is one that
    ended as they left, before the agent heard they had gone. What ended well before they
    left (the greeting) is not sent again."""
    caller = SyntheticCaller(stack.cfg.api_url, name="Mio", mode="dialog")
    await caller.join()
    history = History(stack, str(caller.room_name))
    try:
        await caller.wait_for_agent()
        greeting = await history.wait_until(lambda d: d["transcript"], "the greeting stored")
        await caller.set_voice_replies(False)
        # The agent sees the attribute change, and the greeting ends well before the leave.
        await asyncio.sleep(LEAVE_NOTICE_S + 0.5)
        asked = await caller.deliver("Name three warm things to pack for Kyoto in winter.")
    finally:
        await caller.leave(ended=False)  # as a reload does

    detail = await history.wait_until(
        _answered(asked), "the reply stored", timeout_s=REPLY_TIMEOUT_S
    )
    reply = detail["transcript"][-1]
    back = SyntheticCaller(
        stack.cfg.api_url,
        name="Mio",
        mode="dialog",
        room_name=caller.room_name,
        identity=caller.identity,
        rejoin=caller.rejoin,
    )
    await back.join()
    try:

        def sent_again() -> list[str]:
            return [
                t.text
                for t in back.texts
                if t.attributes.get("lk.segment_id") == reply["id"]
                and t.attributes.get("lk.transcription_final") == "true"
            ]

        await wait_for(sent_again, 30, "the reply sent on return", back)
        assert [text.split() for text in sent_again()] == [str(reply["text"]).split()]
        greeting_id = greeting["transcript"][0]["id"]
        assert not any(t.attributes.get("lk.segment_id") == greeting_id for t in back.texts)
    finally:
        await back.leave()


async def test_typed_words_stay_out_of_the_logs(stack: Stack) -> None:
    """What callers type is theirs: no service writes it, or its translation, to its log.
    A dialog answers a typed line and an interpreted call translates one; then every log of
    the stack is read."""
    secret = "Please keep the word periwinkle between us."
    asker = SyntheticCaller(stack.cfg.api_url, name="Nao", mode="dialog")
    await asker.join()
    history = History(stack, str(asker.room_name))
    try:
        await asker.wait_for_agent()
        asked = await asker.deliver(secret)
        await history.wait_until(
            _answered(asked),
            "the answer stored",
            timeout_s=REPLY_TIMEOUT_S,
        )
    finally:
        await asker.leave()
    # Typed once the agent knows both callers (their translated voices are up): a line typed
    # as a listener joins can beat the news of them to the agent, and is not translated for
    # them.
    async with interpreted_pair(stack.cfg.api_url) as (emma, kenji):
        said = await emma.deliver(TYPED_EN)

        def translated() -> list[str]:
            return [
                t.text
                for t in kenji.texts
                if t.attributes.get("kaiwa.source_segment_id") == said and JAPANESE.search(t.text)
            ]

        await wait_for(translated, REPLY_TIMEOUT_S, "the line in Japanese", kenji)
        translation = translated()[-1].strip()
        # A failed translation is captioned as one (the agent's log says why): nothing here
        # to look for in the logs.
        assert translation != unavailable_notice("ja"), "the translation failed"
    await asyncio.sleep(1)  # what the services were writing is written
    for log in sorted(stack.cfg.logs_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        for words in ("periwinkle", "Osaka", translation):
            assert words not in text, f"{log.name} holds {words!r}"


async def test_a_message_typed_offline_is_sent_once_when_the_connection_is_back(
    dialog: DialogPage,
) -> None:
    page = dialog.page
    await page.context.set_offline(True)
    try:
        await expect(page.locator("#connection")).not_to_have_text("connected", timeout=30_000)
        row_id = await _type_and_send(page, "Is it cold there in January?")
        row = page.locator(f'#captions li[data-segment-id="{row_id}"]')
        await expect(row.locator(".delivery")).to_contain_text(re.compile("waiting|sending"))
    finally:
        await page.context.set_offline(False)
    await expect(page.locator("#connection")).to_have_text("connected", timeout=60_000)
    await _taken(page, row_id)
    stored = await _stored(dialog.history, row_id)
    assert stored["kind"] == "text"
    await _reply_after(page, row_id)


async def test_bad_messages_get_a_clear_answer_and_the_call_goes_on(
    dialog: DialogPage, screenshots: Path
) -> None:
    page = dialog.page
    box = page.get_by_label("Message")

    # Too long: the page says so and will not send it.
    await box.fill("x" * (MAX_MESSAGE_CHARS + 1))
    await expect(page.locator("#message-error")).to_contain_text(str(MAX_MESSAGE_CHARS))
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()
    await box.fill("")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # Markup is text: shown as typed, never made into elements.
    html = '<img src=x onerror="window.pwned=1"><b>bold?</b>'
    row_id = await _type_and_send(page, html)
    row = page.locator(f'#captions li[data-segment-id="{row_id}"]')
    await expect(row.locator(".text")).to_have_text(html)
    assert await row.locator("img, b").count() == 0
    assert await page.evaluate("window.pwned") is None
    # The page saves its outbox when the agent takes a message; wait for that save, or it
    # would overwrite the outbox written below.
    await _taken(page, row_id)

    # Past the agent's own checks (an app that does not check): refused, with the reason.
    identity = await page.evaluate("JSON.parse(sessionStorage.getItem('kaiwa.call')).identity")
    too_long, bell = "toolong" + "0" * 25, "bell" + "0" * 28
    queued = {"speaker": identity, "language": "en", "state": "queued", "tries": 0}
    injected = [
        {"id": too_long, "text": "y" * (MAX_MESSAGE_CHARS + 500), **queued},
        {"id": bell, "text": "ring\u0007", **queued},
    ]
    await page.evaluate(f"sessionStorage.setItem('{OUTBOX}', {json.dumps(json.dumps(injected))})")
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
    notes = {
        too_long: "longer than",
        bell: "control characters",
    }
    for message_id, why in notes.items():
        row = page.locator(f'#captions li[data-segment-id="chat-{message_id}"]')
        await expect(row.locator(".delivery.refused")).to_contain_text(why, timeout=30_000)

    # Too many at once: the first ten are taken, the rest refused with a retry.
    await asyncio.sleep(MESSAGE_WINDOW_S)  # what was taken before is out of the window
    for n in range(MESSAGES_PER_WINDOW + 2):
        await box.fill(f"Message number {n}")
        await box.press("Enter")
    refused = page.locator("#captions li .delivery.refused")
    await expect(refused.filter(has_text="wait a moment")).to_have_count(2, timeout=30_000)
    await expect(refused.first.get_by_role("button", name="Retry")).to_be_visible()
    await shot(page, screenshots, "02-dialog-refusals")

    # The agent is still there, and answers the next question.
    await asyncio.sleep(MESSAGE_WINDOW_S)  # past the rate window
    row_id = await _type_and_send(page, "Sorry about that. What is the weather like?")
    await _taken(page, row_id)
    await _reply_after(page, row_id)


# ---- an interpreted call -----------------------------------------------------------------


@asynccontextmanager
async def _emmas_page(stack: Stack, folder: Path) -> AsyncIterator[tuple[Page, str]]:
    """Emma's page in a new interpreted call, in English; the call's room code."""
    async with (
        async_playwright() as playwright,
        chromium(playwright, silent_microphone(folder)) as browser,
    ):
        page = await open_page(browser, stack.cfg.api_url, WIDE)
        try:
            yield page, await join_call(page, "Emma", "interpret", "en")
        finally:
            await page.context.close()


JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
ENGLISH = re.compile(r"[A-Za-z]{3}")
TYPED_EN = "The train to Osaka leaves at nine tomorrow morning."
TYPED_JA = "駅の前で待っています。"


async def test_a_typed_sentence_is_read_and_heard_in_each_listeners_language(
    stack: Stack, tmp_path: Path, screenshots: Path
) -> None:
    """Emma types in English on her page (her microphone is on, and silent); Kenji, on his
    page in Japanese, reads and hears her in Japanese, and so does Aoi's app: what it hears,
    transcribed, is the Japanese caption. Aoi, with no microphone at all, types too: Emma
    reads and hears her in English, on a voice of Aoi's own."""
    async with _emmas_page(stack, tmp_path) as (page, room):
        browser = page.context.browser
        assert browser is not None
        kenji = await open_page(browser, stack.cfg.api_url)
        await join_call(kenji, "Kenji", "interpret", "ja", room)
        aoi = SyntheticCaller(
            stack.cfg.api_url, name="Aoi", mode="interpret", language="ja", room_name=room
        )
        await aoi.join()
        history = History(stack, room)
        try:
            await expect(page.locator("#people li")).to_have_count(4, timeout=30_000)
            # Emma types once the interpreter hears her microphone: it then publishes her
            # Japanese voice. A line typed before that is spoken on a voice of her own, as a
            # person's with no microphone is (on a slow machine the agent's subscription to
            # her track came after she typed, and her line was never on this voice).
            emma_identity = await page.evaluate(
                "JSON.parse(sessionStorage.getItem('kaiwa.call')).identity"
            )

            def emmas_microphone() -> list[str]:
                emma = [p for p in aoi.remote() if p.identity == emma_identity]
                return [pub.sid for p in emma for pub in p.track_publications.values()]

            await wait_for(emmas_microphone, 30, "Emma's microphone", aoi)
            (mic_sid,) = emmas_microphone()
            emma_ja = f"{mic_sid}-ja"
            await wait_offered(aoi, mic_sid)
            row_id = await _type_and_send(page, TYPED_EN)
            await _taken(page, row_id)

            # Kenji reads it in Japanese, marked as typed, and hears it on Emma's Japanese
            # voice: her microphone track's.
            kenji_row = kenji.locator(f'#captions li[data-segment-id="{row_id}"]')
            await expect(kenji_row.locator(".text")).to_contain_text(
                JAPANESE, timeout=REPLY_TIMEOUT_S * 1000
            )
            await expect(kenji_row).to_have_class(re.compile(r"\btyped\b"))
            caption_ja = await kenji_row.locator(".text").inner_text()

            async def heard_on_kenjis_page() -> bool:
                return (await loudest(kenji)).get(emma_ja, 0.0) > 0.02

            await poll(heard_on_kenjis_page, REPLY_TIMEOUT_S, "Emma's line on Kenji's page")
            # What is heard on that track is the caption spoken: most of its character pairs
            # come back (Whisper mishears some Japanese words, as speech-eval.md records).
            await wait_for(
                lambda: any(h.track_name == emma_ja and voiced(h) for h in aoi.heard),
                REPLY_TIMEOUT_S,
                "Emma's line in Aoi's ears",
                aoi,
            )
            await wait_quiet(aoi, emma_ja)
            heard_ja = await transcribe(aoi, emma_ja, "ja")
            assert bigram_share(heard_ja, caption_ja) >= 0.4, (heard_ja, caption_ja)
            stored = await _stored(history, row_id)
            assert stored["kind"] == "text" and stored["text"] == TYPED_EN
            assert str(stored["translations"]["ja"]).split() == caption_ja.split()

            # Aoi has no microphone: her line is spoken on a voice of her own.
            await aoi.set_typing(True)  # as her app does while she types
            await asyncio.sleep(1.0)
            aoi_id = await aoi.send_message(TYPED_JA)
            await aoi.set_typing(False)
            aoi_row = page.locator(f'#captions li[data-segment-id="{aoi_id}"]')
            await expect(aoi_row.locator(".text")).to_contain_text(
                ENGLISH, timeout=REPLY_TIMEOUT_S * 1000
            )
            await expect(aoi_row).to_have_class(re.compile(r"\btyped\b"))
            voice = f"chat-{aoi.identity}-en"

            async def heard_on_emmas_page() -> bool:
                return (await loudest(page)).get(voice, 0.0) > 0.02

            await poll(heard_on_emmas_page, REPLY_TIMEOUT_S, "Aoi's line on Emma's page")
            # Kenji shares Aoi's language: he reads her original, and no voice is made for him.
            kenji_reads = kenji.locator(f'#captions li[data-segment-id="{aoi_id}"] .text')
            await expect(kenji_reads).to_have_text(TYPED_JA, timeout=REPLY_TIMEOUT_S * 1000)
            assert f"chat-{aoi.identity}-ja" not in _track_names(aoi)
            assert all(t["name"].endswith("-ja") for t in await audio_tracks(kenji))
            stored = await _stored(history, aoi_id)
            assert (stored["kind"], stored["language"]) == ("text", "ja")
            assert ENGLISH.search(str(stored["translations"]["en"]))
            await shot(page, screenshots, "04-interpreted-typed")
            await shot(kenji, screenshots, "05-interpreted-typed-ja")

            # Kenji's page types: Emma's page says so, until he has been idle for 5 s.
            await kenji.get_by_label("Message").fill("ありがとう")
            await expect(page.locator("#typing")).to_have_text("Kenji is typing…", timeout=10_000)
            await expect(page.locator("#typing")).to_have_text("", timeout=15_000)
        finally:
            await aoi.leave()
            await kenji.context.close()


def _track_names(caller: SyntheticCaller) -> set[str]:
    """Every track published in the room, as `caller` sees them."""
    return {
        publication.name
        for participant in caller.remote()
        for publication in participant.track_publications.values()
    }


# ---- presence and typing -----------------------------------------------------------------


async def test_the_page_lists_who_is_in_the_call_and_shows_who_is_typing(
    stack: Stack, tmp_path: Path, screenshots: Path
) -> None:
    async with _emmas_page(stack, tmp_path) as (page, room):
        kenji = SyntheticCaller(
            stack.cfg.api_url, name="Kenji", mode="interpret", language="ja", room_name=room
        )
        await kenji.join()
        try:
            people = page.locator("#people li")
            # Emma, Kenji and the interpreter, each with language and state.
            await expect(people).to_have_count(3, timeout=30_000)
            await expect(people.filter(has_text="Emma (you)")).to_contain_text("English")
            await expect(people.filter(has_text="Kenji")).to_contain_text("日本語")
            await expect(people.filter(has_text="Kaiwa")).to_contain_text(
                re.compile("listening|translating|speaking")
            )

            await kenji.set_typing(True)
            await expect(page.locator("#typing")).to_have_text("Kenji is typing…")
            await expect(people.filter(has_text="Kenji")).to_contain_text("typing…")
            await shot(page, screenshots, "03-presence-typing")
            await kenji.set_typing(False)
            await expect(page.locator("#typing")).to_have_text("")
            await expect(people.filter(has_text="Kenji")).not_to_contain_text("typing")

            # A caller's token may send text streams (its typed messages). What Kenji sends
            # as captions or notices writes nothing on Emma's page: not her line, not a row
            # of its own, not a notice (pages take them from agents only).
            emmas = await _type_and_send(page, "See you at the station.")
            await _taken(page, emmas)
            final = {"lk.transcription_final": "true", "language": "en"}
            forgeries = [
                ("lk.transcription", {"lk.segment_id": emmas, **final}),
                ("lk.transcription", {"lk.segment_id": "forged", "kaiwa.speaker": "agent-x"}),
                ("kaiwa.notice", {"lk.segment_id": emmas}),
            ]
            for topic, attributes in forgeries:
                await kenji.room.local_participant.send_text(
                    "Your call is over", topic=topic, attributes=attributes
                )
            # Then a message Kenji types: its caption comes from the agent, after the
            # forgeries he sent straight to Emma, so once it shows they have arrived too.
            kenjis = await kenji.deliver("駅で会いましょう。")
            kenji_row = page.locator(f'#captions li[data-segment-id="{kenjis}"]')
            await expect(kenji_row).to_have_attribute("data-speaker", str(kenji.identity))
            await expect(page.locator('#captions li[data-segment-id="forged"]')).to_have_count(0)
            emma_row = page.locator(f'#captions li[data-segment-id="{emmas}"]')
            await expect(emma_row.locator(".text")).to_have_text("See you at the station.")
            await expect(emma_row.locator(".delivery")).to_have_count(0)
            await expect(page.locator("#notice")).to_be_hidden()

            await kenji.leave()
            await expect(people).to_have_count(2, timeout=30_000)
        finally:
            await kenji.leave()


async def test_a_page_says_it_is_typing_at_most_every_two_seconds_and_stops_when_idle(
    dialog: DialogPage,
) -> None:
    page = dialog.page
    sent: list[bool] = []

    def record(request: object) -> None:
        url = getattr(request, "url", "")
        if url.endswith("/api/call/typing"):
            sent.append(bool(json.loads(getattr(request, "post_data", None) or "{}")["typing"]))

    page.on("request", record)
    try:
        box = page.get_by_label("Message")
        # Six seconds of steady typing: "typing" once, however many keystrokes.
        for letter in "slowly typing a long sentence":
            await box.press_sequentially(letter)
            await asyncio.sleep(0.2)
        assert sent == [True], sent

        def updates(*expected: bool) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return sent == list(expected)

            return check

        # Five seconds without a keystroke: no longer typing.
        await poll(updates(True, False), 10, "typing cleared when idle")
        await asyncio.sleep(2.5)  # the gap after an update
        # Typing again, then sending: cleared on send (after the 2 s gap at most).
        await box.press_sequentially(" more")
        await box.press("Enter")
        await poll(updates(True, False, True, False), 10, "cleared on send")
    finally:
        page.remove_listener("request", record)


async def test_typing_and_voice_reply_switches_need_the_callers_ticket(stack: Stack) -> None:
    caller = SyntheticCaller(stack.cfg.api_url, name="Alice", mode="dialog")
    await caller.join()
    try:
        async with httpx.AsyncClient(base_url=stack.cfg.api_url) as client:
            for path, body in (("typing", {"typing": True}), ("voice-replies", {"on": False})):
                anonymous = await client.put(f"/api/call/{path}", json=body)
                assert anonymous.status_code == 401
                # The LiveKit token is not the ticket.
                forged = await client.put(
                    f"/api/call/{path}",
                    json=body,
                    headers={"Authorization": f"Bearer {caller.grant['token']}"},
                )
                assert forged.status_code == 401
        await caller.set_typing(True)
        # A script that says it is typing in a loop is held to the limit. The limiter counts
        # in fixed minutes, so a burst that straddles a minute's end is counted in two: 71
        # updates once passed as 35 and 36. Twice the limit and more puts more than the limit
        # in one of them, wherever the minute ends.
        statuses = [
            (
                await caller._as_caller("PUT", "/api/call/typing", json={"typing": n % 2 == 0})
            ).status_code
            for n in range(2 * TYPING_UPDATES_PER_MINUTE + 10)
        ]
        assert statuses.count(429) >= 1 and statuses[0] == 204, statuses
    finally:
        await caller.leave()
