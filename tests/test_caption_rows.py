"""The caller page's caption rows (web/src/call/captions.js), run in Node as the page's own
module: which caption may write which row."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from core.paths import REPO_ROOT

pytestmark = pytest.mark.unit

CAPTIONS = REPO_ROOT / "web" / "src" / "call" / "captions.js"


def rows_after(streams: list[tuple[str, dict[str, str], str]]) -> dict[str, Any]:
    """The rows a page shows after these caption streams (text, attributes, sender)."""
    node = shutil.which("node")
    assert node, "node is installed with the web app (kaiwa install)"
    script = f"""
import {{ CaptionBook }} from {json.dumps(CAPTIONS.as_uri())};
const book = new CaptionBook(() => {{}});
for (const [text, attributes, sender] of {json.dumps(streams)}) {{
  book.fromStream(text, attributes, sender);
}}
console.log(JSON.stringify(Object.fromEntries(book.rows)));
"""
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    rows: dict[str, Any] = json.loads(done.stdout)
    return rows


def final(segment_id: str, speaker: str, **more: str) -> dict[str, str]:
    return {
        "lk.segment_id": segment_id,
        "lk.transcription_final": "true",
        "kaiwa.speaker": speaker,
        **more,
    }


def test_another_speakers_text_under_a_final_rows_id_is_not_taken() -> None:
    """After a takeover, the new agent does not know whose message ids are whose: a message
    sent under Emma's id is captioned under it, and must not become her row."""
    rows = rows_after(
        [
            ("Hello everyone", final("chat-emma0001", "emma", **{"kaiwa.kind": "text"}), "agent-a"),
            ("I owe you money", final("chat-emma0001", "mallory"), "agent-b"),
        ]
    )
    row = rows["chat-emma0001"]
    assert (row["speaker"], row["text"]) == ("emma", "Hello everyone")


def test_a_speakers_own_rows_still_complete() -> None:
    """An interim then its final; a translation before its original: nothing is refused."""
    rows = rows_after(
        [
            ("Good mor", {"lk.segment_id": "s-1", "kaiwa.speaker": "emma"}, "agent-a"),
            ("Good morning.", final("s-1", "emma"), "agent-a"),
            (
                "Xin chào.",
                {"lk.segment_id": "t-2", "kaiwa.source_segment_id": "s-2", "language": "vi"},
                "agent-a",
            ),
            ("Hello.", final("s-2", "ken"), "agent-a"),
        ]
    )
    assert (rows["s-1"]["speaker"], rows["s-1"]["text"]) == ("emma", "Good morning.")
    assert rows["s-2"]["text"] == "Hello." and rows["s-2"]["translations"] == {"vi": "Xin chào."}
