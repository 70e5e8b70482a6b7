"""LiveKit Egress's data model for our recordings, and its webhooks, delivered for sure.

Each recording is an `EgressInfo` (a room mix is a room-composite egress, each audio
track a track egress) with one `FileInfo`, a JSON manifest next to the file, and the
`egress_started` / `egress_updated` / `egress_ended` webhooks signed exactly as LiveKit signs
its own. The API therefore handles a real LiveKit Egress the same way.

Webhooks go through an outbox on disk: written before they are sent, deleted once the API
acknowledged them, resent in order after an outage or a restart. The API stores each event
id once, so a resend is harmless.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from pathlib import Path

from google.protobuf.json_format import MessageToJson, Parse
from livekit.protocol import egress as lkegress
from livekit.protocol.webhook import WebhookEvent

EgressStatus = lkegress.EgressStatus.ValueType
STARTING = lkegress.EgressStatus.EGRESS_STARTING
ACTIVE = lkegress.EgressStatus.EGRESS_ACTIVE
ENDING = lkegress.EgressStatus.EGRESS_ENDING
COMPLETE = lkegress.EgressStatus.EGRESS_COMPLETE
FAILED = lkegress.EgressStatus.EGRESS_FAILED
# As Egress reports a recording that never got its start: no file was made.
ABORTED = lkegress.EgressStatus.EGRESS_ABORTED

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """LiveKit-style ids ("EG_" + 12 base62 characters), made here, never from input."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def now_ns() -> int:
    return time.time_ns()


class EgressRecord:
    """One recording's `EgressInfo`, persisted in its spool folder with its outbox."""

    def __init__(self, directory: Path, info: lkegress.EgressInfo) -> None:
        self.directory = directory
        self.info = info
        self.outbox = directory / "outbox"

    @classmethod
    def create(cls, spool_root: Path, info: lkegress.EgressInfo) -> EgressRecord:
        directory = spool_root / info.egress_id
        (directory / "outbox").mkdir(parents=True, exist_ok=True)
        record = cls(directory, info)
        record.save()
        return record

    @classmethod
    def load(cls, directory: Path) -> EgressRecord:
        info = Parse((directory / "egress.json").read_text(), lkegress.EgressInfo())
        return cls(directory, info)

    @property
    def egress_id(self) -> str:
        return str(self.info.egress_id)

    def save(self) -> None:
        tmp = self.directory / "egress.json.tmp"
        tmp.write_text(MessageToJson(self.info))
        os.replace(tmp, self.directory / "egress.json")

    def publish(self, event: str) -> None:
        """Set updated_at, persist, and queue the webhook for this state."""
        self.info.updated_at = now_ns()
        self.save()
        webhook = WebhookEvent(
            event=event,
            id=new_id("EV_"),
            created_at=int(time.time()),
            egress_info=self.info,
        )
        # Named by time so the outbox sends in order; written whole, then renamed into place.
        name = f"{time.time_ns():020d}-{webhook.id}.json"
        tmp = self.outbox / (name + ".tmp")
        tmp.write_text(MessageToJson(webhook))
        os.replace(tmp, self.outbox / name)

    def pending(self) -> list[Path]:
        return sorted(p for p in self.outbox.glob("*.json"))

    @property
    def ended(self) -> bool:
        return self.info.status in (COMPLETE, FAILED)

    def manifest(self) -> bytes:
        """The manifest stored next to the file: the EgressInfo as JSON, like Egress writes."""
        return json.dumps(json.loads(MessageToJson(self.info)), indent=2).encode()
