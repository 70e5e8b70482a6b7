"""The search bench's work: load a generated history into a database, time searches on it.

Heavy imports (the API, SQLAlchemy) live here, so `kaiwa` itself starts without them.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from api.conversations import list_conversations
from api.db import make_engine, make_sessionmaker, migrate
from api.models import Conversation, Participant, Recording, new_id
from api.search import ConversationFilters
from api.search_terms import parse_query, search_terms

from .corpus import Call, Generator, Line

QUERIES = 200
PAGE = 25
# Calls per transaction while loading.
CALLS_PER_BATCH = 200
SEARCHABLE = ("segments", "translations")


@dataclass(frozen=True)
class BenchQuery:
    kind: str
    filters: ConversationFilters


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _segment_rows(lines: list[Line]) -> Iterator[tuple[Any, ...]]:
    for line in lines:
        yield (
            line.id,
            line.conversation_id,
            line.identity,
            None,
            line.language,
            line.text,
            line.start_s,
            line.end_s,
            search_terms(line.text),
        )


def _translation_rows(lines: list[Line]) -> Iterator[tuple[Any, ...]]:
    for line in lines:
        if line.translation is not None:
            language, translated = line.translation
            yield (
                line.id,
                line.conversation_id,
                language,
                translated,
                search_terms(translated),
            )


SEGMENT_COLUMNS = (
    "id, conversation_id, participant_identity, participant_sid, language, text, start_s, "
    "end_s, search_terms, created_at"
)
TRANSLATION_COLUMNS = "segment_id, conversation_id, language, text, search_terms, created_at"


def _insert_calls(connection: Connection, calls: list[Call], deleted: set[str]) -> None:
    """The small tables, through SQLAlchemy, which stores datetimes as the API does."""
    now = datetime.now(UTC)
    connection.execute(
        insert(Conversation),
        [
            {
                "id": c.id,
                "room_sid": c.room_sid,
                "room_name": c.room_name,
                "mode": c.mode,
                "started_at": c.started_at,
                "ended_at": c.ended_at,
                "created_at": c.started_at,
                "deleted_at": now if c.id in deleted else None,
            }
            for c in calls
        ],
    )
    participants = []
    for c in calls:
        people: list[tuple[str, str | None, str]] = [
            (identity, language, "standard") for identity, language in c.callers
        ]
        people.append((c.agent, None, "agent"))
        for identity, language, kind in people:
            participants.append(
                {
                    "id": new_id(),
                    "conversation_id": c.id,
                    "participant_sid": "PA_" + new_id()[:16],
                    "identity": identity,
                    "name": identity,
                    "kind": kind,
                    "language": language,
                    "joined_at": c.started_at,
                    "left_at": c.ended_at,
                }
            )
    connection.execute(insert(Participant), participants)
    recordings = [
        {
            "id": new_id(),
            "egress_id": "EG_" + new_id()[:16],
            "conversation_id": c.id,
            "kind": "room",
            "status": "complete",
            "partial": False,
            "started_at": c.started_at,
            "ended_at": c.ended_at,
            "object_key": f"recordings/{c.room_name}.ogg",
            "size": 1000,
            "duration_s": (c.ended_at - c.started_at).total_seconds(),
            "updated_at": c.ended_at,
            "created_at": c.started_at,
        }
        for c in calls
        if c.recorded
    ]
    if recordings:
        connection.execute(insert(Recording), recordings)


def _sqlite_bulk(connection: Connection, calls: list[tuple[Call, list[Line]]]) -> None:
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    lines = [line for _, ls in calls for line in ls]
    connection.exec_driver_sql(
        f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row, created) for row in _segment_rows(lines)],
    )
    connection.exec_driver_sql(
        f"INSERT INTO translations ({TRANSLATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        [(*row, created) for row in _translation_rows(lines)],
    )


def _postgresql_bulk(connection: Connection, calls: list[tuple[Call, list[Line]]]) -> None:
    created = datetime.now(UTC)
    lines = [line for _, ls in calls for line in ls]
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY segments ({SEGMENT_COLUMNS}) FROM STDIN") as copy:
        for row in _segment_rows(lines):
            copy.write_row((*row, created))
    with cursor.copy(f"COPY translations ({TRANSLATION_COLUMNS}) FROM STDIN") as copy:
        for row in _translation_rows(lines):
            copy.write_row((*row, created))


def _without_secondary_structures(engine: Engine) -> tuple[list[str], list[str]]:
    """Drop the searchable tables' indexes and triggers for the load: (drops, re-creates).

    Taken from the database itself, so the bench measures exactly what the migrations made.
    """
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(
                text(
                    "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')"
                    " AND tbl_name IN ('segments', 'translations') AND sql IS NOT NULL"
                )
            ).all()
            drops = [f"DROP {kind.upper()} {name}" for kind, name, _ in rows]
            creates = [sql for _, _, sql in rows]
        else:
            rows = connection.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                    "('segments', 'translations') AND indexname NOT IN "
                    "(SELECT conname FROM pg_constraint)"
                )
            ).all()
            drops = [f"DROP INDEX {name}" for name, _ in rows]
            creates = [definition for _, definition in rows]
        for statement in drops:
            connection.exec_driver_sql(statement)
    return drops, creates


def load(engine: Engine, segments: int, seed: int) -> tuple[Generator, list[Call]]:
    """Generate the history into the (migrated, empty) database."""
    generator = Generator(seed)
    _, creates = _without_secondary_structures(engine)
    bulk = _sqlite_bulk if engine.dialect.name == "sqlite" else _postgresql_bulk
    calls: list[Call] = []
    batch: list[tuple[Call, list[Line]]] = []

    def flush() -> None:
        deleted = {c.id for c, _ in batch if int(c.id[:4], 16) % 100 == 0}  # 1% deleted
        with engine.begin() as connection:
            _insert_calls(connection, [c for c, _ in batch], deleted)
            bulk(connection, batch)
        batch.clear()

    for call, lines in generator.calls(segments):
        calls.append(call)
        batch.append((call, lines))
        if len(batch) >= CALLS_PER_BATCH:
            flush()
    if batch:
        flush()
    say(f"{engine.dialect.name}: building the indexes")
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for table in SEARCHABLE:
                connection.exec_driver_sql(
                    f"INSERT INTO {table}_fts({table}_fts) VALUES ('rebuild')"
                )
        for statement in creates:
            connection.exec_driver_sql(statement)
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after a real load; the planner needs the statistics.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")
    return generator, calls


def make_queries(generator: Generator, calls: list[Call], seed: int) -> list[BenchQuery]:
    """A fixed mix: common, mid and rare English words, Japanese words of 1-5 characters,
    rare Japanese names, two-word queries, searches with filters, and filters alone."""
    rng = random.Random(seed + 1)
    vocabulary = generator.vocabulary
    rare_codes = sorted(c for c, n in vocabulary.codes.items() if n <= 2)
    rare_names = sorted(s for s, n in vocabulary.rare_surnames.items() if n <= 50)
    newest = max(c.started_at for c in calls)
    some_callers = sorted({c.callers[0][0] for c in calls})

    words: dict[str, list[str]] = {
        "en_common": ["reservation", "tomorrow", "Tokyo", "table", "thank", "room", "please"],
        "en_mid": ["tempura", "Hiroshima", "printer", "typhoon", "ferry", "warranty", "kaiseki"],
        "en_rare": rng.sample(rare_codes, min(25, len(rare_codes))),
        "ja_short": ["予約", "東京", "明日", "天気", "雨", "和室", "返金", "新幹線"],
        "ja_long": ["ありがとう", "レストラン", "チェックイン", "お好み焼き", "少々お待ちください"],
        "ja_rare": rng.sample(rare_names, min(15, len(rare_names))),
        "two_words": ["table tomorrow", "東京 ラーメン", "printer Monday", "sushi 予約", "雪 札幌"],
    }
    mix = {
        "en_common": 25,
        "en_mid": 20,
        "en_rare": 25,
        "ja_short": 30,
        "ja_long": 20,
        "ja_rare": 15,
        "two_words": 20,
    }
    queries: list[BenchQuery] = []
    for kind, count in mix.items():
        for i in range(count):
            q = parse_query(words[kind][i % len(words[kind])])
            queries.append(BenchQuery(kind, ConversationFilters(query=q)))
    filter_options: list[Callable[[], ConversationFilters]] = [
        lambda: ConversationFilters(language="ja"),
        lambda: ConversationFilters(mode="interpret"),
        lambda: ConversationFilters(has_recording=False),
        lambda: ConversationFilters(participant=rng.choice(some_callers)),
        lambda: ConversationFilters(
            started_from=newest - timedelta(days=rng.randint(30, 300)),
            started_to=newest - timedelta(days=rng.randint(0, 29)),
        ),
    ]
    all_words = [w for kind in ("en_common", "en_mid", "ja_short", "ja_long") for w in words[kind]]
    for i in range(25):
        base = filter_options[i % len(filter_options)]()
        q = parse_query(rng.choice(all_words))
        queries.append(BenchQuery("words_and_filters", replace(base, query=q)))
    for i in range(QUERIES - len(queries)):
        queries.append(BenchQuery("filters_only", filter_options[i % len(filter_options)]()))
    return queries


def run_queries(
    sessions: sessionmaker[Session], queries: list[BenchQuery]
) -> tuple[list[float], list[list[str]]]:
    timings: list[float] = []
    pages: list[list[str]] = []
    for query in queries:
        with sessions() as session:
            started = time.perf_counter()
            page = list_conversations(session, query.filters, limit=PAGE, cursor=None)
            timings.append((time.perf_counter() - started) * 1000)
        pages.append([item.id for item in page.items])
    return timings, pages


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _figures(timings: list[float], queries: list[BenchQuery]) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for query, ms in zip(queries, timings, strict=True):
        by_kind[query.kind].append(ms)
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(_percentile(timings, 0.95), 1),
        "max_ms": round(max(timings), 1),
        "by_kind": {
            kind: {
                "n": len(values),
                "p50_ms": round(statistics.median(values), 1),
                "p95_ms": round(_percentile(values, 0.95), 1),
            }
            for kind, values in by_kind.items()
        },
    }


def bench_database(
    name: str, url: str, segments: int, seed: int
) -> tuple[dict[str, Any], list[list[str]]]:
    engine = make_engine(url)
    try:
        migrate(engine)
        say(f"{name}: generating and loading {segments:,} segments")
        started = time.perf_counter()
        generator, calls = load(engine, segments, seed)
        load_s = time.perf_counter() - started
        queries = make_queries(generator, calls, seed)
        sessions = make_sessionmaker(engine)
        say(f"{name}: {len(queries)} searches, once to warm up, once timed")
        run_queries(sessions, queries)
        timings, pages = run_queries(sessions, queries)
        figures = {
            "conversations": len(calls),
            "load_s": round(load_s, 1),
            **_figures(timings, queries),
            "empty_pages": sum(1 for p in pages if not p),
        }
        return figures, pages
    finally:
        engine.dispose()
