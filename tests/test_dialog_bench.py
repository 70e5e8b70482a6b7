"""`kaiwa bench dialog`'s reading of the stored turns: false interruptions and the ledger."""

from __future__ import annotations

import pytest

from kaiwa.bench.dialog import _false_interruptions, _pipeline_times

pytestmark = pytest.mark.unit


def turn(role: str, text: str, start_s: float, interrupted: bool = False, **timings: float) -> dict:
    return {
        "role": role,
        "text": text,
        "start_s": start_s,
        "interrupted": interrupted,
        "timings": timings,
    }


LINES = [
    turn("agent", "Hello!", 0.0, llm_first_token=0.0),
    turn("user", "Why is the sky blue?", 3.0, final_transcript=0.4, end_of_turn=0.9),
    turn("agent", "Sunlight scatters.", 5.0, llm_first_token=0.5, reply_first_frame=0.3),
    turn("user", "And the sea?", 9.0, end_of_turn=1.1),
    turn("agent", "It reflects the sky.", 11.0, True, llm_first_token=0.7),  # no first frame
    turn("user", "Tell me a story.", 15.0, end_of_turn=0.8),
    turn("agent", "Once upon a time", 17.0, True, llm_first_token=0.6, reply_first_frame=0.2),
]


def test_the_pipeline_time_pairs_each_question_with_its_reply() -> None:
    # Transcript and end of turn, then the reply's first token and first frame; a reply
    # without one of them is left out.
    assert [round(t, 3) for t in _pipeline_times(LINES)] == [2.1, 1.6]


def test_only_replies_interrupted_before_the_stories_are_false_interruptions() -> None:
    assert _false_interruptions(LINES) == 1
    assert _false_interruptions(LINES[:5]) is None  # no story asked for yet
