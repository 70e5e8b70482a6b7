"""LiveKit webhooks, signed and verified: the signed token must cover these exact bytes.

The API verifies what LiveKit and the recorder send; the recorder signs its egress reports
the way LiveKit does, so the API cannot tell the two apart.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac

import jwt
from google.protobuf.json_format import Parse, ParseError
from livekit import api as lkapi
from livekit.protocol.webhook import WebhookEvent

from .errors import KaiwaError


class WebhookRejected(KaiwaError):
    """The request is not a genuine, intact webhook from our LiveKit server."""


class WebhookMalformed(KaiwaError):
    """Genuine and intact, but not a webhook event we can read."""


def verify_webhook(
    raw_body: bytes, authorization: str, api_key: str, api_secret: str
) -> WebhookEvent:
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        raise WebhookRejected("missing Authorization")
    try:
        # Checks the signature, the issuer (our API key) and the expiry.
        claims = lkapi.TokenVerifier(api_key, api_secret).verify(token)
    except (jwt.PyJWTError, ValueError) as exc:
        raise WebhookRejected(f"invalid token: {exc.__class__.__name__}") from exc
    try:
        signed_digest = base64.b64decode(claims.sha256 or "", validate=True)
    except binascii.Error as exc:
        raise WebhookRejected("invalid sha256 claim") from exc
    if not signed_digest or not hmac.compare_digest(
        hashlib.sha256(raw_body).digest(), signed_digest
    ):
        raise WebhookRejected("body does not match its signature")
    try:
        event = Parse(raw_body, WebhookEvent(), ignore_unknown_fields=True)
    except (ParseError, UnicodeDecodeError) as exc:
        raise WebhookMalformed("body is not a WebhookEvent") from exc
    if not event.id or not event.event:
        raise WebhookMalformed("event has no id or type")
    return event


def sign_webhook(raw_body: bytes, api_key: str, api_secret: str, *, ttl_s: int = 300) -> str:
    """The Authorization value LiveKit sends: a JWT whose sha256 claim covers the body."""
    digest = base64.b64encode(hashlib.sha256(raw_body).digest()).decode()
    return (
        lkapi.AccessToken(api_key, api_secret)
        .with_sha256(digest)
        .with_ttl(datetime.timedelta(seconds=ttl_s))
        .to_jwt()
    )
