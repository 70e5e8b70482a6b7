"""Full-text search over transcripts and translations, on SQLite and PostgreSQL alike.

Both databases index the *search terms* of each text (api/search_terms.py).

Matching, in both databases: every query word must occur in the same segment (or the same
translation), English and other spaced scripts as whole words, CJK as substrings.

- SQLite: an FTS5 table over `search_terms` (`unicode61`, which only has to split on spaces),
  kept in sync by triggers (migration 0002).
- PostgreSQL: a GIN index on `to_tsvector('simple', search_terms)`; 'simple' only lowercases,
  so each lexeme is exactly one of our terms.

`find_conversations` is the one entry point for the history list (the API and the search
bench both call it). The dialects differ in `_index_match`, `_scan_match` and
`_many_matches`, nowhere else. Design and measurements: docs/history-search.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    tuple_,
    union,
    union_all,
)
from sqlalchemy import column as sql_column
from sqlalchemy.orm import Session

from .models import Conversation, Participant, Recording, Segment, Translation
from .search_terms import SearchQuery

# Up to this many matching rows, the search collects the matching conversations from the
# index and sorts them; past it, the word is common, and walking the newest conversations
# and checking each for a match finds a page sooner. Measured with `kaiwa bench search`:
# docs/history-search.md.
COMMON_MATCHES = 2000


@dataclass(frozen=True)
class Cursor:
    """Where a page of the history list ends: the last row's sort key."""

    started_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.started_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Raises ValueError for anything this module did not make."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            started_at, id_ = json.loads(raw)
            when = datetime.fromisoformat(started_at)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError("invalid cursor") from exc
        if not isinstance(id_, str) or when.tzinfo is None:
            raise ValueError("invalid cursor")
        return cls(when, id_)


@dataclass(frozen=True)
class ConversationFilters:
    started_from: datetime | None = None
    started_to: datetime | None = None
    room: str | None = None
    participant: str | None = None
    mode: str | None = None
    language: str | None = None
    has_recording: bool | None = None
    query: SearchQuery | None = None


def _fts_rowids(model: type[Segment] | type[Translation], query: SearchQuery) -> Select[Any]:
    """SQLite: the rowids (`seq`) of `model`'s rows that its FTS5 table says match."""
    name = f"{model.__tablename__}_fts"
    fts = table(name, sql_column("rowid"), sql_column(name))
    return select(fts.c.rowid).where(fts.c[name].match(query.fts5()))


def _tsvector(model: type[Segment] | type[Translation]) -> ColumnElement[object]:
    # Spelled exactly as in the index definition, or PostgreSQL will not use the index.
    return func.to_tsvector(literal_column("'simple'::regconfig"), model.search_terms)


def _tsquery(query: SearchQuery) -> ColumnElement[object]:
    return func.to_tsquery(literal_column("'simple'::regconfig"), query.tsquery())


def _index_match(
    dialect: str, model: type[Segment] | type[Translation], query: SearchQuery
) -> ColumnElement[bool]:
    """Rows of `model` that match, found through the full-text index."""
    if dialect == "sqlite":
        return model.seq.in_(_fts_rowids(model, query))
    return and_(_tsvector(model).op("@@")(_tsquery(query)), _scan_match(dialect, model, query))


def _planned_rows(session: Session, table: str, query: SearchQuery) -> float:
    """PostgreSQL's estimate of the rows of `table` that have all the query's terms."""
    plan = session.execute(
        text(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE "
            "to_tsvector('simple'::regconfig, search_terms) "
            "@@ to_tsquery('simple'::regconfig, :query)"
        ),
        {"query": query.tsquery()},
    ).scalar_one()
    return float(plan[0]["Plan"]["Plan Rows"])


def _many_matches(session: Session, query: SearchQuery, threshold: int) -> bool:
    """Whether `threshold` or more segments and translations match.

    Counting up to `threshold` is cheap where the index intersects lists of row ids: in
    SQLite's FTS5 always, in PostgreSQL's GIN index for several terms (the rarest bounds
    the work). For one term PostgreSQL builds the whole bitmap of its rows before counting
    any: 7 ms for a word in 4% of 1M rows, 45 ms for one in a quarter. For one term, the
    planner's statistics on the index are exact enough (within 10% in the search bench).
    """
    dialect = session.get_bind().dialect.name
    single_term = len(query.phrases) == 1 and len(query.phrases[0].terms) == 1
    total = 0
    for model in (Segment, Translation):
        if dialect != "sqlite" and single_term:
            total += round(_planned_rows(session, model.__tablename__, query))
        else:
            matching = (
                _fts_rowids(model, query)
                if dialect == "sqlite"
                else select(model.seq).where(_index_match(dialect, model, query))
            )
            counted = select(func.count()).select_from(matching.limit(threshold).subquery())
            total += session.scalar(counted) or 0
        if total >= threshold:
            return True
    return False


def _scan_match(
    dialect: str, model: type[Segment] | type[Translation], query: SearchQuery
) -> ColumnElement[bool]:
    """The same match as `_index_match`, tested on a row's own `search_terms`."""
    if dialect == "sqlite":
        return and_(*(func.instr(model.search_terms, p) > 0 for p in query.patterns()))
    # LIKE rather than strpos(): PostgreSQL estimates how rare a LIKE pattern is, while it
    # takes strpos() > 0 to keep a third of the rows and plans scans and parallel workers
    # for that. The patterns hold letters, digits and spaces only: nothing to escape.
    return and_(*(model.search_terms.like(f"%{p}%") for p in query.patterns()))


def text_match(session: Session, query: SearchQuery) -> ColumnElement[bool]:
    """A condition on Conversation: some segment or translation of it matches `query`."""
    dialect = session.get_bind().dialect.name
    if not _many_matches(session, query, COMMON_MATCHES):
        matching = union(
            select(Segment.conversation_id).where(_index_match(dialect, Segment, query)),
            select(Translation.conversation_id).where(_index_match(dialect, Translation, query)),
        )
        return Conversation.id.in_(matching)
    # One EXISTS over both tables: with two, PostgreSQL turns the second into a scan of the
    # whole translations table (it cannot tell how rare a substring is), hashed once.
    return union_all(
        select(literal_column("1")).where(
            Segment.conversation_id == Conversation.id, _scan_match(dialect, Segment, query)
        ),
        select(literal_column("1")).where(
            Translation.conversation_id == Conversation.id,
            _scan_match(dialect, Translation, query),
        ),
    ).exists()


def _filtered(session: Session, filters: ConversationFilters) -> Select[Conversation]:
    statement = select(Conversation).where(Conversation.deleted_at.is_(None))
    if filters.started_from is not None:
        statement = statement.where(Conversation.started_at >= filters.started_from)
    if filters.started_to is not None:
        statement = statement.where(Conversation.started_at < filters.started_to)
    if filters.room is not None:
        statement = statement.where(Conversation.room_name == filters.room)
    if filters.mode is not None:
        statement = statement.where(Conversation.mode == filters.mode)
    if filters.participant is not None:
        # IN, not EXISTS: one identity is in few calls, and from its index the database
        # finds those directly instead of testing every conversation in turn.
        statement = statement.where(
            Conversation.id.in_(
                select(Participant.conversation_id).where(
                    Participant.identity == filters.participant
                )
            )
        )
    if filters.language is not None:
        statement = statement.where(
            or_(
                exists().where(
                    Participant.conversation_id == Conversation.id,
                    Participant.language == filters.language,
                ),
                exists().where(
                    Segment.conversation_id == Conversation.id,
                    Segment.language == filters.language,
                ),
            )
        )
    if filters.has_recording is not None:
        recorded = exists().where(
            Recording.conversation_id == Conversation.id, Recording.object_key.is_not(None)
        )
        statement = statement.where(recorded if filters.has_recording else ~recorded)
    if filters.query is not None:
        statement = statement.where(text_match(session, filters.query))
    return statement


def find_conversations(
    session: Session, filters: ConversationFilters, *, limit: int, after: Cursor | None = None
) -> list[Conversation]:
    """Up to `limit` conversations that pass the filters, newest first, after the cursor."""
    statement = _filtered(session, filters)
    if after is not None:
        statement = statement.where(
            tuple_(Conversation.started_at, Conversation.id) < (after.started_at, after.id)
        )
    statement = statement.order_by(Conversation.started_at.desc(), Conversation.id.desc())
    return list(session.scalars(statement.limit(limit)))


@dataclass(frozen=True)
class Match:
    conversation_id: str
    segment_id: str
    language: str
    text: str
    start_s: float


def find_matches(
    session: Session, conversation_ids: list[str], query: SearchQuery, *, per_conversation: int
) -> dict[str, list[Match]]:
    """The first matching segments or translations of each conversation, by time."""
    if not conversation_ids:
        return {}
    dialect = session.get_bind().dialect.name
    sources = union_all(
        select(
            Segment.conversation_id,
            Segment.id.label("segment_id"),
            Segment.language,
            Segment.text,
            Segment.start_s,
        ).where(
            Segment.conversation_id.in_(conversation_ids), _scan_match(dialect, Segment, query)
        ),
        select(
            Translation.conversation_id,
            Translation.segment_id,
            Translation.language,
            Translation.text,
            Segment.start_s,
        )
        .join(Segment, Segment.id == Translation.segment_id)
        .where(
            Translation.conversation_id.in_(conversation_ids),
            _scan_match(dialect, Translation, query),
        ),
    ).subquery()
    ranked = select(
        sources,
        func.row_number()
        .over(
            partition_by=sources.c.conversation_id,
            order_by=(sources.c.start_s, sources.c.segment_id, sources.c.language),
        )
        .label("rank"),
    ).subquery()
    rows = session.execute(
        select(ranked)
        .where(ranked.c.rank <= per_conversation)
        .order_by(ranked.c.conversation_id, ranked.c.rank)
    )
    found: dict[str, list[Match]] = {}
    for row in rows:
        found.setdefault(row.conversation_id, []).append(
            Match(row.conversation_id, row.segment_id, row.language, row.text, row.start_s)
        )
    return found
