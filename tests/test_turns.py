"""Turn detection: the local end-of-turn model for en/ja, VAD for the rest."""

from __future__ import annotations

import numpy as np
import pytest
from livekit import local_inference

from agents import engines
from agents.turns import turn_detection
from kaiwa.eval.speech import to_16k

pytestmark = pytest.mark.models


def test_language_choice() -> None:
    assert turn_detection("en") != "vad"
    assert turn_detection("ja-JP") != "vad"
    assert turn_detection("vi") == "vad"


@pytest.mark.parametrize(
    "language,text",
    [
        ("en", "I would like to book a table for two people tonight."),
        ("en", "Could you tell me the way to the nearest station?"),
        ("ja", "このかばんはいくらですか。"),
        ("ja", "もう少しゆっくり話してください。"),
    ],
)
def test_a_finished_sentence_scores_as_more_final_than_a_cut_one(language: str, text: str) -> None:
    """The model runs offline and hears the difference between done and mid-sentence."""
    local_inference.init_eot()
    model = local_inference.EOT()
    voice = engines.voice(language)
    pcm = to_16k(voice.synthesize(text), voice.sample_rate)
    end = int(np.nonzero(np.abs(pcm) > 300)[0][-1]) + 1
    pause = np.zeros(3200, dtype=np.int16)  # 0.2 s: where a turn decision is made

    def p_end(speech: np.ndarray) -> float:
        window = np.concatenate([speech, pause])[-19200:]  # the model hears 1.2 s
        return float(model.predict(np.ascontiguousarray(window)))

    finished, cut = p_end(pcm[:end]), p_end(pcm[: int(end * 0.55)])
    assert finished > cut + 0.05, (finished, cut)
