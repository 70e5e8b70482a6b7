"""How the capacity bench reads its figures (kaiwa/bench/load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaiwa.bench.load import capacities, first_to_give, plot, queue_drops, stage_means

pytestmark = pytest.mark.unit


def page(translation_sum: float, translation_count: int, dropped: float) -> str:
    ja = 'mode="interpret",stage="translation",language="ja"'
    return (
        "# TYPE kaiwa_stage_seconds histogram\n"
        f"kaiwa_stage_seconds_sum{{{ja}}} {translation_sum}\n"
        f"kaiwa_stage_seconds_count{{{ja}}} {translation_count}\n"
        'kaiwa_stage_seconds_sum{mode="interpret",stage="translation",language="en"} 1.0\n'
        'kaiwa_stage_seconds_count{mode="interpret",stage="translation",language="en"} 1\n'
        'kaiwa_stage_seconds_sum{mode="dialog",stage="llm_first_token",language="en"} 9.0\n'
        'kaiwa_stage_seconds_count{mode="dialog",stage="llm_first_token",language="en"} 3\n'
        "# TYPE kaiwa_queue_dropped_total counter\n"
        f'kaiwa_queue_dropped_total{{queue="untranslated"}} {dropped}\n'
        'kaiwa_queue_dropped_total{queue="speaker_audio"} 2.0\n'
    )


def test_stage_means_cover_only_what_happened_between_two_scrapes() -> None:
    # Before: 2 translations took 3 s; after: 6 took 15 s. The 4 between took 12 s: 3 s each.
    means = stage_means(page(3.0, 2, 0), page(15.0, 6, 0), "interpret")
    assert means == {"translation": 3.0}
    assert stage_means(page(3.0, 2, 0), page(3.0, 2, 0), "interpret") == {}


def test_queue_drops_are_the_increase_of_each_counter() -> None:
    assert queue_drops(page(0, 0, 1.0), page(0, 0, 4.0)) == {"untranslated": 3.0}


def test_what_gives_first_is_the_stage_that_grew_most() -> None:
    steps = [
        {"stage_mean_s": {"translation": 1.2, "first_frame": 0.2}, "queue_depth_max": {}},
        {
            "stage_mean_s": {"translation": 3.9, "first_frame": 0.5},
            "queue_depth_max": {"untranslated": 3.0, "voice_sentences": 1.0},
            "queue_drops": {},
        },
    ]
    found = first_to_give(steps)
    assert found is not None
    assert found["stage"] == "translation" and found["deepest_queue"] == "untranslated"
    assert first_to_give(steps[:1]) is None


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    step = {"rooms": 1, "lag_s_median": 2.0, "lag_s_p95": 2.5}
    results = {
        "modes": {
            "dialog": {"steps": [step, {**step, "rooms": 2, "lag_s_p95": 3.4}]},
            "interpret": {"steps": [step]},
        }
    }
    plot(results, tmp_path / "load.png")
    assert (tmp_path / "load.png").read_bytes().startswith(b"\x89PNG")


def test_capacity_is_the_last_step_of_an_unbroken_run_of_passes() -> None:
    def step(rooms: int, median: float, p95: float, unanswered: int = 0) -> dict[str, object]:
        passed = p95 < 3.0 and unanswered == 0
        return {"rooms": rooms, "lag_s_median": median, "lag_s_p95": p95, "passed": passed,
                "unanswered": unanswered, "dropped_translations": 0}  # fmt: skip

    ramp = [step(1, 2.0, 2.8), step(2, 2.4, 2.9), step(3, 2.6, 3.4), step(4, 2.3, 2.9)]
    # Step 4 passes again by chance: capacity stops at the first failure.
    assert capacities(ramp) == {"capacity_rooms": 2, "rooms_at_one_room_lag": 2}
    # One room already over the limit: no capacity by the limit, but lag grows only at 3.
    slow = [step(1, 3.0, 4.4), step(2, 3.2, 4.6), step(3, 4.1, 5.0, unanswered=1)]
    assert capacities(slow) == {"capacity_rooms": 0, "rooms_at_one_room_lag": 2}
