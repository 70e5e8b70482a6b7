"""An agent refuses a bad segment itself, alone, before it is buffered or posted."""

from __future__ import annotations

import pytest

from agents.history_client import SegmentStore
from api.tokens import TokenRequest

pytestmark = pytest.mark.unit


def segment(segment_id: str, text: str) -> dict[str, object]:
    return {
        "id": segment_id,
        "participant_identity": "caller-1",
        "language": "en",
        "text": text,
        "start_s": 1.0,
        "end_s": 2.0,
    }


async def test_an_invalid_segment_is_refused_at_its_source_and_costs_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SegmentStore("http://127.0.0.1:9", "key", "secret", room_sid="RM_x", room_name="x")
    store.add(segment("ok-1", "Hello."))
    store.add(segment("bad", "x" * 4001))
    store.add({**segment("bad-time", "Hi."), "end_s": 0.5})
    store.add(segment("ok-2", "Bye."))
    assert store.pending == 2 and store.refused == 2
    reasons = [r.__dict__["reason"] for r in caplog.records if "at its source" in r.getMessage()]
    assert reasons[0].startswith("text:") and "xxxx" not in reasons[0]
    await store.aclose(timeout_s=0)


@pytest.mark.parametrize("tag", ["ja", "pt-BR", "zh-Hant", "ja-Jpan-JP", "vi-Latn-VN"])
async def test_a_line_for_any_language_a_caller_may_hold_is_kept(tag: str) -> None:
    """A listener's language is any tag the token API accepts; the line translated for them is
    keyed by it in the translations and in the ledger, and must not cost the line."""
    TokenRequest(name="Listener", mode="interpret", language=tag)  # accepted at the door
    store = SegmentStore("http://127.0.0.1:9", "key", "secret", room_sid="RM_x", room_name="x")
    store.add(
        {
            **segment("line-1", "Good morning."),
            "translations": {tag: "おはようございます。"},
            "timings": {
                "final_transcript": 0.4,
                f"translation.{tag}": 0.8,
                f"first_frame.{tag}": 1.2,
            },
        }
    )
    assert store.pending == 1 and store.refused == 0
    await store.aclose(timeout_s=0)
