"""The dialog agent's pure parts: the scenario catalogue, what counts as a backchannel, and
the session's hold on its events."""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, llm
from livekit.agents.metrics import VADMetrics
from livekit.agents.voice.events import MetricsCollectedEvent

from agents.dialog.lines import is_backchannel
from agents.dialog.record import TurnTimer
from agents.dialog.sessions import CallSession
from core import scenarios

pytestmark = pytest.mark.unit


def test_the_shipped_catalogue_loads_with_its_default() -> None:
    catalogue = scenarios.load()
    assert scenarios.DEFAULT_SCENARIO in catalogue
    cafe = catalogue["cafe-ja-beginner"]
    assert cafe.language == "ja" and cafe.opening
    assert "Japanese" in cafe.system_prompt() and "beginner" in cafe.system_prompt()
    # Learners stop to think mid-sentence: the agent waits longer for them.
    assert cafe.max_turn_pause_s > catalogue[scenarios.DEFAULT_SCENARIO].max_turn_pause_s


def test_an_unknown_or_missing_scenario_falls_back_to_the_default() -> None:
    assert scenarios.pick(None).id == scenarios.DEFAULT_SCENARIO
    assert scenarios.pick("no-such-scenario").id == scenarios.DEFAULT_SCENARIO
    assert scenarios.pick("cafe-ja-beginner").id == "cafe-ja-beginner"


def _scenario(scenario_id: str, extra: str = "") -> str:
    """A catalogue of one valid scenario, plus `extra` lines."""
    return (
        f'[{scenario_id}]\ntitle = "T"\nlanguage = "en"\nlevel = "a1"\npersona = "p"\n'
        f'opening = "Hi"\ninstructions = "Be kind."\n{extra}'
    )


def test_a_broken_catalogue_is_refused_naming_the_file_and_scenario(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[assistant]\ntitle = "x"\n', encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match=r"broken\.toml.*'assistant'"):
        scenarios.load(broken)
    no_default = tmp_path / "no_default.toml"
    no_default.write_text(_scenario("tea"), encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match="assistant"):
        scenarios.load(no_default)
    endless = tmp_path / "endless.toml"
    endless.write_text(_scenario("assistant", "max_turn_pause_s = 60\n"), encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match="max_turn_pause_s"):
        scenarios.load(endless)
    unreadable = tmp_path / "not.toml"
    unreadable.write_text("[assistant\n", encoding="utf-8")
    with pytest.raises(scenarios.ScenarioError, match=r"not\.toml"):
        scenarios.load(unreadable)


@pytest.mark.parametrize("text", ["Yeah.", "uh-huh", "Mm hmm", "はい", "うん。", "OK, sure"])
def test_acknowledgements_are_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    ["", "Yes, I would like a coffee.", "What is the capital of France?", "はい、お願いします"],
)
def test_requests_are_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_a_turns_ledger_adds_up_to_livekits_end_to_end_latency() -> None:
    timer = TurnTimer("en")
    asked = llm.ChatMessage(role="user", content=["Why is the sky blue?"])
    asked.metrics.update(transcription_delay=0.5, end_of_turn_delay=0.7)
    reply = llm.ChatMessage(role="assistant", content=["Sunlight scatters."])
    reply.metrics.update(llm_node_ttft=0.6, tts_node_ttfb=0.2, e2e_latency=2.0)

    caller = timer.timings(asked)
    agent = timer.timings(reply)

    # Each stage from the end of the one before: the turn detector's own wait after the
    # transcript, and the reply's way from its first token to its first frame out.
    assert caller == {"final_transcript": 0.5, "end_of_turn": 0.2}
    assert agent == {"llm_first_token": 0.6, "reply_first_frame": 0.7}
    assert sum(caller.values()) + sum(agent.values()) == pytest.approx(2.0)
    # A greeting answers nobody: no end-to-end latency, no reply stage.
    greeting = llm.ChatMessage(role="assistant", content=["Hello!"])
    greeting.metrics.update(llm_node_ttft=0.4)
    assert TurnTimer("en").timings(greeting) == {"llm_first_token": 0.4}


def _vad_metrics() -> MetricsCollectedEvent:
    """What a call's VAD reports about once a second, all call long."""
    return MetricsCollectedEvent(
        metrics=VADMetrics(
            label="vad",
            timestamp=time.time(),
            idle_time=0.0,
            inference_duration_total=0.01,
            inference_count=31,
        )
    )


async def test_a_call_session_lets_its_events_go_once_its_listeners_have_them() -> None:
    """livekit-agents' AgentSession keeps every event it emits, for a report Kaiwa never
    makes: an hour's call kept thousands. A CallSession's listeners hear each event, and
    then nothing holds it. Should livekit-agents keep events some other way, this fails."""
    plain: AgentSession[Any] = AgentSession()
    session = CallSession()
    heard: list[str] = []
    session.on("metrics_collected", lambda event: heard.append(event.metrics.label))
    kept, let_go = _vad_metrics(), _vad_metrics()
    plain.emit("metrics_collected", kept)
    session.emit("metrics_collected", let_go)
    alive = [weakref.ref(kept), weakref.ref(let_go)]
    del kept, let_go
    gc.collect()
    assert heard == ["vad"]
    assert alive[0]() is not None, "livekit-agents no longer keeps events: see CallSession"
    assert alive[1]() is None
