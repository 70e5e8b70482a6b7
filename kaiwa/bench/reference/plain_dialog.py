"""The reference `kaiwa bench dialog --compare` measures the dialog agent against.

A plain `AgentSession` with the same engines as the product's local pipeline and LiveKit's
default turn handling, and a ScenarioAgent that neither speaks a reply's first clause at
once nor reads the prompt ahead. The call around it is the product's own (DialogCall: the
greeting, the history, the summary), so only the conversation's design differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import AgentSession, JobContext

from agents import worker
from agents.dialog.agent import ScenarioAgent
from agents.dialog.sessions import local_engines
from agents.settings import AgentSettings
from core.scenarios import Scenario

from . import DESIGN


def plain_session(
    settings: AgentSettings, scenario: Scenario, *, idle_s: float
) -> AgentSession[Any]:
    engines_ = local_engines(settings, scenario)
    del engines_["turn_handling"]
    return AgentSession(**engines_, user_away_timeout=idle_s)


async def run(ctx: JobContext, done: asyncio.Event, metadata: dict[str, Any]) -> None:
    settings = worker.settings
    scenario = worker.dialog_scenario(metadata)
    limits = worker.call_limits()
    await worker.run_dialog(
        ctx,
        done,
        scenario=scenario,
        limits=limits,
        session=plain_session(settings, scenario, idle_s=limits.idle_s),
        engine=f"{DESIGN}/{settings.llm_model}",
        make_agent=lambda chat_ctx: ScenarioAgent(scenario, eager=False, chat_ctx=chat_ctx),
        metadata=metadata,
    )
