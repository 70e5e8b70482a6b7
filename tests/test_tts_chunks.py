"""How a streamed reply is cut into pieces for a voice that speaks whole texts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.tts.chunks import speakable_pieces

pytestmark = pytest.mark.unit


async def _pieces(deltas: list[str]) -> list[str]:
    async def stream() -> AsyncIterator[str]:
        for delta in deltas:
            yield delta

    return [piece async for piece in speakable_pieces(stream())]


async def test_the_first_clause_is_released_as_soon_as_it_is_complete() -> None:
    pulled: list[str] = []
    deltas = ["Sure", ",", " here", " is", " a", " story", "."]

    async def stream() -> AsyncIterator[str]:
        for delta in deltas:
            pulled.append(delta)
            yield delta

    pieces = speakable_pieces(stream())
    assert await anext(pieces) == "Sure,"
    # Released when the next word began, long before the reply was complete.
    assert pulled == ["Sure", ",", " here"]
    assert [piece async for piece in pieces] == ["here is a story."]


async def test_a_one_sentence_reply_is_not_held_back_for_a_next_sentence() -> None:
    assert await _pieces(["The", " capital", " of", " France", " is", " Paris", "."]) == [
        "The capital of France is Paris."
    ]


async def test_later_pieces_are_whole_sentences_and_short_ones_join_the_next() -> None:
    text = "Yes, it is. It is very cold. Snow falls in the mountains in winter. Wear a coat."
    assert await _pieces([word + " " for word in text.split()]) == [
        "Yes,",
        "it is. It is very cold.",
        "Snow falls in the mountains in winter.",
        "Wear a coat.",
    ]


async def test_points_inside_numbers_do_not_cut() -> None:
    assert await _pieces(["It costs 3", ".", "5 dollars", ", or 4", ".", "2 euros."]) == [
        "It costs 3.5 dollars,",
        "or 4.2 euros.",
    ]


async def test_japanese_marks_cut_without_a_space() -> None:
    reply = ["はい", "、", "ホット", "ですね", "。", "サイズ", "は", "どう", "しますか", "？"]
    assert await _pieces(reply) == ["はい、", "ホットですね。サイズはどうしますか？"]


async def test_whatever_is_left_is_spoken_and_empty_text_is_nothing() -> None:
    assert await _pieces(["no", " punctuation", " at", " all"]) == ["no punctuation at all"]
    assert await _pieces(["", "  "]) == []
