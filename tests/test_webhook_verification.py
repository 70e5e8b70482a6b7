"""Webhook signatures are checked against the raw body, the key and the expiry."""

from __future__ import annotations

import time

import jwt
import pytest

from core.webhooks import WebhookMalformed, WebhookRejected, sign_webhook, verify_webhook

from .support import events

pytestmark = pytest.mark.unit

KEY, SECRET = "key", "s" * 40


def test_genuine_webhook_is_accepted() -> None:
    body = events.as_body(events.event("room_started", room=events.room()))
    parsed = verify_webhook(body, sign_webhook(body, KEY, SECRET), KEY, SECRET)
    assert parsed.event == "room_started"
    assert parsed.room.sid == "RM_test"


def test_tampered_body_is_rejected() -> None:
    body = events.as_body(events.event("room_started", room=events.room()))
    auth = sign_webhook(body, KEY, SECRET)
    tampered = body.replace(b"RM_test", b"RM_evil")
    with pytest.raises(WebhookRejected):
        verify_webhook(tampered, auth, KEY, SECRET)


def test_whitespace_change_is_rejected() -> None:
    # The signature covers bytes, not the parsed meaning: re-serialising would hide tampering.
    body = events.as_body(events.event("room_started", room=events.room()))
    auth = sign_webhook(body, KEY, SECRET)
    with pytest.raises(WebhookRejected):
        verify_webhook(body + b" ", auth, KEY, SECRET)


def test_expired_token_is_rejected() -> None:
    body = events.as_body(events.event("room_started", room=events.room()))
    expired = jwt.encode(
        {
            "iss": KEY,
            "exp": int(time.time()) - 3600,
            "nbf": int(time.time()) - 7200,
            "sha256": jwt.utils.base64url_encode(b"x").decode(),
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(WebhookRejected):
        verify_webhook(body, expired, KEY, SECRET)
    old = sign_webhook(body, KEY, SECRET, ttl_s=-3600)
    with pytest.raises(WebhookRejected):
        verify_webhook(body, old, KEY, SECRET)


@pytest.mark.parametrize("key,secret", [("other", SECRET), (KEY, "t" * 40)])
def test_token_from_another_key_is_rejected(key: str, secret: str) -> None:
    body = events.as_body(events.event("room_started", room=events.room()))
    with pytest.raises(WebhookRejected):
        verify_webhook(body, sign_webhook(body, key, secret), KEY, SECRET)


def test_missing_authorization_is_rejected() -> None:
    with pytest.raises(WebhookRejected):
        verify_webhook(b"{}", "", KEY, SECRET)


def test_signed_garbage_is_malformed_not_accepted() -> None:
    body = b"\xff\xfenot json"
    with pytest.raises(WebhookMalformed):
        verify_webhook(body, sign_webhook(body, KEY, SECRET), KEY, SECRET)
