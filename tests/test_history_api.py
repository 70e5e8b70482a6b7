"""The history list, search, details, transcripts and exports, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent
from sqlalchemy import text

from api import search
from api.db import make_engine
from api.settings import Settings
from core.webhooks import sign_webhook
from kaiwa.stack.config import StackConfig

from .support import events
from .support.apiclient import admin_headers, api_settings, client_for, post_segments
from .support.apiclient import segment as seg

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class History:
    client: TestClient
    settings: Settings
    ids: dict[str, str]  # room sid -> conversation id

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=admin_headers(self.settings))
        assert response.status_code == 200, response.text
        return response.json()

    def rooms(self, **params: Any) -> list[str]:
        return [item["room_sid"] for item in self.get("/api/conversations", **params)["items"]]


# Where a-1's time went, stage by stage (agents/metrics.py).
LEDGER = {"final_transcript": 0.812, "translation.ja": 0.64, "first_frame.ja": 0.305}


def send(client: TestClient, settings: Settings, event: WebhookEvent) -> None:
    body = events.as_body(event)
    auth = sign_webhook(body, settings.livekit_api_key, settings.livekit_api_secret)
    response = client.post("/livekit/webhook", content=body, headers={"Authorization": auth})
    assert response.status_code == 200, response.text


def start_room(
    client: TestClient,
    settings: Settings,
    sid: str,
    name: str,
    mode: str,
    started: datetime,
    people: list[tuple[str, str, int]],
) -> None:
    room = models.Room(
        sid=sid,
        name=name,
        metadata=json.dumps({"mode": mode}),
        creation_time=int(started.timestamp()),
    )
    send(client, settings, events.event("room_started", room=room))
    for i, (identity, language, kind) in enumerate(people):
        participant = events.participant(
            sid=f"PA_{sid}_{i}", identity=identity, kind=kind, language=language
        )
        send(
            client, settings, events.event("participant_joined", room=room, participant=participant)
        )


@pytest.fixture
def history(services_config: StackConfig, database_url: str, tmp_path: Path) -> Iterator[History]:
    """Three calls: an English dialog with a recording, an interpreted ja/en call, and a
    Vietnamese dialog, started 60, 30 and 10 minutes ago."""
    settings = api_settings(services_config, database_url, tmp_path)
    with client_for(settings) as client:
        start_room(
            client,
            settings,
            "RM_a",
            "dialog-aaa",
            "dialog",
            NOW - timedelta(minutes=60),
            [("caller-1", "en", 0), ("agent-AJ_1", "", 4)],
        )
        post_segments(
            client,
            settings,
            "RM_a",
            [
                # Typed into the call's chat, not said.
                seg("a-2", "The reservation is under Tanaka.", 6.0, identity="caller-1")
                | {"kind": "text"},
                seg(
                    "a-1",
                    "I would like to book a table for tomorrow.",
                    1.25,
                    end_s=4.5,
                    translations={"ja": "明日のテーブルを予約したいです。"},
                )
                | {"timings": LEDGER},
                seg("a-3", "Of course, <Tanaka> & party.", 8.0, identity="agent-AJ_1"),
            ],
        )
        started = (NOW - timedelta(minutes=60)).timestamp()
        room_recording = events.egress_info(
            "complete",
            updated_s=started + 300,
            egress_id="EG_room_a",
            room_id="RM_a",
            started_s=started + 1,
            ended_s=started + 299,
            filename="recordings/dialog-aaa/EG_room_a.ogg",
            size=1000,
            duration_s=298,
        )
        caller_recording = events.egress_info(
            "complete",
            updated_s=started + 300,
            egress_id="EG_caller_a",
            room_id="RM_a",
            kind="participant",
            identity="caller-1",
            started_s=started + 3,
            ended_s=started + 299,
            filename="recordings/dialog-aaa/EG_caller_a.ogg",
            size=500,
        )
        send(client, settings, events.egress_event("egress_ended", room_recording))
        send(client, settings, events.egress_event("egress_ended", caller_recording))

        start_room(
            client,
            settings,
            "RM_b",
            "interpret-bbb",
            "interpret",
            NOW - timedelta(minutes=30),
            [("caller-2", "ja", 0), ("caller-3", "en", 0), ("agent-AJ_2", "", 4)],
        )
        post_segments(
            client,
            settings,
            "RM_b",
            [
                seg(
                    "b-1",
                    "東京駅で会いましょう。",
                    0.5,
                    identity="caller-2",
                    language="ja",
                    translations={"en": "Let's meet at Tokyo Station."},
                ),
                seg("b-2", "明日は雨です。", 3.0, identity="caller-2", language="ja"),
            ],
        )
        start_room(
            client,
            settings,
            "RM_c",
            "dialog-ccc",
            "dialog",
            NOW - timedelta(minutes=10),
            [("caller-4", "vi", 0)],
        )
        post_segments(
            client,
            settings,
            "RM_c",
            [seg("c-1", "Tôi muốn đặt bàn cho ngày mai.", 0.0, identity="caller-4", language="vi")],
        )
        listing = client.get("/api/conversations", headers=admin_headers(settings)).json()
        ids = {item["room_sid"]: item["id"] for item in listing["items"]}
        yield History(client, settings, ids)


def test_list_is_newest_first_with_summaries(history: History) -> None:
    page = history.get("/api/conversations")
    assert [c["room_sid"] for c in page["items"]] == ["RM_c", "RM_b", "RM_a"]
    assert page["next_cursor"] is None
    a = page["items"][2]
    assert a["room_name"] == "dialog-aaa" and a["mode"] == "dialog"
    assert a["participants"] == ["caller-1", "agent-AJ_1"]
    assert a["languages"] == ["en"]
    assert a["segment_count"] == 3
    assert (a["has_recording"], a["recording_status"]) == (True, "complete")
    assert a["matches"] is None
    b = page["items"][1]
    assert b["languages"] == ["en", "ja"]
    assert (b["has_recording"], b["recording_status"]) == (False, None)
    assert datetime.fromisoformat(b["started_at"]) == NOW - timedelta(minutes=30)


@pytest.mark.parametrize(
    "params,rooms",
    [
        ({"room": "dialog-aaa"}, ["RM_a"]),
        ({"room": "nope"}, []),
        ({"participant": "caller-2"}, ["RM_b"]),
        ({"participant": "agent-AJ_1"}, ["RM_a"]),
        ({"mode": "interpret"}, ["RM_b"]),
        ({"language": "ja"}, ["RM_b"]),
        ({"language": "vi"}, ["RM_c"]),
        ({"has_recording": "true"}, ["RM_a"]),
        ({"has_recording": "false"}, ["RM_c", "RM_b"]),
        ({"from": (NOW - timedelta(minutes=45)).isoformat()}, ["RM_c", "RM_b"]),
        ({"to": (NOW - timedelta(minutes=30)).isoformat()}, ["RM_a"]),
        (
            {
                "from": (NOW - timedelta(minutes=31)).isoformat(),
                "to": (NOW - timedelta(minutes=29)).isoformat(),
            },
            ["RM_b"],
        ),
        ({"mode": "dialog", "language": "en"}, ["RM_a"]),
    ],
)
def test_filters(history: History, params: dict[str, str], rooms: list[str]) -> None:
    assert history.rooms(**params) == rooms


def test_cursor_pages_through_everything_once(history: History) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = history.get("/api/conversations", **params)
        seen += [item["room_sid"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["RM_c", "RM_b", "RM_a"]
    two = history.get("/api/conversations", limit=2)
    assert len(two["items"]) == 2 and two["next_cursor"] is not None
    rest = history.get("/api/conversations", limit=2, cursor=two["next_cursor"])
    assert [i["room_sid"] for i in rest["items"]] == ["RM_a"] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"cursor": "garbage"},
        {"from": "2026-11-01T10:00:00"},  # no time zone: ambiguous
        {"q": "?!"},
        {"q": "x" * 201},
        {"mode": "admin"},
        {"language": "english"},
    ],
)
def test_invalid_list_parameters(history: History, params: dict[str, Any]) -> None:
    response = history.client.get(
        "/api/conversations", params=params, headers=admin_headers(history.settings)
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "q,rooms,match",
    [
        ("reservation", ["RM_a"], ("a-2", "en", "The reservation is under Tanaka.")),
        ("TANAKA", ["RM_a"], ("a-2", "en", "The reservation is under Tanaka.")),
        ("予約", ["RM_a"], ("a-1", "ja", "明日のテーブルを予約したいです。")),  # a translation
        ("東京駅", ["RM_b"], ("b-1", "ja", "東京駅で会いましょう。")),
        ("station", ["RM_b"], ("b-1", "en", "Let's meet at Tokyo Station.")),
        ("雨", ["RM_b"], ("b-2", "ja", "明日は雨です。")),
        ("明日", ["RM_b", "RM_a"], None),
        ("table tomorrow", ["RM_a"], ("a-1", "en", "I would like to book a table for tomorrow.")),
        ("đặt bàn", ["RM_c"], ("c-1", "vi", "Tôi muốn đặt bàn cho ngày mai.")),
        ("book reservation", [], None),  # both words, but not in one segment
        ("京都", [], None),
        ("tab", [], None),  # English matches whole words
    ],
)
def test_full_text_search(
    history: History, q: str, rooms: list[str], match: tuple[str, str, str] | None
) -> None:
    page = history.get("/api/conversations", q=q)
    assert [c["room_sid"] for c in page["items"]] == rooms
    if match is not None:
        found = page["items"][0]["matches"]
        assert (found[0]["segment_id"], found[0]["language"], found[0]["text"]) == match


def test_search_gives_the_same_answers_either_way_it_runs(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past COMMON_MATCHES matches the search walks conversations instead of collecting
    them from the index. With the threshold at 0 it always walks: both ways must agree."""
    queries = [
        "reservation",
        "予約",
        "東京駅",
        "京駅",
        "station",
        "雨",
        "明日",
        "table tomorrow",
        "京都",
        "tab",
        "book reservation",
    ]
    by_index = {q: history.rooms(q=q) for q in queries}
    monkeypatch.setattr(search, "COMMON_MATCHES", 0)
    by_scan = {q: history.rooms(q=q) for q in queries}
    assert by_scan == by_index
    assert by_index["明日"] == ["RM_b", "RM_a"]


def test_matches_are_limited_to_three_in_time_order(history: History) -> None:
    post_segments(
        history.client,
        history.settings,
        "RM_c",
        [seg(f"c-x{i}", f"Cảm ơn lần {i}", 10.0 + i, language="vi") for i in range(5)],
    )
    (item,) = history.get("/api/conversations", q="cảm ơn")["items"]
    assert [m["segment_id"] for m in item["matches"]] == ["c-x0", "c-x1", "c-x2"]


def test_search_combines_with_filters_and_pages(history: History) -> None:
    assert history.rooms(q="明日", mode="dialog") == ["RM_a"]
    assert history.rooms(q="明日", has_recording="false") == ["RM_b"]
    first = history.get("/api/conversations", q="明日", limit=1)
    assert [i["room_sid"] for i in first["items"]] == ["RM_b"]
    second = history.get("/api/conversations", q="明日", limit=1, cursor=first["next_cursor"])
    assert [i["room_sid"] for i in second["items"]] == ["RM_a"]
    assert second["next_cursor"] is None


def test_detail(history: History) -> None:
    detail = history.get(f"/api/conversations/{history.ids['RM_a']}")
    assert detail["room_sid"] == "RM_a"
    assert [(p["identity"], p["kind"], p["language"]) for p in detail["participants"]] == [
        ("caller-1", "standard", "en"),
        ("agent-AJ_1", "agent", None),
    ]
    # Posted out of order, listed by time.
    assert [s["id"] for s in detail["transcript"]] == ["a-1", "a-2", "a-3"]
    assert detail["transcript"][0]["translations"] == {"ja": "明日のテーブルを予約したいです。"}
    # The latency ledger, as the agent measured it; a line without one has none.
    assert detail["transcript"][0]["timings"] == LEDGER
    assert detail["transcript"][1]["timings"] == {}
    assert detail["summary"] is None and detail["usage"] is None
    room, caller = detail["recordings"]
    assert (room["kind"], room["offset_s"], room["duration_s"]) == ("room", 0.0, 298.0)
    assert (caller["kind"], caller["participant_identity"]) == ("participant", "caller-1")
    assert caller["offset_s"] == pytest.approx(2.0)
    assert all(r["status"] == "complete" and r["partial"] is False for r in detail["recordings"])


def test_summary_and_usage_are_shown(history: History, database_url: str) -> None:
    """Agents fill these after the call; the API shows what they wrote."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE conversations SET summary = :s, usage = :u WHERE room_sid = 'RM_b'"),
                {"s": "Meeting at Tokyo Station.", "u": json.dumps({"llm_tokens": 1234})},
            )
    finally:
        engine.dispose()
    detail = history.get(f"/api/conversations/{history.ids['RM_b']}")
    assert detail["summary"] == "Meeting at Tokyo Station."
    assert detail["usage"] == {"llm_tokens": 1234}


def test_transcript_in_order(history: History) -> None:
    body = history.get(f"/api/conversations/{history.ids['RM_a']}/transcript")
    assert body["conversation_id"] == history.ids["RM_a"]
    starts = [s["start_s"] for s in body["segments"]]
    assert starts == sorted(starts) == [1.25, 6.0, 8.0]
    assert [s["kind"] for s in body["segments"]] == ["speech", "text", "speech"]


VTT_CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_export_formats(history: History) -> None:
    conversation_id = history.ids["RM_a"]
    headers = admin_headers(history.settings)
    url = f"/api/conversations/{conversation_id}/export"

    as_json = history.client.get(url, params={"format": "json"}, headers=headers)
    assert as_json.headers["content-disposition"] == (
        f'attachment; filename="conversation-{conversation_id}.json"'
    )
    assert [s["id"] for s in as_json.json()["segments"]] == ["a-1", "a-2", "a-3"]

    vtt = history.client.get(url, params={"format": "vtt"}, headers=headers)
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.headers["content-disposition"].endswith(f'conversation-{conversation_id}.vtt"')
    lines = vtt.text.splitlines()
    assert lines[0] == "WEBVTT"
    cues = [(i, VTT_CUE.match(line)) for i, line in enumerate(lines)]
    times = [
        (_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), lines[i + 1])
        for i, m in cues
        if m is not None
    ]
    assert times == [
        (1.25, 4.5, "<v caller-1>I would like to book a table for tomorrow."),
        (6.0, 7.5, "<v caller-1><c.typed>The reservation is under Tanaka.</c>"),
        (8.0, 9.5, "<v agent-AJ_1>Of course, &lt;Tanaka&gt; &amp; party."),
    ]

    txt = history.client.get(url, params={"format": "txt"}, headers=headers)
    assert txt.headers["content-type"].startswith("text/plain")
    assert txt.text.splitlines()[:3] == [
        "[00:00:01.250] caller-1 (en): I would like to book a table for tomorrow.",
        "    (ja) 明日のテーブルを予約したいです。",
        "[00:00:06.000] caller-1 (en, typed): The reservation is under Tanaka.",
    ]
    bad = history.client.get(url, params={"format": "pdf"}, headers=headers)
    assert bad.status_code == 422


def test_vtt_hours_and_rounding(history: History) -> None:
    post_segments(
        history.client,
        history.settings,
        "RM_c",
        [seg("c-late", "Còn đó không?", 3723.4567, end_s=3725.0, language="vi")],
    )
    vtt = history.client.get(
        f"/api/conversations/{history.ids['RM_c']}/export",
        params={"format": "vtt"},
        headers=admin_headers(history.settings),
    ).text
    assert "01:02:03.457 --> 01:02:05.000" in vtt


def test_deleted_conversation_is_gone_from_every_view(
    s3_server: StackConfig, history: History
) -> None:
    conversation_id = history.ids["RM_c"]
    headers = admin_headers(history.settings)
    assert (
        history.client.delete(f"/api/conversations/{conversation_id}", headers=headers).status_code
        == 204
    )
    assert history.rooms() == ["RM_b", "RM_a"]
    assert history.rooms(q="đặt bàn") == []
    assert history.rooms(language="vi") == []
    for path in ["", "/transcript", "/export?format=vtt"]:
        response = history.client.get(
            f"/api/conversations/{conversation_id}{path}", headers=headers
        )
        assert response.status_code == 404, path
    again = history.client.delete(f"/api/conversations/{conversation_id}", headers=headers)
    assert again.status_code == 404


@pytest.mark.parametrize(
    "conversation_id,statuses",
    [
        ("0" * 32, {404}),  # well-formed, unknown
        ("A" * 32, {422}),  # our ids are lower-case hex
        ("0" * 31, {422}),
        ("..%2F..%2Fetc%2Fpasswd", {404, 422}),
        ("%2e%2e%2f%2e%2e%2f", {404, 422}),
        ("..", {404, 422}),
        ("%00", {404, 422}),
        ("0" * 32 + "%2F..", {404, 422}),
    ],
)
def test_conversation_ids_are_checked_before_any_lookup(
    history: History, conversation_id: str, statuses: set[int]
) -> None:
    headers = admin_headers(history.settings)
    for path in ["", "/transcript", "/export"]:
        response = history.client.get(
            f"/api/conversations/{conversation_id}{path}", headers=headers
        )
        assert response.status_code in statuses, (path, response.status_code)


def test_index_sees_exactly_the_stored_terms(history: History, database_url: str) -> None:
    """SQLite's tokenizer and PostgreSQL's parser must cut search_terms where we did, or
    the index and the row check (api/search.py) would disagree about what matches."""
    texts = [
        "Hello, World! KW-123456 ＡＢＣ１２３",
        "東京駅で会いましょう。明日は雨です",
        "Tôi muốn đặt bàn cho ngày mai",
        "ｶﾀｶﾅ and 2024年11月22日 x² ½ ß straße",
        "Ελληνικά русский العربية 한국어",
    ]
    post_segments(
        history.client,
        history.settings,
        "RM_z",
        [seg(f"z-{i}", t, float(i)) for i, t in enumerate(texts)],
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            stored: dict[str, str] = dict(
                connection.execute(
                    text("SELECT id, search_terms FROM segments WHERE id LIKE 'z-%'")
                ).all()
            )
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql(
                    "CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, segments_fts, instance)"
                )
                rows = connection.execute(
                    text(
                        "SELECT s.id, v.term FROM temp.vocab v JOIN segments s ON s.seq = v.doc "
                        "WHERE s.id LIKE 'z-%' ORDER BY s.id, v.offset"
                    )
                ).all()
                indexed: dict[str, list[str]] = {}
                for segment_id, term in rows:
                    indexed.setdefault(segment_id, []).append(term)
            else:
                rows = connection.execute(
                    text(
                        "SELECT id, to_tsvector('simple', search_terms)::text FROM segments "
                        "WHERE id LIKE 'z-%'"
                    )
                ).all()
                indexed = {segment_id: _lexemes_in_order(vector) for segment_id, vector in rows}
    finally:
        engine.dispose()
    assert indexed == {segment_id: terms.split() for segment_id, terms in stored.items()}


def _lexemes_in_order(tsvector: str) -> list[str]:
    """'a':1,3 'b':2 -> [a, b, a]"""
    positions: list[tuple[int, str]] = []
    for lexeme, where in re.findall(r"'((?:[^']|'')*)':([\d,]+)", tsvector):
        positions += [(int(p), lexeme.replace("''", "'")) for p in where.split(",")]
    return [lexeme for _, lexeme in sorted(positions)]
