"""Scoring normalisation: only real differences count as errors."""

from __future__ import annotations

import pytest

from kaiwa.eval.text import normalize

pytestmark = pytest.mark.unit


def test_english_digits_and_punctuation() -> None:
    assert normalize("Book a table for 4, at 7!", "en") == "book a table for four at seven"


def test_japanese_folds_script_and_digits_but_not_kanji() -> None:
    assert normalize("このかばんは2つ。", "ja") == normalize("このカバンは二つ", "ja")
    assert normalize("財布", "ja") != normalize("サイフ", "ja")
