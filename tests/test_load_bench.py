"""The capacity bench's step on the session's stack, one room of each mode, so that the
harness stays honest: every line measured at the callers, the processes' CPU read, and the
worker's stage histograms and queues sampled. The ramp itself is `kaiwa bench load`
(docs/operations.md)."""

from __future__ import annotations

import pytest

from kaiwa.bench import load
from kaiwa.stack.services import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.models]


@pytest.mark.parametrize("mode", ["dialog", "interpret"])
async def test_one_step_of_the_ramp_measures_every_line(
    stack: Stack, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "LINES_PER_STEP", 2)
    result = await load.step(stack, mode, rooms=1)

    callers = 2 if mode == "interpret" else 1
    assert result["lines"] == 2 * callers, result
    assert result["lag_s_median"] is not None and result["lag_s_median"] > 0, result
    assert result["unanswered"] <= 1, result
    assert result["cpu_cores"]["agent"] > 0 and result["cpu_cores"]["llm"] > 0, result
    assert result["rss_mib"]["llm"] > 100, result
    stage = "translation" if mode == "interpret" else "llm_first_token"
    assert stage in result["stage_mean_s"], result
    if mode == "interpret":
        assert {"untranslated", "voice_sentences"} <= result["queue_depth_max"].keys(), result
