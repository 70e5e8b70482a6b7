"""`kaiwa eval dialog`: does each scenario's agent answer sensibly, in its part?

Each shipped scenario gets its scripted caller turns (dialog_turns.toml), said one after
another in one conversation, as a caller would: the agent's opening first, then each turn
and the model's own reply to it. The replies come from the dialog's own language model
client (agents.roles.make_llm, the scenario's system prompt), so the figures are what a
caller meets, less speech.

A reply is sensible when it passes every rule, checked on its text, never by a model judging
itself: the turn's own (what it must hold: a price, a platform, a question back), and the
scenario's (its language, no markdown, code or lists, within its spoken length).
"""

from __future__ import annotations

import re
import statistics
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import llm

from agents.roles import chat_text, make_llm
from agents.settings import AgentSettings
from core import scenarios
from core.scenarios import Scenario

TURNS = Path(__file__).with_name("dialog_turns.toml")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")
_MARKUP = re.compile(
    r"\*\*|`|^\s*#|^\s*[-*•]\s|^\s*\d+[.)]\s|[\U0001F300-\U0001FAFF\u2600-\u27BF]", re.M
)
_SENTENCE_END = re.compile(r"[。！？]+|[.!?]+(?=\s|$|[」』）)\"])")
_QUESTION = re.compile(r"[?？]|か[。．]?\s*$|か[。．]", re.M)
_PRICE = re.compile(
    r"[0-9０-９〇一二三四五六七八九十百千万,]+\s*円|\$\s?\d|\d+\s*(?:dollars|yen)\b", re.I
)
# Brand names and sizes (Suica, PASMO, S, M, L) may be in Latin letters in Japanese.
_MOST_LATIN_IN_JAPANESE = 10


@dataclass(frozen=True)
class Turn:
    says: str
    any: tuple[str, ...] = ()
    rule: str | None = None


def load_turns(path: Path = TURNS) -> dict[str, list[Turn]]:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        scenario: [Turn(t["says"], tuple(t.get("any", ())), t.get("rule")) for t in turns]
        for scenario, turns in raw.items()
    }


def problems(reply: str, turn: Turn, scenario: Scenario) -> list[str]:
    """What makes `reply` not a sensible answer to `turn` in `scenario`; empty if none."""
    text = reply.strip()
    if not text:
        return ["empty"]
    found = []
    if scenario.language.startswith("ja"):
        cjk = len(_CJK.findall(text))
        if cjk < len(_LATIN.findall(text)) or len(_LATIN.findall(text)) > _MOST_LATIN_IN_JAPANESE:
            found.append("not Japanese")
    elif len(_CJK.findall(text)) > 0.3 * sum(c.isalpha() for c in text):
        # A word quoted in another script ("ありがとう" is thank you) is still an answer.
        found.append(f"not {scenario.language_name()}")
    if _MARKUP.search(text):
        found.append("markup")
    sentences = len(_SENTENCE_END.findall(text)) or 1
    # One sentence over: a short interjection ("はい。", "Sure.") is speech too.
    if sentences > scenario.max_reply_sentences + 1:
        found.append(f"{sentences} sentences")
    lowered = text.lower()
    holds_word = any(word.lower() in lowered for word in turn.any)
    holds_rule = {"question": _QUESTION, "price": _PRICE}.get(turn.rule or "")
    # A turn with both passes on either: a beginner's small talk is answered sensibly by
    # taking up what they said or by asking them more.
    if turn.any and turn.rule and (holds_word or (holds_rule and holds_rule.search(text))):
        return found
    if turn.any and not holds_word:
        found.append(f"none of {list(turn.any)}")
    if turn.rule == "question" and not _QUESTION.search(text):
        found.append("no question back")
    if turn.rule == "price" and not _PRICE.search(text):
        found.append("no price")
    return found


async def score_scenario(
    model: llm.LLM[Any], scenario: Scenario, turns: list[Turn]
) -> dict[str, Any]:
    chat = llm.ChatContext()
    chat.add_message(role="system", content=scenario.system_prompt())
    chat.add_message(role="assistant", content=scenario.opening)
    results = []
    seconds = []
    for turn in turns:
        chat.add_message(role="user", content=turn.says)
        started = time.perf_counter()
        said = await chat_text(model, chat)
        seconds.append(time.perf_counter() - started)
        chat.add_message(role="assistant", content=said)
        results.append(
            {"says": turn.says, "reply": said, "problems": problems(said, turn, scenario)}
        )
    sensible = sum(not r["problems"] for r in results)
    return {
        "sensible": sensible,
        "turns": len(results),
        "share": round(sensible / len(results), 2),
        "median_reply_s": round(statistics.median(seconds), 2),
        "replies": results,
    }


async def evaluate(llm_url: str, llm_model: str) -> dict[str, Any]:
    model = make_llm(AgentSettings(llm_base_url=llm_url, llm_model=llm_model))
    catalogue = scenarios.load()
    figures: dict[str, Any] = {"llm_model": llm_model, "scenarios": {}}
    for scenario_id, turns in load_turns().items():
        figures["scenarios"][scenario_id] = await score_scenario(
            model, catalogue[scenario_id], turns
        )
    await model.aclose()
    return figures


def table(figures: dict[str, Any]) -> str:
    lines = [
        f"Dialog ({figures['llm_model']}): sensible replies per scenario",
        f"  {'scenario':<26}{'sensible':>10}{'reply s':>9}",
    ]
    for scenario_id, result in figures["scenarios"].items():
        lines.append(
            f"  {scenario_id:<26}{result['sensible']:>5}/{result['turns']:<4}"
            f"{result['median_reply_s']:>9.2f}"
        )
    for scenario_id, result in figures["scenarios"].items():
        for turn in result["replies"]:
            if turn["problems"]:
                lines.append(f"  {scenario_id}: {turn['says']!r} -> {turn['reply']!r}")
                lines.append(f"      {', '.join(turn['problems'])}")
    return "\n".join(lines)
