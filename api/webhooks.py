"""Checks on genuine webhook events: values no LiveKit server or recorder of ours sends."""

from __future__ import annotations

import datetime

from livekit.protocol.webhook import WebhookEvent

from core.webhooks import WebhookMalformed

from .storage import storage_key

# The earliest time a report of ours can name (LiveKit did not exist before), and how far
# ahead of this machine's clock another machine's may run.
EARLIEST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
CLOCK_SKEW = datetime.timedelta(days=1)


def check_event(event: WebhookEvent, *, bucket: str, key_prefix: str) -> None:
    """Refuse a genuine event whose values no LiveKit server or recorder of ours would send:
    times outside [2020, now + a day], negative sizes or durations, and object keys outside
    the recordings' prefix. A bug in our own recorder could send them as well as a leaked
    secret. Raises WebhookMalformed."""
    now = datetime.datetime.now(datetime.UTC)
    lowest, highest = EARLIEST.timestamp(), (now + CLOCK_SKEW).timestamp()
    seconds = {
        "created_at": event.created_at,
        "room.creation_time": event.room.creation_time,
        "participant.joined_at": event.participant.joined_at,
    }
    egress = event.egress_info
    files = [*egress.file_results, egress.file] if event.event.startswith("egress_") else []
    nanos = {
        "egress_info.started_at": egress.started_at,
        "egress_info.ended_at": egress.ended_at,
        "egress_info.updated_at": egress.updated_at,
        **{f"file.started_at[{i}]": f.started_at for i, f in enumerate(files)},
        **{f"file.ended_at[{i}]": f.ended_at for i, f in enumerate(files)},
    }
    for name, value in [*seconds.items(), *((n, v / 1e9) for n, v in nanos.items())]:
        if value and not lowest <= value <= highest:
            raise WebhookMalformed(f"{name} is out of range")
    for i, file in enumerate(files):
        if file.size < 0 or file.duration < 0:
            raise WebhookMalformed(f"file [{i}] has a negative size or duration")
        for location in (file.filename, file.location):
            if location and not _under_prefix(location, bucket, key_prefix):
                raise WebhookMalformed(f"file [{i}] is outside the recordings' prefix")
    if egress.manifest_location and not _under_prefix(egress.manifest_location, bucket, key_prefix):
        raise WebhookMalformed("the manifest is outside the recordings' prefix")


def _under_prefix(location: str, bucket: str, key_prefix: str) -> bool:
    key = storage_key(location, bucket)
    parts = key.split("/")
    return key.startswith(key_prefix) and ".." not in parts and "" not in parts
