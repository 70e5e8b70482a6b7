"""A phone caller's number: whole in a conversation's detail, masked in every other answer."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from api.settings import Settings
from core.logs import JsonFormatter
from core.webhooks import sign_webhook

from .support import events
from .support.apiclient import admin_headers, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration

NUMBER = "+819012345678"
DIGITS = "9012345678"
IDENTITY = f"sip_{NUMBER}"
MASKED_IDENTITY = "sip_+81 •• ••••5678"
MASKED_NAME = "Phone +81 •• ••••5678"
HASHED = "sip_0a1b2c3d4e5f6a7b"


def send(client: TestClient, settings: Settings, event: WebhookEvent) -> None:
    body = events.as_body(event)
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    response = client.post("/livekit/webhook", content=body, headers={"Authorization": auth})
    assert response.status_code == 200, response.text


def phone_caller(sid: str, identity: str, name: str) -> models.ParticipantInfo:
    """As LiveKit's SIP bridge names a caller: kind SIP, `sip_<number>`, `Phone <number>`."""
    return models.ParticipantInfo(
        sid=sid,
        identity=identity,
        name=name,
        kind=models.ParticipantInfo.Kind.SIP,
        joined_at_ms=int(time.time() * 1000),
        attributes={
            "sip.phoneNumber": NUMBER,
            "sip.trunkPhoneNumber": "+81312345678",
            "sip.callStatus": "active",
        },
    )


def phone_call(client: TestClient, settings: Settings) -> str:
    """A call from a phone, answered by a browser caller; the recorder recorded the phone
    caller's own track. Returns the conversation id."""
    room = events.room(sid="RM_phone", name="dialog-phone")
    send(client, settings, events.event("room_started", room=room))
    for person in (
        phone_caller("PA_phone", IDENTITY, f"Phone {NUMBER}"),
        phone_caller("PA_hidden", HASHED, "Phone"),
        events.participant(sid="PA_browser", identity="caller-1"),
    ):
        send(client, settings, events.event("participant_joined", room=room, participant=person))
    post_segments(
        client,
        settings,
        "RM_phone",
        [
            seg("p-1", "I would like a reservation for two.", 1.0, identity=IDENTITY),
            seg("p-2", "The reservation is confirmed.", 3.0, identity="caller-1"),
        ],
    )
    started = time.time()
    recording = events.egress_info(
        "complete",
        updated_s=started + 60,
        egress_id="EG_phone",
        room_id="RM_phone",
        kind="participant",
        identity=IDENTITY,
        started_s=started,
        ended_s=started + 59,
        filename="recordings/dialog-phone/EG_phone.ogg",
        size=1000,
        duration_s=59,
    )
    send(client, settings, events.egress_event("egress_ended", recording))
    items = get(client, settings, "/api/conversations").json()["items"]
    assert len(items) == 1
    conversation_id: str = items[0]["id"]
    return conversation_id


@pytest.fixture
def call(client: TestClient, settings: Settings) -> str:
    return phone_call(client, settings)


def get(client: TestClient, settings: Settings, path: str, **params: Any) -> httpx.Response:
    response = client.get(path, params=params, headers=admin_headers(settings))
    assert response.status_code == 200, response.text
    return response


def masked_only(response: httpx.Response) -> str:
    body = response.text
    assert DIGITS not in body
    assert MASKED_IDENTITY in body
    return body


def test_the_list_and_search_show_the_number_masked(
    client: TestClient, settings: Settings, call: str
) -> None:
    for params in ({}, {"q": "reservation"}, {"participant": IDENTITY}):
        response = get(client, settings, "/api/conversations", **params)
        masked_only(response)
        (item,) = response.json()["items"]
        assert item["participants"] == [MASKED_IDENTITY, HASHED, "caller-1"]
        if "q" in params:
            assert [m["segment_id"] for m in item["matches"]] == ["p-1", "p-2"]


def test_transcripts_and_exports_name_the_speaker_masked(
    client: TestClient, settings: Settings, call: str
) -> None:
    transcript = masked_only(get(client, settings, f"/api/conversations/{call}/transcript"))
    speakers = [s["participant_identity"] for s in json.loads(transcript)["segments"]]
    assert speakers == [MASKED_IDENTITY, "caller-1"]

    url = f"/api/conversations/{call}/export"
    vtt = masked_only(get(client, settings, url, format="vtt"))
    assert f"<v {MASKED_IDENTITY}>I would like a reservation for two." in vtt.splitlines()
    assert "<v caller-1>The reservation is confirmed." in vtt.splitlines()
    txt = masked_only(get(client, settings, url, format="txt"))
    assert txt.startswith(f"[00:00:01.000] {MASKED_IDENTITY} (en): I would like")
    as_json = masked_only(get(client, settings, url, format="json"))
    assert json.loads(as_json)["segments"][0]["participant_identity"] == MASKED_IDENTITY


def test_only_the_detail_shows_the_number_whole(
    client: TestClient, settings: Settings, call: str
) -> None:
    detail = get(client, settings, f"/api/conversations/{call}").json()
    people = {p["identity"]: p for p in detail["participants"]}
    phone = people[IDENTITY]
    assert (phone["kind"], phone["name"]) == ("sip", f"Phone {NUMBER}")
    assert (phone["masked_identity"], phone["masked_name"]) == (MASKED_IDENTITY, MASKED_NAME)
    hidden, browser = people[HASHED], people["caller-1"]
    assert (hidden["masked_identity"], hidden["masked_name"]) == (HASHED, "Phone")
    assert (browser["masked_identity"], browser["masked_name"]) == ("caller-1", "caller-1")
    # Speaker labels and recordings name the caller as the participants' masked_identity.
    assert [s["participant_identity"] for s in detail["transcript"]] == [
        MASKED_IDENTITY,
        "caller-1",
    ]
    assert [r["participant_identity"] for r in detail["recordings"]] == [MASKED_IDENTITY]
    # The participants are the one place the number is.
    del detail["participants"]
    assert DIGITS not in json.dumps(detail, ensure_ascii=False)


def test_logs_never_carry_the_number(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        conversation_id = phone_call(client, settings)
        # Sent again, and a report older than the recording's last: the paths that log.
        room = events.room(sid="RM_phone", name="dialog-phone")
        joined = phone_caller("PA_phone", IDENTITY, f"Phone {NUMBER}")
        send(client, settings, events.event("participant_joined", room=room, participant=joined))
        stale = events.egress_info(
            "active",
            updated_s=time.time(),
            egress_id="EG_phone",
            room_id="RM_phone",
            kind="participant",
            identity=IDENTITY,
        )
        send(client, settings, events.egress_event("egress_updated", stale))
        get(client, settings, f"/api/conversations/{conversation_id}/export", format="vtt")
    formatter = JsonFormatter()
    # The API's and the libraries' lines, not the test client's own (httpx logs its URLs).
    lines = [formatter.format(r) for r in caplog.records if not r.name.startswith("httpx")]
    assert any("stale egress report ignored" in line for line in lines)
    assert not [line for line in lines if DIGITS in line]
