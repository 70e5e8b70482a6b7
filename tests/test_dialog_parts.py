"""The dialog agent's pure parts: the scenario catalogue and what counts as a backchannel."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.dialog.lines import is_backchannel
from core import scenarios

pytestmark = pytest.mark.unit


def test_the_shipped_catalogue_loads_with_its_default() -> None:
    catalogue = scenarios.load()
    assert scenarios.DEFAULT_SCENARIO in catalogue
    cafe = catalogue["cafe-ja-beginner"]
    assert cafe.language == "ja" and cafe.opening
    assert "Japanese" in cafe.system_prompt() and "beginner" in cafe.system_prompt()
    # Learners stop to think mid-sentence: the agent waits longer for them.
    assert cafe.max_turn_pause_s > catalogue[scenarios.DEFAULT_SCENARIO].max_turn_pause_s


def test_an_unknown_or_missing_scenario_falls_back_to_the_default() -> None:
    assert scenarios.pick(None).id == scenarios.DEFAULT_SCENARIO
    assert scenarios.pick("no-such-scenario").id == scenarios.DEFAULT_SCENARIO
    assert scenarios.pick("cafe-ja-beginner").id == "cafe-ja-beginner"


def _scenario(scenario_id: str, extra: str = "") -> str:
    """A catalogue of one valid scenario, plus `extra` lines."""
    return (
        f'[{scenario_id}]\ntitle = "T"\nlanguage = "en"\nlevel = "a1"\npersona = "p"\n'
        f'opening = "Hi"\ninstructions = "Be kind."\n{extra}'
    )


def test_a_broken_catalogue_is_refused_naming_the_file_and_scenario(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[assistant]\ntitle = "x"\n', encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match=r"broken\.toml.*'assistant'"):
        scenarios.load(broken)
    no_default = tmp_path / "no_default.toml"
    no_default.write_text(_scenario("tea"), encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match="assistant"):
        scenarios.load(no_default)
    endless = tmp_path / "endless.toml"
    endless.write_text(_scenario("assistant", "max_turn_pause_s = 60\n"), encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match="max_turn_pause_s"):
        scenarios.load(endless)
    unreadable = tmp_path / "not.toml"
    unreadable.write_text("[assistant\n", encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match=r"not\.toml"):
        scenarios.load(unreadable)


@pytest.mark.parametrize("text", ["Yeah.", "uh-huh", "Mm hmm", "はい", "うん。", "OK, sure"])
def test_acknowledgements_are_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    ["", "Yes, I would like a coffee.", "What is the capital of France?", "はい、お願いします"],
)
def test_requests_are_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)
