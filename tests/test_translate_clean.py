"""What the model says is reduced to the translation alone."""

from __future__ import annotations

import pytest

from agents.translate import clean
from core.errors import UnsupportedLanguage
from core.languages import language_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("コーヒーを一杯ください。", "コーヒーを一杯ください。"),
        ("Translation: I'd like coffee.", "I'd like coffee."),
        ("Japanese: コーヒーをください", "コーヒーをください"),
        ('"Good morning."', "Good morning."),
        ("「おはようございます」", "おはようございます"),
        ("Xin chào.\n\nNote: this is a greeting.", "Xin chào."),
        ("Good morning.\n(Literally: early hello)", "Good morning."),
        ("Good evening (note: formal)", "Good evening"),
        ("  \n", ""),
    ],
)
def test_clean(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedLanguage, match="'xx'"):
        language_name("xx")
    assert language_name("pt-BR") == "Portuguese"
