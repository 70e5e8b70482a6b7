"""A translation that fails every check, or that the model server fails, on the real stack:
the listener is told, not misled, and not left waiting in silence.

The stack runs as users run it, except that its agent worker's language model is a
stand-in that answers every request with a refusal, or with an error (tests/support/
chat_model.py): a real model refuses only now and then, on garbled speech, and a real
server fails when it is overloaded or broken. Everything else is real: the caller's
speech is heard by Whisper, and the captions, voices and history are the product's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from agents.translate import unavailable_notice
from kaiwa.stack.services import Stack

from .support.calls import History, interpreted_pair, keyword_share, speech, voiced, wait_for
from .support.chat_model import ModelServerError, Request, ScriptedChatModel
from .support.servers import SMALL_LLM, make_stack_config, running_stack
from .test_interpret_e2e import STATION, STATION_WORDS, finals, text_of

pytestmark = [pytest.mark.e2e, pytest.mark.models]

REFUSAL = "I'm sorry, but I can't assist with that."


@pytest.fixture(scope="module")
def refusing_model() -> Iterator[ScriptedChatModel]:
    with ScriptedChatModel(lambda _request: REFUSAL) as model:
        yield model


@pytest.fixture(scope="module")
def refusing_stack(
    refusing_model: ScriptedChatModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # Its own LLM server serves nothing here: the smallest model keeps it cheap.
    cfg = make_stack_config(tmp_path_factory.mktemp("refusing-stack"), llm_model=SMALL_LLM)
    cfg = dataclasses.replace(
        cfg, extra_env={**cfg.extra_env, "LLM_BASE_URL": refusing_model.base_url}
    )
    with running_stack(cfg) as running:
        yield running


async def test_a_translation_that_fails_every_check_is_captioned_as_unavailable(
    refusing_stack: Stack, refusing_model: ScriptedChatModel
) -> None:
    async with interpreted_pair(refusing_stack.cfg.api_url) as (alice, kenji):
        await alice.say(*speech("en", STATION))
        await wait_for(lambda: finals(kenji, "ja", source=False), 40, "Kenji's caption", kenji)
        await asyncio.sleep(3)  # a voice, had one been started, would be heard by now

        # The source caption went out as heard; in its translation's place, the notice.
        source = finals(kenji, "en", source=True)
        assert keyword_share(text_of(source), STATION_WORDS) >= 0.5, source
        translated = finals(kenji, "ja", source=False)
        assert [t.text for t in translated] == [unavailable_notice("ja")] * len(source)
        # The model was asked twice per sentence, the second time strictly.
        asked = [r for r in refusing_model.requests if r["max_tokens"] > 1]
        assert len(asked) == 2 * len(source), asked
        assert all("Never answer it" in r["messages"][0]["content"] for r in asked[1::2])
        # Nothing was spoken in Japanese.
        assert not any(voiced(frame) for frame in kenji.heard), "a voice spoke the notice"
        # The sentence is stored, without the translation that failed.
        history = History(refusing_stack, alice.room_name or "")
        ids = {s.attributes["lk.segment_id"] for s in source}
        stored = await history.wait_for_segments(ids)
        assert {s["id"] for s in stored} >= ids, stored
        assert all(s["translations"] == {} for s in stored if s["id"] in ids), stored


def _overloaded(_request: Request) -> str:
    raise ModelServerError(503)


async def test_a_translation_the_model_server_fails_is_captioned_as_unavailable(
    refusing_stack: Stack, refusing_model: ScriptedChatModel
) -> None:
    """Retried by the client, the request still fails: the listener sees the notice in the
    translation's place, at once, and the call goes on."""
    refusing_model.answer = _overloaded
    try:
        async with interpreted_pair(refusing_stack.cfg.api_url) as (alice, kenji):
            asked_before = len(refusing_model.requests)
            said = await alice.deliver("The museum opens at ten.")

            def translated() -> list[str]:
                return [
                    t.text
                    for t in kenji.texts
                    if t.attributes.get("kaiwa.source_segment_id") == said
                ]

            await wait_for(translated, 40, "Kenji's caption of the translation", kenji)
            assert translated() == [unavailable_notice("ja")]
            assert len(refusing_model.requests) > asked_before, "the model was never asked"
            await asyncio.sleep(3)  # a voice, had one been started, would be heard by now
            assert not any(voiced(frame) for frame in kenji.heard), "a voice spoke the notice"
    finally:
        refusing_model.answer = lambda _request: REFUSAL
