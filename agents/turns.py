"""Turn detection per language: LiveKit's local end-of-turn model where it is tuned, VAD else.

The model (turn-detector-v1-mini, inside livekit-local-inference) listens to the audio of the
end of an utterance and says whether the speaker is done, so a pause mid-sentence does not end
the turn. It runs in-process; this module never selects LiveKit's cloud detector.
"""

from __future__ import annotations

from livekit.agents.inference.eot import TurnDetector
from livekit.agents.inference.eot.languages import LOCAL_LANGUAGES
from livekit.agents.voice.turn import TurnDetectionMode


def eot_supported(language: str) -> bool:
    return language.split("-")[0].lower() in LOCAL_LANGUAGES


def turn_detection(language: str) -> TurnDetectionMode:
    if eot_supported(language):
        return TurnDetector(version="v1-mini", local_fallback=True)
    return "vad"
