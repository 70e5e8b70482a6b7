"""How `kaiwa bench interpret` turns what the callers received into lags and cadences."""

from __future__ import annotations

import numpy as np
import pytest

from kaiwa.bench.interpret import (
    Turn,
    _onsets,
    _pipeline_times,
    compared,
    distance_to_floor,
    figures_of,
)
from kaiwa.caller import HeardAudio, ReceivedText, SyntheticCaller

pytestmark = pytest.mark.unit

SPEECH = np.full(480, 4000, dtype=np.int16)
SILENCE = np.zeros(480, dtype=np.int16)


def frames(track: str, spans: list[tuple[float, float]], until: float) -> list[HeardAudio]:
    """10 ms frames from 0 to `until`, voiced inside the spans."""
    out = []
    for i in range(int(until * 100)):
        at = i / 100
        voiced = any(start <= at < end for start, end in spans)
        samples = SPEECH if voiced else SILENCE
        out.append(HeardAudio(at, "agent", track, 48000, samples, int(samples.max())))
    return out


def caption(at: float, text: str, final: bool, **extra: str) -> ReceivedText:
    attributes = {
        "lk.transcribed_track_id": "TR_a",
        "lk.transcription_final": "true" if final else "false",
        "language": "en",
        **extra,
    }
    return ReceivedText(at, "agent", "lk.transcription", text, attributes)


def test_onsets_are_speech_after_a_pause() -> None:
    heard = frames("t", [(1.0, 2.0), (2.1, 2.5), (3.0, 4.0)], until=5)
    assert [round(t, 2) for t in _onsets(heard)] == [1.0, 3.0]


async def test_lags_are_measured_per_sentence_at_the_listener() -> None:
    alice = SyntheticCaller("http://x", name="Alice", language="en")
    kenji = SyntheticCaller("http://x", name="Kenji", language="ja")
    turn = Turn(alice, kenji, ["Good morning.", "A coffee, please."], started=0.0)
    turn.sentence_ends = [2.0, 5.0]
    turn.track_sid = "TR_a"
    turn.until = 20.0
    kenji.texts = [
        caption(1.0, "Good", False),
        caption(1.8, "Good morning", False),
        caption(2.5, "Good morning.", True),
        caption(3.5, "A coffee", False),
        caption(6.0, "A coffee, please.", True),
        # A translation is not a source caption.
        caption(6.5, "コーヒー", True, language="ja", **{"kaiwa.source_segment_id": "s"}),
    ]
    kenji.heard = frames("TR_a-ja", [(4.0, 5.5), (8.0, 9.0)], until=10)

    figures = figures_of([turn])

    assert figures["caption_lag_s_median"] == pytest.approx(0.75)  # 0.5 and 1.0
    assert figures["translation_lag_s_median"] == pytest.approx(2.5)  # 2.0 and 3.0
    # The turn's last sentence, the one whose end of speech the interpreter times.
    assert figures["turn_end_to_voice_s_median"] == pytest.approx(3.0)
    assert figures["sentences_unmatched"] == 0
    # Updates while Alice spoke (until 5.0): 1.0, 1.8, 2.5, 3.5.
    assert figures["interim_interval_s_max"] == pytest.approx(1.0)


async def test_a_caption_holding_two_sentences_completes_both() -> None:
    alice = SyntheticCaller("http://x", name="Alice", language="en")
    kenji = SyntheticCaller("http://x", name="Kenji", language="ja")
    turn = Turn(alice, kenji, ["One.", "Two."], started=0.0, until=20.0)
    turn.sentence_ends, turn.track_sid = [1.0, 3.0], "TR_a"
    kenji.texts = [caption(4.0, "One. Two.", True)]
    kenji.heard = frames("TR_a-ja", [(6.0, 7.0)], until=8)

    figures = figures_of([turn])

    assert figures["caption_lag_s_median"] == pytest.approx(2.0)  # 3.0 and 1.0
    assert figures["sentences_unmatched"] == 1  # one stretch of speech for two sentences
    # Which sentence the stretch is would be a guess: said, heard, not measured.
    assert figures["translation_lags_measured"] == 0
    assert figures["translation_lag_s_median"] is None
    assert figures["completeness"] == pytest.approx(0.5)
    assert [s["translation_lag_s"] for s in figures["per_sentence"]] == [None, None]


def lags(values: list[float | None]) -> dict[str, object]:
    return {
        "per_sentence": [
            {"turn": i, "sentence": 0, "text": "", "translation_lag_s": v}
            for i, v in enumerate(values)
        ]
    }


def test_designs_are_compared_on_the_sentences_both_measured() -> None:
    # The other design measured only its two easiest sentences: on those, ours is 2.0
    # against its 1.0, whatever ours did with the rest.
    ours = lags([2.0, 2.0, 9.0, 9.0])
    theirs = lags([1.0, 1.0, None, None])

    result = compared(ours, theirs)

    assert result["sentences_both_voiced"] == 2
    assert result["kaiwa_translation_lag_s_median"] == pytest.approx(2.0)
    assert result["other_translation_lag_s_median"] == pytest.approx(1.0)
    assert result["translation_lag_ratio_median"] == pytest.approx(2.0)


def test_the_distance_to_the_floor_is_taken_sentence_by_sentence() -> None:
    figures = lags([2.5, None, 4.0])
    floor = {
        "per_sentence": [
            {"turn": 0, "sentence": 0, "floor_s": 1.5},
            {"turn": 1, "sentence": 0, "floor_s": 1.0},
            {"turn": 2, "sentence": 0, "floor_s": 2.0},
        ]
    }
    result = distance_to_floor(figures, floor)
    assert result["above_floor_s_median"] == pytest.approx(1.5)  # 1.0 and 2.0


def test_the_pipeline_time_is_the_ledger_from_end_of_speech_to_first_frame() -> None:
    lines = [
        # Ends an utterance, voiced in two languages.
        {
            "timings": {
                "final_transcript": 0.8,
                "translation.ja": 0.6,
                "first_frame.ja": 0.3,
                "translation.vi": 1.1,
                "first_frame.vi": 0.2,
            }
        },
        # A sentence finished while its speaker went on: no end of speech to time from.
        {"timings": {"translation.ja": 0.5, "first_frame.ja": 0.3}},
        # Dropped unvoiced: no first frame.
        {"timings": {"final_transcript": 0.7, "translation.ja": 0.5}},
    ]
    assert sorted(round(t, 3) for t in _pipeline_times(lines)) == [1.7, 2.1]
