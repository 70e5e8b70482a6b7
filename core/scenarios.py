"""The scenario catalogue: the parts the dialog agent can play, kept in configuration."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from .errors import KaiwaError
from .languages import language_name

DEFAULT_FILE = Path(__file__).with_name("scenarios.toml")
DEFAULT_SCENARIO = "assistant"


class ScenarioError(KaiwaError, ValueError):
    pass


class Exchange(BaseModel, frozen=True):
    """A sample of the part: what a caller says, and how the agent answers it."""

    caller: str = Field(min_length=1, max_length=500)
    agent: str = Field(min_length=1, max_length=500)


# How a reply's length limit reads in the prompt.
_SENTENCES = {
    1: "one short sentence",
    2: "one or two short sentences",
    3: "one to three short sentences",
    4: "one to four short sentences",
    5: "one to five short sentences",
}


class Scenario(BaseModel, frozen=True):
    id: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    title: str = Field(min_length=1, max_length=200)
    language: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    level: str = Field(min_length=1, max_length=32)
    persona: str = Field(min_length=1, max_length=500)
    opening: str = Field(min_length=1, max_length=500)
    # What it says first to a phone caller, who has no page telling them whom they called.
    phone_opening: str | None = Field(default=None, min_length=1, max_length=500)
    instructions: str = Field(min_length=1, max_length=5000)
    # How long the agent waits for more when LiveKit's end-of-turn model hears the caller
    # stop mid-sentence. Each second here is a second of silence before such a reply, and
    # too short cuts off callers who stop to think: learners more than anyone.
    max_turn_pause_s: float = Field(default=1.2, ge=0.3, le=5.0)
    # A small model stays in a part it is shown, with the facts of its world at hand: what it
    # is not given, it invents (asked a ticket's price, it once gave a distance in metres).
    facts: str | None = Field(default=None, min_length=1, max_length=3000)
    examples: tuple[Exchange, ...] = Field(default=(), max_length=8)
    # Spoken replies: a learner follows one or two sentences, not a paragraph.
    max_reply_sentences: int = Field(default=3, ge=1, le=5)

    def opening_for(self, *, phone: bool) -> str:
        return (self.phone_opening or self.opening) if phone else self.opening

    def system_prompt(self) -> str:
        """What the language model is told: its part, the facts of its world, samples of
        how it answers, and how a spoken reply must look."""
        parts = [
            f"You are {self.persona}. Speak only {self.language_name()}, at {self.level} "
            f"level. {self.instructions.strip()}"
        ]
        if self.facts:
            parts.append(
                "What you know (answer from these facts; never invent prices, times or "
                f"places):\n{self.facts.strip()}"
            )
        if self.examples:
            samples = "\n".join(f"Caller: {e.caller}\nYou: {e.agent}" for e in self.examples)
            parts.append(f"How you answer, for example:\n{samples}")
        length = _SENTENCES[self.max_reply_sentences]
        parts.append(
            f"Your words are spoken aloud: reply in {length}, with no "
            "lists, markdown, emoji or stage directions. Never say you are an AI model unless "
            "asked."
        )
        return "\n".join(parts)

    def language_name(self) -> str:
        return language_name(self.language)


@cache
def load(path: Path = DEFAULT_FILE) -> dict[str, Scenario]:
    """Scenarios by id. Raises ScenarioError naming the file and the problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    scenarios: dict[str, Scenario] = {}
    for scenario_id, fields in raw.items():
        try:
            scenarios[scenario_id] = Scenario(id=scenario_id, **fields)
        except (TypeError, ValidationError) as exc:
            raise ScenarioError(f"{path}: scenario {scenario_id!r}: {exc}") from exc
    if DEFAULT_SCENARIO not in scenarios:
        raise ScenarioError(f"{path}: needs a {DEFAULT_SCENARIO!r} scenario (the default)")
    return scenarios


def pick(scenario_id: str | None, path: Path = DEFAULT_FILE) -> Scenario:
    """The scenario asked for, or the default one when none (or an unknown one) is asked."""
    scenarios = load(path)
    return scenarios.get(scenario_id or DEFAULT_SCENARIO, scenarios[DEFAULT_SCENARIO])
