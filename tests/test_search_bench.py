"""The search bench runs end to end, small, and both databases return the same pages."""

from __future__ import annotations

import json

import pytest

from kaiwa.bench import search

pytestmark = pytest.mark.integration


def test_small_bench_agrees_across_databases(capsys: pytest.CaptureFixture[str]) -> None:
    assert search.main(["--segments", "5000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same_results"] is True
    for database in ("sqlite", "postgresql"):
        figures = result[database]
        assert figures["conversations"] > 40
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
        assert sum(kind["n"] for kind in figures["by_kind"].values()) == result["queries"]
        # Most searches find something: the queries come from the generated history.
        assert figures["empty_pages"] < result["queries"] // 4
