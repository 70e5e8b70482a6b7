"""Translation through the real llama.cpp server: key terms, fan-out, cache, shared calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from agents.translate import Translator
from kaiwa.stack.services import Stack, llm_service

from .servers import make_stack_config

pytestmark = pytest.mark.integration


def translator(base_url: str, model: str) -> Translator:
    return Translator(AsyncOpenAI(base_url=base_url, api_key="local"), model)


@pytest.fixture
def small(stack: Stack) -> Translator:
    """The stack's own LLM server, on the small test model."""
    return translator(stack.cfg.llm_base_url, stack.cfg.llm_model)


@pytest.fixture(scope="module")
def default_model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = make_stack_config(Path(tmp_path_factory.mktemp("llm")))
    cfg = type(cfg)(**{**cfg.__dict__, "llm_model": "qwen2.5-1.5b-instruct"})
    server = llm_service(cfg)
    server.start()
    try:
        server.wait_ready()
        yield cfg.llm_base_url
    finally:
        server.stop()


def japanese(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


# Sentences the engines translate reliably. These tests check the pipeline carries meaning;
# quality over a whole set is what `kaiwa eval speech` measures and docs/ reports.
async def test_key_terms_survive_translation(small: Translator) -> None:
    ja = await small.translate_one("The weather is very nice today.", "en", "ja")
    assert "天気" in ja, ja
    en = await small.translate_one("駅はどこですか。", "ja", "en")
    assert "station" in en.lower(), en
    en = await small.translate_one("Xin chào, hôm nay trời đẹp quá.", "vi", "en")
    assert "today" in en.lower(), en


async def test_one_sentence_to_several_targets_without_repeated_work(small: Translator) -> None:
    text = "The weather is very nice today."
    result = await small.translate(text, "en", ["ja", "vi", "ja", "en"])
    assert set(result) == {"ja", "vi", "en"}
    assert result["en"] == text
    assert japanese(result["ja"]), result["ja"]
    assert result["vi"] and not japanese(result["vi"])
    assert small.model_calls == 2
    again = await small.translate(text, "en", ["vi", "ja"])
    assert again == {"vi": result["vi"], "ja": result["ja"]}
    assert small.model_calls == 2


async def test_concurrent_requests_for_the_same_text_share_one_call(small: Translator) -> None:
    results = await asyncio.gather(
        *(small.translate_one("Good night, see you tomorrow.", "en", "ja") for _ in range(5))
    )
    assert len(set(results)) == 1 and results[0]
    assert small.model_calls == 1


async def test_default_model_carries_meaning_between_en_ja_vi(default_model_url: str) -> None:
    default = translator(default_model_url, "qwen2.5-1.5b-instruct")
    vi = await default.translate_one("I would like a cup of coffee, please.", "en", "vi")
    assert "cà phê" in vi.lower(), vi
    ja = await default.translate_one("The weather is very nice today.", "en", "ja")
    assert "天気" in ja, ja
    en = await default.translate_one("コーヒーを一杯ください。", "ja", "en")
    assert "coffee" in en.lower(), en
