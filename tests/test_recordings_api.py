"""Recordings played from the real S3 server: presigned URLs, byte ranges, deletion."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.db import make_engine, make_sessionmaker
from api.deps import make_s3_client
from api.models import AuditEntry
from api.settings import Settings
from api.storage import presigned_get
from core.webhooks import sign_webhook
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import s3_client

from .support import events
from .support.apiclient import admin_headers, api_settings, client_for, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration

AUDIO = os.urandom(200_000)  # bytes stand in for Ogg/Opus: the API never decodes them


@dataclass
class Recorded:
    client: TestClient
    settings: Settings
    s3: Any
    conversation_id: str
    recording_id: str
    object_key: str
    manifest_key: str

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(path, headers={**admin_headers(self.settings), **headers})


def send_egress(client: TestClient, settings: Settings, kind: str, info: Any) -> None:
    body = events.as_body(events.egress_event(kind, info))
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    assert client.post("/livekit/webhook", content=body, headers={"Authorization": auth}).is_success


@pytest.fixture
def recorded(
    s3_server: StackConfig, redis_url: str, database_url: str, tmp_path: Path
) -> Iterator[Recorded]:
    """A call whose room recording (and its manifest) the recorder uploaded to S3."""
    settings = api_settings(s3_server, database_url, tmp_path)
    s3 = s3_client(s3_server)
    egress_id = f"EG_{os.urandom(6).hex()}"
    key = f"recordings/dialog-rec/{egress_id}.ogg"
    manifest = f"recordings/dialog-rec/{egress_id}.json"
    s3.put_object(Bucket=s3_server.s3_bucket, Key=key, Body=AUDIO, ContentType="audio/ogg")
    s3.put_object(Bucket=s3_server.s3_bucket, Key=manifest, Body=b"{}")
    now = time.time()
    with client_for(settings) as client:
        post_segments(client, settings, "RM_rec", [seg("rec-1", "Hello", 0.0)])
        info = events.egress_info(
            "complete",
            updated_s=now,
            egress_id=egress_id,
            room_id="RM_rec",
            started_s=now - 60,
            ended_s=now,
            filename=key,
            size=len(AUDIO),
            manifest=f"s3://{s3_server.s3_bucket}/{manifest}",
        )
        send_egress(client, settings, "egress_ended", info)
        detail = client.get("/api/conversations", headers=admin_headers(settings)).json()
        conversation_id = detail["items"][0]["id"]
        full = client.get(
            f"/api/conversations/{conversation_id}", headers=admin_headers(settings)
        ).json()
        recording_id = full["recordings"][0]["id"]
        yield Recorded(client, settings, s3, conversation_id, recording_id, key, manifest)


def exists(recorded: Recorded, key: str) -> bool:
    try:
        recorded.s3.head_object(Bucket=recorded.settings.s3_bucket, Key=key)
    except ClientError:
        return False
    return True


def test_play_url_downloads_the_recording(recorded: Recorded) -> None:
    body = recorded.get(f"/api/recordings/{recorded.recording_id}/play").json()
    assert recorded.settings.recording_url_ttl_s == 300
    assert "X-Amz-Expires=300" in body["url"]
    download = httpx.get(body["url"], timeout=10)
    assert download.status_code == 200
    assert download.content == AUDIO


def test_expired_url_is_refused_by_the_store(recorded: Recorded) -> None:
    client = make_s3_client(recorded.settings, public=True)
    bucket, key = recorded.settings.s3_bucket, recorded.object_key
    short = presigned_get(client, bucket, key, ttl_s=1)
    # Signed at the same moment and differing only in lifetime: if the long one works
    # after the wait, the short one's refusal can only be its expiry.
    long = presigned_get(client, bucket, key, ttl_s=300)
    time.sleep(2.5)
    assert httpx.get(short, timeout=10).status_code == 403
    assert httpx.get(long, timeout=10).status_code == 200


def test_url_lifetime_is_bounded() -> None:
    with pytest.raises(ValueError):
        Settings(recording_url_ttl_s=901)


def test_audio_streams_the_whole_file(recorded: Recorded) -> None:
    response = recorded.get(f"/api/recordings/{recorded.recording_id}/audio")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/ogg"
    assert response.headers["accept-ranges"] == "bytes"
    assert int(response.headers["content-length"]) == len(AUDIO)
    assert response.content == AUDIO


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=150000-", 150_000, len(AUDIO) - 1),
        ("bytes=-500", len(AUDIO) - 500, len(AUDIO) - 1),
        ("bytes=199990-300000", 199_990, len(AUDIO) - 1),  # an end past the file is cut
        ("bytes=0-0", 0, 0),
    ],
)
def test_audio_byte_ranges(recorded: Recorded, header: str, start: int, end: int) -> None:
    response = recorded.get(f"/api/recordings/{recorded.recording_id}/audio", Range=header)
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(AUDIO)}"
    assert int(response.headers["content-length"]) == end - start + 1
    assert response.content == AUDIO[start : end + 1]


@pytest.mark.parametrize(
    "header",
    ["bytes=200000-", "bytes=300000-300100", "bytes=5-2", "bytes=-0", "items=0-1", "bytes=0-1,5-6"],
)
def test_bad_ranges_are_not_satisfiable(recorded: Recorded, header: str) -> None:
    response = recorded.get(f"/api/recordings/{recorded.recording_id}/audio", Range=header)
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(AUDIO)}"


def test_audio_with_the_session_cookie_only(recorded: Recorded) -> None:
    """An <audio> element sends the cookie and a Range header, never an Authorization."""
    signed_in = recorded.client.post(
        "/api/admin/session", json={"password": recorded.settings.admin_password}
    )
    assert signed_in.status_code == 200
    response = recorded.client.get(
        f"/api/recordings/{recorded.recording_id}/audio", headers={"Range": "bytes=10-19"}
    )
    assert response.status_code == 206 and response.content == AUDIO[10:20]


def test_recording_without_a_file_cannot_be_played(recorded: Recorded) -> None:
    info = events.egress_info(
        "active", updated_s=time.time(), egress_id="EG_live", room_id="RM_rec"
    )
    send_egress(recorded.client, recorded.settings, "egress_started", info)
    detail = recorded.get(f"/api/conversations/{recorded.conversation_id}").json()
    (live,) = [r for r in detail["recordings"] if r["status"] == "active"]
    assert recorded.get(f"/api/recordings/{live['id']}/play").status_code == 404
    assert recorded.get(f"/api/recordings/{live['id']}/audio").status_code == 404


def test_missing_object_is_not_found(recorded: Recorded) -> None:
    recorded.s3.delete_object(Bucket=recorded.settings.s3_bucket, Key=recorded.object_key)
    assert recorded.get(f"/api/recordings/{recorded.recording_id}/audio").status_code == 404


@pytest.mark.parametrize(
    "recording_id,statuses",
    [
        ("0" * 32, {404}),
        ("F" * 32, {422}),
        ("..%2F..%2F..%2Fetc%2Fpasswd", {404, 422}),
        ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", {404, 422}),
        ("..", {404, 422}),
        ("rooms%2Fdialog-rec%2FEG_x.ogg", {404, 422}),
        ("%252e%252e%252f", {404, 422}),
    ],
)
def test_recording_ids_never_reach_storage(
    recorded: Recorded, recording_id: str, statuses: set[int]
) -> None:
    for path in ("play", "audio"):
        response = recorded.get(f"/api/recordings/{recording_id}/{path}")
        assert response.status_code in statuses, (path, response.status_code)
        assert response.headers["content-type"].startswith("application/json")


def test_delete_removes_objects_writes_audit_and_hides(recorded: Recorded) -> None:
    assert exists(recorded, recorded.object_key) and exists(recorded, recorded.manifest_key)
    response = recorded.client.delete(
        f"/api/conversations/{recorded.conversation_id}", headers=admin_headers(recorded.settings)
    )
    assert response.status_code == 204
    assert not exists(recorded, recorded.object_key)
    assert not exists(recorded, recorded.manifest_key)

    engine = make_engine(recorded.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            (entry,) = session.scalars(select(AuditEntry))
            assert (entry.actor, entry.action) == ("admin", "conversation.delete")
            assert (entry.target_type, entry.target_id) == (
                "conversation",
                recorded.conversation_id,
            )
            assert entry.details is not None
            assert sorted(entry.details["object_keys"]) == sorted(
                [recorded.object_key, recorded.manifest_key]
            )
            assert entry.at is not None
    finally:
        engine.dispose()

    for path in (
        f"/api/conversations/{recorded.conversation_id}",
        f"/api/conversations/{recorded.conversation_id}/transcript",
        f"/api/recordings/{recorded.recording_id}/play",
        f"/api/recordings/{recorded.recording_id}/audio",
    ):
        assert recorded.get(path).status_code == 404, path
    assert recorded.get("/api/conversations").json()["items"] == []


def test_an_s3_error_during_playback_is_a_502_with_a_message(
    recorded: Recorded, s3_server: StackConfig, database_url: str, tmp_path: Path
) -> None:
    """S3 answering with an error other than "not found" (here: credentials it refuses) is
    a bad gateway with a message, not a 500."""
    broken = api_settings(s3_server, database_url, tmp_path, s3_secret_key="x" * 40)
    with client_for(broken) as client:
        response = client.get(
            f"/api/recordings/{recorded.recording_id}/audio", headers=admin_headers(broken)
        )
    assert response.status_code == 502, response.text
    assert "recording store" in response.json()["detail"]
