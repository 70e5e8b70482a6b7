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


SENTENCES = [
    ("en", "I would like to book a table for two people tonight."),
    ("en", "Could you tell me the way to the nearest station?"),
    ("ja", "このかばんはいくらですか。"),
    ("ja", "もう少しゆっくり話してください。"),
]


def test_finished_sentences_score_as_more_final_than_cut_ones() -> None:
    """The model runs offline and hears the difference between done and mid-sentence.

    Judged over several sentences: piper samples noise, so one sentence's audio, and its
    score, varies from run to run.
    """
    local_inference.init_eot()
    model = local_inference.EOT()
    pause = np.zeros(3200, dtype=np.int16)  # 0.2 s: where a turn decision is made

    def p_end(speech: np.ndarray) -> float:
        window = np.concatenate([speech, pause])[-19200:]  # the model hears 1.2 s
        return float(model.predict(np.ascontiguousarray(window)))

    pairs = []
    for language, text in SENTENCES:
        voice = engines.voice(language)
        pcm = to_16k(voice.synthesize(text), voice.sample_rate)
        end = int(np.nonzero(np.abs(pcm) > 300)[0][-1]) + 1
        pairs.append((p_end(pcm[:end]), p_end(pcm[: int(end * 0.55)])))
    finished, cut = np.array(pairs).T
    assert (finished > cut).sum() >= 3, pairs
    assert finished.mean() > cut.mean() + 0.05, pairs
