"""The admin console in a real Chromium: sign in, find a recorded call by a word said in it,
play its recording and follow the transcript.

The call is made the way callers make calls (two synthetic callers in one LiveKit room, each
speaking a tone), recorded by the real recorder into the S3 server, and its transcript posted
through the API's internal route with a service token, as an agent will post it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    Dialog,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from core.service_auth import mint_service_token
from kaiwa.audio_files import write_tone
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack

from .support.pages import screenshot_folder
from .support.recordings import wait_for_recordings

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
WIDE: ViewportSize = {"width": 1360, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
TONE_S = 4.0
# Within this of the intended position counts as "seeked there": Ogg seeking in Chromium
# lands on a page boundary, and the clock runs on while we read it.
SEEK_TOLERANCE_S = 0.5


@dataclass
class SeededCall:
    conversation: dict[str, Any]
    segments: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.conversation["id"])

    def room_offset(self) -> float:
        """Seconds from the conversation's start to its room recording's start."""
        room = next(r for r in self.conversation["recordings"] if r["kind"] == "room")
        return _seconds_between(self.conversation["started_at"], room["started_at"])


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


@asynccontextmanager
async def _admin_client(cfg: StackConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client signed in as the admin, by its bearer token."""
    async with httpx.AsyncClient(base_url=cfg.api_url, timeout=10) as client:
        signed_in = await client.post(
            "/api/admin/session", json={"password": cfg.secrets.admin_password}
        )
        signed_in.raise_for_status()
        client.headers["Authorization"] = f"Bearer {signed_in.json()['token']}"
        yield client


async def _wait_for_recorded_conversation(
    client: httpx.AsyncClient, room_name: str, recordings: int, timeout_s: float = 90.0
) -> dict[str, Any]:
    """The conversation of `room_name` once it has ended (LiveKit closes a room 20 s after
    its last caller leaves) and the API knows its recordings as complete."""
    deadline = time.monotonic() + timeout_s
    detail: dict[str, Any] = {}
    while time.monotonic() < deadline:
        listed = await client.get("/api/conversations", params={"room": room_name})
        listed.raise_for_status()
        items = listed.json()["items"]
        if items:
            response = await client.get(f"/api/conversations/{items[0]['id']}")
            response.raise_for_status()
            detail = response.json()
            done = [r for r in detail["recordings"] if r["status"] == "complete"]
            if len(done) >= recordings and detail["ended_at"]:
                return detail
        await asyncio.sleep(0.5)
    raise AssertionError(f"the API never showed {recordings} complete recordings: {detail}")


@pytest.fixture(scope="module")
async def seeded_call(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> SeededCall:
    """A recorded two-person call with four transcript lines, two of them translated."""
    cfg = stack.cfg
    folder = tmp_path_factory.mktemp("admin-console")
    low = write_tone(folder / "alice.wav", freq=330, seconds=TONE_S)
    high = write_tone(folder / "bob.wav", freq=990, seconds=TONE_S)
    alice = SyntheticCaller(cfg.api_url, name="Alice", mode="interpret", language="en")
    await alice.join()
    bob = SyntheticCaller(
        cfg.api_url, name="Bob", mode="interpret", language="ja", room_name=alice.room_name
    )
    await bob.join()
    room_sid = await alice.room.sid
    assert alice.room_name is not None and alice.identity and bob.identity
    try:
        await asyncio.sleep(3)
        alice_said = time.time()
        await alice.speak_wav(low)
        await asyncio.sleep(1.5)
        bob_said = time.time()
        await bob.speak_wav(high)
        await asyncio.sleep(2)
    finally:
        await bob.leave()
        await alice.leave()
    # The room mix and each speaker's own.
    await wait_for_recordings(cfg, room_sid, count=3)

    async with _admin_client(cfg) as client:
        conversation = await _wait_for_recorded_conversation(client, alice.room_name, 3)
        began = datetime.fromisoformat(conversation["started_at"]).timestamp()
        a, b = alice_said - began, bob_said - began
        half = TONE_S / 2
        # Each speaker's tone carries two lines; a run-specific id, as an agent makes them.
        run = uuid.uuid4().hex[:8]
        segments = [
            {
                "id": f"{run}-a1",
                "participant_identity": alice.identity,
                "language": "en",
                "text": "Shall we meet at the lighthouse tomorrow?",
                "start_s": round(a, 3),
                "end_s": round(a + half, 3),
                "translations": {"ja": "明日、灯台で会いましょうか？"},
                "timings": {
                    "final_transcript": 0.62,
                    "translation.ja": 0.91,
                    "first_frame.ja": 0.35,
                },
            },
            {
                "id": f"{run}-a2",
                "participant_identity": alice.identity,
                "language": "en",
                "text": "The ferry leaves at nine.",
                "start_s": round(a + half, 3),
                "end_s": round(a + TONE_S, 3),
                "translations": {"ja": "フェリーは九時に出ます。"},
                "timings": {"final_transcript": 0.7, "translation.ja": 1.4, "first_frame.ja": 0.3},
            },
            {
                "id": f"{run}-b1",
                "participant_identity": bob.identity,
                "language": "ja",
                "text": "はい、灯台の前で待っています。",
                "start_s": round(b, 3),
                "end_s": round(b + half, 3),
                "translations": {"en": "Yes, I will wait in front of the lighthouse."},
                "timings": {
                    "final_transcript": 0.8,
                    "translation.en": 0.55,
                    "first_frame.en": 0.42,
                },
            },
            {
                "id": f"{run}-b2",
                "participant_identity": bob.identity,
                "language": "ja",
                # Typed into the chat, with markup that must show as text.
                "kind": "text",
                "text": "傘を<b>忘れないで</b>ね。",
                "start_s": round(b + half, 3),
                "end_s": round(b + TONE_S, 3),
                "translations": {"en": "Don't forget your umbrella."},
                # A sentence finished while its speaker went on: no end of speech to time.
                "timings": {"translation.en": 0.6, "first_frame.en": 0.38},
            },
        ]
        token = mint_service_token(cfg.secrets.livekit_api_key, cfg.secrets.livekit_api_secret)
        posted = await client.post(
            "/api/internal/segments",
            json={"room_sid": room_sid, "room_name": alice.room_name, "segments": segments},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["stored"] == len(segments)
        reported = await client.post(
            "/api/internal/reports",
            json={
                "room_sid": room_sid,
                "summary": "Alice and Bob agree to meet at the lighthouse.",
                "usage": {"stt_audio_s": 2 * TONE_S, "tts_characters": 57},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reported.status_code == 200, reported.text
        detail = await client.get(f"/api/conversations/{conversation['id']}")
        detail.raise_for_status()
    return SeededCall(detail.json(), segments)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            # No sound card here: Chromium plays into a fake output, whose clock still runs.
            args=["--use-fake-device-for-media-stream"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    return screenshot_folder("admin")


async def _shot(page: Page, folder: Path, name: str, *, full_page: bool = False) -> None:
    await page.screenshot(path=folder / f"{name}.png", full_page=full_page)


async def _sign_in(page: Page, password: str) -> None:
    await page.get_by_label("Admin password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_is_required_and_a_wrong_password_is_refused(
    stack: Stack, browser: Browser, screenshots: Path
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    try:
        await page.goto(f"{stack.cfg.api_url}/admin.html")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        status = await page.evaluate("fetch('/api/conversations').then((r) => r.status)")
        assert status == 401
        await _shot(page, screenshots, "01-sign-in")

        await _sign_in(page, "not-the-password")
        await expect(page.locator("#login-error")).to_have_text("Wrong password.")
        await expect(page.locator("#list")).to_be_hidden()
        await _shot(page, screenshots, "02-wrong-password")

        await _sign_in(page, stack.cfg.secrets.admin_password)
        await expect(page.get_by_role("heading", name="Conversations")).to_be_visible()
        status = await page.evaluate("fetch('/api/conversations').then((r) => r.status)")
        assert status == 200

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        status = await page.evaluate("fetch('/api/conversations').then((r) => r.status)")
        assert status == 401
    finally:
        await context.close()


async def test_search_open_play_and_follow_the_transcript(
    stack: Stack, seeded_call: SeededCall, browser: Browser, screenshots: Path
) -> None:
    call = seeded_call
    a1, a2, b1, b2 = call.segments
    offset = call.room_offset()
    assert 0 <= offset < a1["start_s"], "the first line must lie inside the room recording"

    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    try:
        await page.goto(f"{stack.cfg.api_url}/admin.html")
        await _sign_in(page, stack.cfg.secrets.admin_password)

        # A word said in English finds the call, the word marked in the snippet.
        await page.get_by_label("Search transcripts").fill("lighthouse")
        await page.get_by_role("button", name="Search", exact=True).click()
        matches = page.locator(f'tr.matches[data-id="{call.id}"]')
        await expect(matches.locator("mark").first).to_have_text("lighthouse")
        row = page.locator(f'tr.conversation[data-id="{call.id}"]')
        await expect(row).to_contain_text(call.conversation["room_name"])
        await expect(row.locator("td[data-label=Recording]")).to_have_text("Complete")
        # Both callers (and the agent, once dispatched); never the hidden recorder.
        people = row.locator("td[data-label=Participants]")
        for identity in (a1["participant_identity"], b1["participant_identity"]):
            await expect(people).to_contain_text(identity)
        await expect(people).not_to_contain_text("recorder-")
        await _shot(page, screenshots, "03-search-results")

        # And in Japanese, as a substring of a longer run of kanji and kana.
        await page.get_by_label("Search transcripts").fill("灯台")
        await page.get_by_role("button", name="Search", exact=True).click()
        await expect(matches.locator("mark").first).to_have_text("灯台")
        await _shot(page, screenshots, "04-search-japanese")

        await row.get_by_role("link").click()
        await expect(page).to_have_url(f"{stack.cfg.api_url}/admin.html#/conversations/{call.id}")
        lines = page.locator("#transcript li.segment")
        await expect(lines).to_have_count(4)
        await expect(lines.nth(0)).to_contain_text("灯台で会いましょうか")  # translation beside
        await expect(page.locator("#summary")).to_have_text(
            "Alice and Bob agree to meet at the lighthouse."
        )
        await expect(page.locator("#usage")).to_contain_text("tts characters")
        await expect(page.locator("#usage")).to_contain_text("57")

        # Each line's latency ledger as a bar, and the call's medians and p95 per stage.
        await expect(lines.nth(0).locator(".ledger")).to_have_attribute(
            "aria-label",
            "Latency into JA: speech → transcript 0.62 s, translation 0.91 s, "
            "first audio out 0.35 s; 1.88 s in all",
        )
        await expect(lines.nth(0).locator(".ledger-part")).to_have_count(3)
        await expect(lines.nth(3).locator(".ledger-part")).to_have_count(2)
        # The typed line is marked so, and its markup is shown, not rendered.
        await expect(lines.nth(3).locator(".segment-typed")).to_have_text("typed")
        await expect(lines.locator(".segment-typed")).to_have_count(1)
        await expect(lines.nth(3).locator(".segment-text")).to_have_text(b2["text"])
        await expect(lines.nth(3).locator(".segment-text b")).to_have_count(0)
        latency = page.locator("#latency tbody tr")
        await expect(latency).to_have_count(5)
        rows = [" | ".join(await latency.nth(i).locator("td").all_inner_texts()) for i in range(5)]
        assert rows == [
            "speech → transcript | 3 | 0.70 s | 0.80 s",
            "translation (EN) | 2 | 0.55 s | 0.60 s",
            "translation (JA) | 2 | 0.91 s | 1.40 s",
            "first audio out (EN) | 2 | 0.38 s | 0.42 s",
            "first audio out (JA) | 2 | 0.30 s | 0.35 s",
        ], rows
        await _shot(page, screenshots, "05-conversation-ledger", full_page=True)
        exported = await context.request.get(
            stack.cfg.api_url + (await page.locator("#export-vtt").get_attribute("href") or "")
        )
        assert exported.ok and "WEBVTT" in (vtt := await exported.text()), exported.status
        assert "lighthouse" in vtt
        room = next(r for r in call.conversation["recordings"] if r["kind"] == "room")
        player = page.locator("#player")
        await expect(player).to_have_attribute("src", f"/api/recordings/{room['id']}/audio")

        # Press play on the player's own controls: its play button sits at its left end.
        box = await player.bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + 20, box["y"] + box["height"] / 2)
        await page.wait_for_function(
            "([at]) => document.getElementById('player').currentTime > at",
            arg=[a1["start_s"] - offset + 0.4],
            timeout=30_000,
        )
        await _shot(page, screenshots, "05-conversation-playing")
        state = await page.evaluate(
            """async () => {
                const player = document.getElementById('player');
                player.pause();
                // One frame for the marker to follow the last position.
                await new Promise((done) => requestAnimationFrame(() => done()));
                const current = document.querySelectorAll('#transcript li.current');
                return {
                    time: player.currentTime,
                    current: [...current].map((li) => li.dataset.id),
                    aria: [...document.querySelectorAll('[aria-current="true"]')]
                        .map((li) => li.dataset.id),
                };
            }"""
        )
        at = state["time"] + offset
        under_playhead = [s["id"] for s in call.segments if s["start_s"] <= at < s["end_s"]]
        assert under_playhead, f"{at:.2f} s is in no line: the wait overshot"
        assert state["current"] == under_playhead, state
        assert state["aria"] == under_playhead, state

        # Selecting a line plays from its start.
        await page.evaluate(
            """() => {
                const player = document.getElementById('player');
                window.seekedTo = new Promise((done) =>
                    player.addEventListener('seeked', () => done(player.currentTime),
                                            { once: true }));
            }"""
        )
        await lines.nth(3).locator(".segment-text").click()
        seeked_to = await page.evaluate("window.seekedTo")
        assert abs(seeked_to - (b2["start_s"] - offset)) < SEEK_TOLERANCE_S, seeked_to
        await expect(lines.nth(3)).to_have_attribute("aria-current", "true")
        await expect(lines.nth(3)).to_have_class(re.compile(r"\bcurrent\b"))
        await page.wait_for_function("() => !document.getElementById('player').paused")

        # Alice's own recording instead: the same moment of the call, in her file.
        alice_rec = next(
            r
            for r in call.conversation["recordings"]
            if r["participant_identity"] == a1["participant_identity"]
        )
        alice_offset = _seconds_between(call.conversation["started_at"], alice_rec["started_at"])
        await page.evaluate("document.getElementById('player').pause()")
        call_time = await page.evaluate("document.getElementById('player').currentTime") + offset
        await page.locator("#source").select_option(label="Alice only")
        await expect(player).to_have_attribute("src", f"/api/recordings/{alice_rec['id']}/audio")
        await page.wait_for_function("() => document.getElementById('player').readyState >= 1")
        in_file = await page.evaluate("document.getElementById('player').currentTime")
        assert abs(in_file - max(0.0, call_time - alice_offset)) < SEEK_TOLERANCE_S

        # A reload (or a link shared by hash) comes back to the same conversation.
        await page.reload()
        await expect(lines).to_have_count(4)
        await expect(page.locator("#detail-title")).to_contain_text(call.conversation["room_name"])
    except Exception:
        await _shot(page, screenshots, "failure", full_page=True)
        raise
    finally:
        await context.close()

    # The same conversation on a phone: player, then transcript, stacked.
    phone = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = await phone.new_page()
    try:
        await page.goto(f"{stack.cfg.api_url}/admin.html#/conversations/{call.id}")
        await _sign_in(page, stack.cfg.secrets.admin_password)
        await expect(page.locator("#transcript li.segment")).to_have_count(4)
        await page.locator("#transcript li.segment").nth(2).locator(".segment-text").click()
        await expect(page.locator("#transcript li.segment").nth(2)).to_have_attribute(
            "aria-current", "true"
        )
        player_box = await page.locator("#player").bounding_box()
        transcript_box = await page.locator("#transcript").bounding_box()
        assert player_box and transcript_box
        assert transcript_box["y"] > player_box["y"] + player_box["height"]  # stacked
        assert transcript_box["x"] + transcript_box["width"] <= PHONE["width"]  # no sideways
        await page.evaluate("document.getElementById('player').pause()")
        await _shot(page, screenshots, "06-conversation-phone")
        await page.goto(f"{stack.cfg.api_url}/admin.html#/?q=lighthouse")
        row = page.locator(f'tr.conversation[data-id="{call.id}"]')
        await expect(row).to_be_visible()
        await _shot(page, screenshots, "07-search-phone")

        # Deleting asks first, then the call is gone from the history.
        await row.get_by_role("link").click()
        page.once("dialog", _accept)
        await page.get_by_role("button", name="Delete conversation…").click()
        await expect(page.locator("#list-status")).to_contain_text("Deleted the conversation")
        await page.goto(f"{stack.cfg.api_url}/admin.html#/?q=lighthouse")
        await expect(page.locator("#list-status")).not_to_have_text("Loading…")
        await expect(row).to_have_count(0)
    finally:
        await phone.close()


async def _accept(dialog: Dialog) -> None:
    assert dialog.type == "confirm"
    await dialog.accept()
