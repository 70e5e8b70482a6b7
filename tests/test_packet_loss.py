"""An interpreted call whose callers sit behind a link that drops 10 % of its packets each way
(kaiwa/bench/loss.py: a network namespace, nftables): captions, translated voices, the history
and the recording must all still complete. How much worse it gets than without loss is the
bench's to say (`kaiwa bench loss`, docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from kaiwa.bench.loss import LossyLink, call_over, lossy_link
from kaiwa.stack.services import Stack

from .support.servers import SMALL_LLM, make_stack_config, running_stack

# No model content is checked beyond what was heard: the small LLM translates.
pytestmark = [pytest.mark.e2e, pytest.mark.models]

SCRIPT = [
    ("en", ["Good morning.", "I would like a cup of coffee, please."]),
    ("ja", ["おはようございます。", "ホットとアイス、どちらにしますか。"]),
    ("en", ["How much is it?"]),
    ("ja", ["はい、カードで払えます。"]),
]
LOSS = 10


@pytest.fixture(scope="module")
def link() -> Iterator[LossyLink]:
    with lossy_link() as made:
        yield made


@pytest.fixture(scope="module")
def stack(link: LossyLink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = make_stack_config(tmp_path_factory.mktemp("loss"), llm_model=SMALL_LLM)
    with running_stack(replace(cfg, livekit_link_ip=link.host_ip)) as running:
        yield running


async def test_an_interpreted_call_completes_over_a_lossy_link(
    stack: Stack, link: LossyLink
) -> None:
    result = await call_over(stack.cfg, link, LOSS, SCRIPT)

    # The loss was real: the rules dropped about a tenth of what crossed, each way.
    for way in ("inbound", "outbound"):
        assert 0.05 <= result["dropped_share"][way] <= 0.16, result["dropped_share"]
    # Every turn was captioned in the listener's language and its translation heard.
    assert result["turns_with_translated_caption"] == result["turns"], result
    assert result["turns_with_translated_voice"] == result["turns"], result
    # What was said was still understood, with room for a word lost to the network.
    assert result["wer_en"] is not None and result["wer_en"] <= 0.5, result
    assert result["cer_ja"] is not None and result["cer_ja"] <= 0.5, result
    # The history holds every turn with its translation.
    assert result["lines_translated"] >= result["turns"], result
    # The recording holds both callers and the mix, with most of their speech in it.
    recording = result["recording"]
    assert recording["recordings_stored"] >= 3, recording
    assert set(recording["speech_kept"]) == {"en", "ja"}, recording
    assert all(kept >= 0.7 for kept in recording["speech_kept"].values()), recording
    assert recording["mix_duration_ratio"] >= 0.8, recording
