"""`kaiwa eval dialog`'s rules: what makes a reply sensible, checked on its text."""

from __future__ import annotations

import pytest

from core import scenarios
from kaiwa.eval.dialog import Turn, load_turns, problems

pytestmark = pytest.mark.unit

CATALOGUE = scenarios.load()
CAFE = CATALOGUE["cafe-ja-beginner"]
ASSISTANT = CATALOGUE["assistant"]


def test_every_shipped_scenario_has_ten_scripted_turns() -> None:
    turns = load_turns()
    assert turns.keys() == CATALOGUE.keys()
    assert all(len(script) >= 10 for script in turns.values())
    assert all(t.rule in (None, "question", "price") for script in turns.values() for t in script)


def test_each_scenarios_own_examples_pass_its_rules() -> None:
    """The role card shows the model sensible replies: the eval must agree they are."""
    for scenario in CATALOGUE.values():
        for example in scenario.examples:
            assert not problems(example.agent, Turn(example.caller), scenario), example


@pytest.mark.parametrize(
    ("reply", "turn", "expected"),
    [
        ("Mサイズのコーヒーは400円です。", Turn("いくらですか。", rule="price"), []),
        ("コーヒーは四百円です。", Turn("いくらですか。", rule="price"), []),
        ("駅から200メートルです。", Turn("いくらですか。", rule="price"), ["no price"]),
        ("ホットとアイス、どちらにしますか？", Turn("コーヒーを。", rule="question"), []),
        ("ホットですね。", Turn("コーヒーを。", rule="question"), ["no question back"]),
        ("Sure, a coffee is 400 yen.", Turn("いくらですか。"), ["not Japanese"]),
        ("**コーヒー**は400円です。", Turn("いくらですか。"), ["markup"]),
        ("はい。コーヒーですね。Mですね。ホットですね。", Turn("M"), ["4 sentences"]),
        ("お手伝いできてうれしいです。", Turn("抹茶ラテは？", any=("抹茶",)), ["none of ['抹茶']"]),
        ("", Turn("こんにちは"), ["empty"]),
    ],
)
def test_a_cafe_reply_is_judged_by_its_rules(reply: str, turn: Turn, expected: list[str]) -> None:
    assert problems(reply, turn, CAFE) == expected


def test_an_english_reply_in_another_script_or_with_a_list_is_not_sensible() -> None:
    turn = Turn("What is the capital of France?", any=("Paris",))
    assert problems("The capital of France is Paris.", turn, ASSISTANT) == []
    assert problems("フランスの首都はパリです。", turn, ASSISTANT) == [
        "not English",
        "none of ['Paris']",
    ]
    assert problems("Here you go:\n- Paris\n- Lyon", turn, ASSISTANT) == ["markup"]
