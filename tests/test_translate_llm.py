"""Translation through the real llama.cpp server: key terms, fan-out, cache, shared calls."""

from __future__ import annotations

import asyncio

import pytest
from openai import AsyncOpenAI

from agents.translate import GRAMMARS, Translator
from kaiwa.stack.services import Stack

pytestmark = pytest.mark.integration


def translator(base_url: str, model: str) -> Translator:
    return Translator(AsyncOpenAI(base_url=base_url, api_key="local"), model)


@pytest.fixture
def engine(stack: Stack) -> Translator:
    """The stack's own LLM server, on the default model."""
    return translator(stack.cfg.llm_base_url, stack.cfg.llm_model)


def japanese(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


# Each sentence with the words that carry its meaning: a translation carries it when it holds
# one of them. Quality over a whole set is what `kaiwa eval speech` measures and docs/
# reports; here the pipeline must carry meaning in every direction the product serves.
KEY_TERMS = [
    ("The weather is very nice today.", "en", "ja", ("天気", "今日")),
    ("I would like a cup of coffee, please.", "en", "vi", ("cà phê",)),
    ("駅はどこですか。", "ja", "en", ("station",)),
    ("コーヒーを一杯ください。", "ja", "en", ("coffee",)),
    ("Xin chào, hôm nay trời đẹp quá.", "vi", "en", ("today", "weather", "beautiful", "nice")),
    ("Tôi muốn mua một vé tàu đi Hà Nội.", "vi", "en", ("ticket", "train")),
]


async def test_key_terms_survive_translation(engine: Translator) -> None:
    """Small models say a word differently on another CPU: one sentence of six may miss."""
    translations = [
        await engine.translate_one(text, source, target) for text, source, target, _ in KEY_TERMS
    ]
    carried = [
        any(term in translated.lower() for term in terms)
        for translated, (*_, terms) in zip(translations, KEY_TERMS, strict=True)
    ]
    assert sum(carried) >= len(KEY_TERMS) - 1, translations


async def test_one_sentence_to_several_targets_without_repeated_work(engine: Translator) -> None:
    text = "The weather is very nice today."
    result = await engine.translate(text, "en", ["ja", "vi", "ja", "en"])
    assert set(result) == {"ja", "vi", "en"}
    assert result["en"] == text
    assert japanese(result["ja"]), result["ja"]
    assert result["vi"] and not japanese(result["vi"])
    assert engine.model_calls == 2
    again = await engine.translate(text, "en", ["vi", "ja"])
    assert again == {"vi": result["vi"], "ja": result["ja"]}
    assert engine.model_calls == 2


async def test_concurrent_requests_for_the_same_text_share_one_call(engine: Translator) -> None:
    results = await asyncio.gather(
        *(engine.translate_one("Good night, see you tomorrow.", "en", "ja") for _ in range(5))
    )
    assert len(set(results)) == 1 and results[0]
    assert engine.model_calls == 1


async def test_the_retry_grammar_keeps_chinese_and_japanese_characters_out(stack: Stack) -> None:
    """The server takes the retry's grammar and holds the model to it: asked to copy a line
    that is half kanji, the model may write only what a Vietnamese sentence can hold."""
    client = AsyncOpenAI(base_url=stack.cfg.llm_base_url, api_key="local")
    response = await client.chat.completions.create(
        model=stack.cfg.llm_model,
        temperature=0,
        max_tokens=40,
        messages=[
            {"role": "system", "content": "Copy the user's text exactly, character for character."},
            {"role": "user", "content": "東京駅 là ga Tokyo. 北京 là Bắc Kinh."},
        ],
        extra_body={"grammar": GRAMMARS["vi"]},
    )
    text = response.choices[0].message.content or ""
    assert text.strip() and not japanese(text), text
