"""The search bench runs end to end, small, and both databases return the same pages. Run
through the CLI, it is also the check that a bench measures its machine first."""

from __future__ import annotations

import json

import pytest

from kaiwa.bench import search

pytestmark = [pytest.mark.integration, pytest.mark.models]


def test_small_bench_agrees_across_databases(capsys: pytest.CaptureFixture[str]) -> None:
    assert search.main(["--segments", "5000", "--json"]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert result["same_results"] is True
    for database in ("sqlite", "postgresql"):
        figures = result[database]
        assert figures["conversations"] > 40
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
        assert sum(kind["n"] for kind in figures["by_kind"].values()) == result["queries"]
        # Most searches find something: the queries come from the generated history.
        assert figures["empty_pages"] < result["queries"] // 4
    # The machine's speeds, measured first: printed before anything else, and kept with the
    # figures.
    calibration = result["calibration"]
    assert printed.err.startswith("calibration: "), printed.err
    assert calibration["cores"] >= 1 and calibration["cpu_share"] == "all"
    assert calibration["llm_prompt_tokens_per_s"] > calibration["llm_generation_tokens_per_s"] > 0
    assert 0 < calibration["whisper_decode_s"] < 30
