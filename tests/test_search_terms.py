"""What the index stores and what a query looks for: words, CJK bigrams, the same both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.search import Cursor
from api.search_terms import parse_query, search_terms

pytestmark = pytest.mark.unit


def matches(query: str, text: str) -> bool:
    """The match both databases implement, on the stored terms (see _scan_match)."""
    parsed = parse_query(query)
    assert parsed is not None
    terms = search_terms(text)
    return all(pattern in terms for pattern in parsed.patterns())


def test_words_are_case_folded_and_split_at_punctuation() -> None:
    assert search_terms("Hello, WORLD! booking KW-123") == " hello world booking kw 123 "


def test_width_variants_are_normalised() -> None:
    # Full-width Latin and half-width katakana, as Japanese input methods produce them.
    assert search_terms("ＡＢＣ１２３ ｶﾀｶﾅ") == " abc123 カタ タカ カナ ナ "


def test_cjk_runs_become_bigrams_and_a_last_character() -> None:
    assert search_terms("東京駅") == " 東京 京駅 駅 "
    assert search_terms("雨") == " 雨 "
    assert search_terms("明日は雨です") == " 明日 日は は雨 雨で です す "


@pytest.mark.parametrize(
    "query,text,expected",
    [
        ("予約", "明日の予約をお願いします", True),  # two characters, the common case
        ("予約", "予定を約束しました", False),  # both characters, not together
        ("東京駅", "東京駅で会いましょう", True),
        ("京駅", "東京駅で会いましょう", True),  # CJK matches inside words
        ("東京駅", "東京の駅", False),
        ("駅", "東京駅", True),  # one character: at the end of a run
        ("東", "東京駅", True),  # ... or at its start
        ("雨", "雨", True),
        ("ありがとう", "どうもありがとうございます", True),
        ("book", "I would like to book a table", True),
        ("book", "booking reference", False),  # English matches whole words
        ("BOOK", "Book it", True),
        ("table tomorrow", "a table for tomorrow", True),  # every word, any order
        ("table tomorrow", "a table for today", False),
        ("sushi 予約", "sushiの予約", True),
        ("Việt", "tiếng việt", True),
        ("viet", "tiếng việt", False),  # diacritics are letters in Vietnamese
        ("kw-123", "code KW 123", True),
    ],
)
def test_matching(query: str, text: str, expected: bool) -> None:
    assert matches(query, text) is expected


def test_query_without_letters_is_none() -> None:
    assert parse_query("!!! ... ???") is None
    assert parse_query("") is None


def test_fts5_and_tsquery_spellings() -> None:
    query = parse_query("東京駅 hello 雨")
    assert query is not None
    assert query.fts5() == '"東京 京駅" AND "hello" AND "雨" *'
    assert query.tsquery() == "'東京' & '京駅' & 'hello' & '雨':*"


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(datetime(2026, 11, 1, 12, 30, tzinfo=UTC), "a" * 32)
    assert Cursor.decode(cursor.encode()) == cursor
    for garbage in ["", "not-base64!", "W10", "eyJhIjogMX0", "WyIyMDI2LTExLTAxVDEyOjMwIiwgMV0"]:
        with pytest.raises(ValueError):
            Cursor.decode(garbage)
