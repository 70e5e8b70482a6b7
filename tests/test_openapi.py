"""Every history route shows in /docs with its typed request and response."""

from __future__ import annotations

from typing import Any

import pytest

from api.main import create_app
from api.settings import Settings

pytestmark = pytest.mark.unit

TYPED = {
    ("post", "/api/internal/segments"): ("SegmentBatch", "SegmentsStored"),
    ("post", "/api/internal/reports"): ("CallReport", "CallReportStored"),
    ("post", "/api/admin/session"): ("AdminLogin", "AdminSession"),
    ("get", "/api/conversations"): (None, "ConversationPage"),
    ("get", "/api/conversations/{conversation_id}"): (None, "ConversationDetail"),
    ("get", "/api/conversations/{conversation_id}/transcript"): (None, "Transcript"),
    ("get", "/api/conversations/{conversation_id}/export"): (None, "Transcript"),
    ("get", "/api/recordings/{recording_id}/play"): (None, "PlaybackUrl"),
}


def _ref(content: dict[str, Any]) -> str | None:
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


@pytest.mark.parametrize("method,path", list(TYPED))
def test_route_is_typed(method: str, path: str) -> None:
    operation = create_app(Settings()).openapi()["paths"][path][method]
    request, response = TYPED[(method, path)]
    if request is not None:
        assert _ref(operation["requestBody"]["content"]) == request
    assert _ref(operation["responses"]["200"]["content"]) == response


def test_untyped_bodies_are_described() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    audio = paths["/api/recordings/{recording_id}/audio"]["get"]["responses"]
    assert audio["206"]["content"]["audio/ogg"]["schema"]["format"] == "binary"
    assert {"401", "404", "416"} <= set(audio)
    export = paths["/api/conversations/{conversation_id}/export"]["get"]["responses"]["200"]
    assert {"text/vtt", "text/plain"} <= set(export["content"])
    assert "204" in paths["/api/conversations/{conversation_id}"]["delete"]["responses"]
    assert "204" in paths["/api/admin/session"]["delete"]["responses"]
