"""How a call's room is made: the configuration LiveKit applies when a join creates the room.

A browser caller's token (api/tokens.py) and a phone caller's dispatch rule (kaiwa/sip.py)
both carry one, so a room gets the same metadata, participant limit and agent dispatch
whichever way its first caller came in.
"""

from __future__ import annotations

import json

from livekit import api as lkapi

from .protocol import AGENT_NAME, LANGUAGE_ATTRIBUTE, MODE_ATTRIBUTE, Mode


def call_session(mode: Mode, scenario: str | None) -> str:
    """What the agent is dispatched with (agents/worker.py reads it) and what the caller's
    participant metadata says."""
    return json.dumps({"mode": mode, "scenario": scenario})


def caller_attributes(mode: Mode, language: str) -> dict[str, str]:
    """The caller's participant attributes: what they speak and hear, and the call's mode."""
    return {LANGUAGE_ATTRIBUTE: language, MODE_ATTRIBUTE: mode}


def room_configuration(
    *,
    mode: Mode,
    scenario: str | None,
    record: bool,
    max_participants: int,
    name: str = "",
    departure_timeout_s: int = 0,
) -> lkapi.RoomConfiguration:
    """Applied only if the join creates the room: the first caller decides its mode and
    brings the agent; later callers join what is there. `name` is empty for a phone call,
    whose room the dispatch rule names."""
    return lkapi.RoomConfiguration(
        name=name,
        metadata=json.dumps({"mode": mode, "record": record}),
        max_participants=max_participants,
        departure_timeout=departure_timeout_s,
        agents=[
            lkapi.RoomAgentDispatch(agent_name=AGENT_NAME, metadata=call_session(mode, scenario))
        ],
    )
