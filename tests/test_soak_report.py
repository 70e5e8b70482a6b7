"""How the soak harness tells a leak from noise (kaiwa/bench/soak.py)."""

from __future__ import annotations

import os

import pytest

from kaiwa.bench.common import group_stats, metric_values
from kaiwa.bench.soak import Series, cache_filled, judge_queue

pytestmark = pytest.mark.unit


def series(values: list[float], every_s: float = 10.0) -> Series:
    return Series([(i * every_s, v) for i, v in enumerate(values)])


def test_a_flat_but_noisy_series_passes() -> None:
    noisy = [100.0 + (5 if i % 2 else -5) for i in range(180)]  # 30 minutes, ±5
    report = series(noisy).report(baseline_s=300, run_s=1800, floor=1)
    assert report["passed"] is True, report


def test_a_steady_climb_past_the_baselines_spread_fails() -> None:
    climbing = [100.0 + i * 0.5 + (1 if i % 2 else -1) for i in range(180)]  # +180 per hour
    report = series(climbing).report(baseline_s=300, run_s=1800, floor=1)
    assert report["passed"] is False
    assert report["slope_per_h"] == pytest.approx(180, rel=0.05)


def test_a_series_flat_in_its_baseline_is_judged_against_its_floor() -> None:
    # One descriptor more at the end: not a leak, within the floor of 4.
    fds = [20.0] * 170 + [21.0] * 10
    assert series(fds).report(baseline_s=300, run_s=1800, floor=4)["passed"] is True


def test_too_few_samples_are_not_judged() -> None:
    assert series([1.0, 2.0]).report(baseline_s=300, run_s=1800, floor=1)["passed"] is None


def test_a_queue_in_use_passes_and_one_that_never_drains_fails() -> None:
    # Empty in its baseline, then an item in flight now and then, one at the last sample.
    in_use = [0.0] * 6 + [0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert judge_queue(series(in_use), judged_from_s=60)["passed"] is True
    # Backing up: it never drains again.
    backing_up = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0] + [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0]
    report = judge_queue(series(backing_up), judged_from_s=60)
    assert report["passed"] is False and report["end_min"] == 4.0, report


def test_a_process_group_is_measured_whole() -> None:
    stats = group_stats(os.getpgid(0))
    assert stats["rss_bytes"] > 10 << 20 and stats["fds"] >= 3 and stats["threads"] >= 1


def test_metric_values_by_label() -> None:
    page = (
        '# TYPE kaiwa_queue_depth gauge\nkaiwa_queue_depth{queue="a"} 2.0\n'
        'kaiwa_queue_depth{queue="b"} 0.0\n# TYPE kaiwa_asyncio_tasks gauge\n'
        "kaiwa_asyncio_tasks 17.0\n"
    )
    assert metric_values(page, "kaiwa_queue_depth", "queue") == {"a": 2.0, "b": 0.0}
    assert metric_values(page, "kaiwa_asyncio_tasks") == {"": 17.0}
    errors = (
        "# TYPE kaiwa_llm_errors counter\n"
        'kaiwa_llm_errors_total{mode="dialog",reason="timeout"} 3.0\n'
        'kaiwa_llm_errors_total{mode="dialog",reason="refused"} 1.0\n'
    )
    assert metric_values(errors, "kaiwa_llm_errors_total", "mode") == {"dialog": 4.0}
    assert metric_values(errors, "kaiwa_llm_errors_total", "reason") == {
        "timeout": 3.0,
        "refused": 1.0,
    }


def test_a_leak_already_climbing_in_the_baseline_is_still_caught() -> None:
    # +1 per sample from the start, with no noise: the baseline's spread around its trend is 0.
    leaking = [100.0 + i for i in range(180)]
    report = series(leaking).report(baseline_s=300, run_s=1800, floor=8)
    assert report["passed"] is False and report["slope_per_h"] == pytest.approx(360)


def test_memory_handed_back_is_not_a_leak() -> None:
    # A cache evicting after the baseline: the series falls, by more than the threshold.
    falling = [2200.0] * 60 + [2200.0 - i for i in range(120)]
    report = series(falling).report(baseline_s=300, run_s=1800, floor=32)
    assert report["slope_per_h"] < -report["threshold_per_h"]
    assert report["passed"] is True


def warming_up(then_per_sample: float) -> list[float]:
    """15 minutes climbing as a cache fills (+2 a sample), then 30 going on at the given rate,
    with a little noise all along."""
    warmup = [100.0 + 2 * i for i in range(90)]
    rest = [warmup[-1] + then_per_sample * i for i in range(180)]
    return [v + (1 if i % 2 else -1) for i, v in enumerate(warmup + rest)]


def test_a_cache_filling_in_the_warmup_is_not_judged() -> None:
    levels_off = series(warming_up(0.0))
    assert levels_off.report(baseline_s=300, run_s=2700, floor=8, warmup_s=900)["passed"] is True
    # The same series judged from the start: its climb reads as a leak.
    assert levels_off.report(baseline_s=300, run_s=2700, floor=8)["passed"] is False


def test_a_climb_that_goes_on_after_the_warmup_fails() -> None:
    report = series(warming_up(0.5)).report(baseline_s=300, run_s=2700, floor=8, warmup_s=900)
    assert report["passed"] is False
    assert report["slope_per_h"] == pytest.approx(180, rel=0.05)
    assert report["first"] < report["baseline_first"]


MIB = float(1 << 20)


def test_the_llm_cache_is_full_once_memory_rose_and_then_stopped_rising() -> None:
    # As measured: two prompts fill the slots, five are saved, then the cache evicts.
    rises = [70 * MIB, 40 * MIB, 39 * MIB, 39 * MIB, 38 * MIB, 39 * MIB, 38 * MIB, 0.0]
    assert not cache_filled(rises)
    assert cache_filled([*rises, 1 * MIB])


def test_a_cache_that_never_rose_is_not_called_full() -> None:
    # A server that saved nothing (its cache off, or the prompts never reached it): the
    # flat memory says nothing about a bound.
    assert not cache_filled([0.0, 1 * MIB, 0.0, 0.0])


def test_one_flat_prompt_between_rises_is_not_the_end() -> None:
    assert not cache_filled([40 * MIB, 0.0, 40 * MIB])
