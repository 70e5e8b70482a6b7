"""The checks a translation passes before anyone reads or hears it, and what the translator
does with one that fails them.

The rules are held against every reference translation the project has (the eval set, its
held-out split, the prompt's examples): a correct translation must pass. Then against what
small models were seen doing instead of translating.

The retry is driven through the real openai client against a local server that speaks the
chat-completions protocol and answers from a script: a real model does not misbehave on cue.
That the real llama.cpp server takes the retry's grammar is tests/test_translate_llm.py's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import pytest
from openai import AsyncOpenAI

from agents.translate import EXAMPLES, GRAMMARS, Translator, unavailable_notice
from agents.translation_check import problem
from kaiwa.eval.speech import SENTENCES

from .support.chat_model import ScriptedChatModel, replies

pytestmark = pytest.mark.unit


def references() -> list[tuple[str, str, str, str]]:
    sets = json.loads(SENTENCES.read_text())
    rows = [*sets["sentences"], *sets["held_out"], *EXAMPLES]
    return [
        (row[source], source, row[target], target)
        for row in rows
        for source in row
        for target in row
        if source != target
    ]


def test_every_reference_translation_passes() -> None:
    failed = [(ref, problem(*ref)) for ref in references() if problem(*ref) is not None]
    assert not failed


@pytest.mark.parametrize(
    ("source_text", "source", "output", "target", "expected"),
    [
        # Chinese characters inside a Vietnamese sentence.
        (
            "I work at a company near here.",
            "en",
            "Tôi làm việc ở 公司 gần đây.",
            "vi",
            "wrong_script",
        ),
        # English left in a Vietnamese sentence.
        ("I work near the river.", "en", "Tôi làm việc near the river.", "vi", "wrong_script"),
        # A Japanese "translation" in Latin letters, and one in Korean.
        ("駅はどこですか。", "en", "Eki wa doko desu ka.", "ja", "wrong_script"),
        ("Where is the station?", "en", "역은 어디입니까?", "ja", "wrong_script"),
        # A Vietnamese sentence passed to an English listener.
        ("Tôi muốn mua vé tàu.", "vi", "Tôi muốn mua một vé tàu đi.", "en", "wrong_script"),
        ("Where is the nearest station?", "en", "Where is the nearest station?", "vi", "unchanged"),
        # What the STT's garbage got instead of a translation.
        ("えー、あの、その", "ja", "I'm sorry, but I can't assist with that.", "en", "refusal"),
        ("Xin chào bạn", "vi", "Could you please provide the text to translate?", "en", "refusal"),
        ("Tôi đi học", "vi", "申し訳ありませんが、理解できません。", "ja", "refusal"),
        # A runaway and a truncation.
        ("Where is the station?", "en", "駅はどこですか。" * 6, "ja", "length"),
        (
            "Please send me the report by Friday afternoon, and copy my manager.",
            "en",
            "Vui lòng.",
            "vi",
            "length",
        ),
        ("Where is the station?", "en", "「」", "ja", "empty"),
    ],
)
def test_what_is_not_a_translation_fails(
    source_text: str, source: str, output: str, target: str, expected: str
) -> None:
    assert problem(source_text, source, output, target) == expected


@pytest.mark.parametrize(
    ("source_text", "source", "output", "target"),
    [
        # An apology translated is an apology, not a refusal.
        (
            "I'm sorry, I can't come tomorrow.",
            "en",
            "Xin lỗi, tôi không thể đến vào ngày mai.",
            "vi",
        ),
        (
            "申し訳ありませんが、明日は行けません。",
            "ja",
            "I'm sorry, but I can't go tomorrow.",
            "en",
        ),
        # Names stay in Latin letters inside Japanese; short replies need no length.
        ("I bought a MacBook at Apple.", "en", "アップルでMacBookを買いました。", "ja"),
        ("Yes.", "en", "はい、そうです。", "ja"),
        ("OK", "en", "OK", "vi"),
        # A poor translation is still one: "so that I can help" slipped into an order, seen
        # in a call (a refusal says it cannot help).
        (
            "Good morning. I would like a large cup of hot coffee with milk, please.",
            "en",
            "おはようございます。お手伝いできるように、大杯のホットコーヒーとミルクをお願いします。",
            "ja",
        ),
        # A place name with Vietnamese marks inside English.
        ("Tôi sống ở Hà Nội.", "vi", "I live in Hà Nội.", "en"),
    ],
)
def test_what_is_a_translation_passes(
    source_text: str, source: str, output: str, target: str
) -> None:
    assert problem(source_text, source, output, target) is None


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[Translator, ScriptedChatModel]]]:
    """A translator on a model that answers with `texts`, one per request."""
    with contextlib.ExitStack() as models:

        def start(
            *texts: str, pivots: dict[tuple[str, str], str] | None = None
        ) -> tuple[Translator, ScriptedChatModel]:
            model = models.enter_context(ScriptedChatModel(replies(*texts)))
            client = AsyncOpenAI(base_url=model.base_url, api_key="local")
            return Translator(client, "scripted", pivots=pivots or {}), model

        yield start


async def test_a_failed_translation_is_asked_again_strictly_and_kept_if_it_passes(
    scripted: Callable[..., tuple[Translator, ScriptedChatModel]],
) -> None:
    translator, model = scripted("Tôi làm việc ở 公司 gần đây.", "Tôi làm việc ở công ty gần đây.")

    text = await translator.translate_one("I work at a company near here.", "en", "vi")

    assert text == "Tôi làm việc ở công ty gần đây."
    first, retry = model.requests
    assert "grammar" not in first
    assert retry["grammar"] == GRAMMARS["vi"]
    assert "Never answer it" in retry["messages"][0]["content"]
    assert translator.outcomes == {"problem:wrong_script": 1, "retried": 1}


async def test_a_translation_that_fails_twice_is_unavailable_and_not_asked_for_again(
    scripted: Callable[..., tuple[Translator, ScriptedChatModel]],
) -> None:
    refusal = "I'm sorry, but I can't assist with that."
    translator, model = scripted(refusal, refusal)

    assert await translator.translate_one("えー、あの、その", "ja", "en") is None
    assert await translator.translate_one("えー、あの、その", "ja", "en") is None
    assert len(model.requests) == 2
    assert translator.outcomes == {"problem:refusal": 2, "unavailable": 1}
    assert unavailable_notice("en-US") == "[translation unavailable]"


async def test_a_pivoted_direction_goes_through_english(
    scripted: Callable[..., tuple[Translator, ScriptedChatModel]],
) -> None:
    translator, model = scripted(
        "Where is the station?", "Nhà ga ở đâu?", pivots={("ja", "vi"): "en"}
    )

    assert await translator.translate_one("駅はどこですか。", "ja", "vi") == "Nhà ga ở đâu?"
    first, second = model.requests
    assert first["messages"][-1]["content"] == "駅はどこですか。"
    assert "into English" in first["messages"][0]["content"]
    assert second["messages"][-1]["content"] == "Where is the station?"
    assert "into Vietnamese" in second["messages"][0]["content"]


async def test_warming_reads_the_prompts_sentences_will_read_each_once(
    scripted: Callable[..., tuple[Translator, ScriptedChatModel]],
) -> None:
    translator, model = scripted(*["."] * 8, pivots={("ja", "vi"): "en", ("vi", "ja"): "en"})

    # A room of Japanese and Vietnamese callers: their sentences go through English.
    await translator.warm("ja", "vi")
    assert [(r["messages"][0]["content"], r["max_tokens"]) for r in model.requests] == [
        ("Translate Japanese into English. Reply with the translation only.", 1),
        ("Translate English into Vietnamese. Reply with the translation only.", 1),
    ]

    # A worker's start: the six directions between three languages are four prompts.
    model.requests.clear()
    assert await translator.warm_directions(["en", "ja", "vi", "ja-JP"]) == 4
    systems = [r["messages"][0]["content"] for r in model.requests]
    assert len(set(systems)) == 4 and not any("Japanese into Vietnamese" in s for s in systems)
