"""What a dialog call decides, kept apart from the doing: when it ends, how long it waits for
a caller who left, when the summary is refreshed, and what an engine's failure leads to.

Pure: no asyncio, no LiveKit, no clock of its own. Times are arguments, in seconds on any one
clock, so tests drive it with a fake clock in milliseconds. DialogCall (call.py) asks it and
does what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Refresh the stored summary every this many turns, so a long call has one before it ends;
# only while the caller listens, and dropped when they speak: the conversation comes first.
SUMMARY_EVERY_TURNS = 10

EndReason = Literal["idle", "limit"]
# "refresh": start one (if none runs); "yield": stop the one running, it is tried again at
# the next quiet moment; "wait": nothing to do.
SummaryStep = Literal["refresh", "yield", "wait"]
# "retried": the engine retries on its own; "fallback": the local pipeline takes over from
# Gemini; "apologise": a reply failed, the caller is asked again; "failed": nothing to do.
ErrorStep = Literal["retried", "fallback", "apologise", "failed"]


@dataclass
class CallLimits:
    idle_s: float = 1800.0
    max_call_s: float = 3600.0
    # How long the call waits for a caller whose page left (a reload, a lost network) to
    # come back; a phone call that hangs up is over at once.
    rejoin_s: float = 20.0


class CallPolicy:
    """One call's decisions, given what happened and when."""

    def __init__(self, limits: CallLimits, *, has_fallback: bool = False) -> None:
        self.limits = limits
        self.started_at: float | None = None
        self.ending: EndReason | None = None
        # When the caller left and must be back by; None while they are here.
        self.rejoin_by: float | None = None
        self.summary_covers = 0  # turns of the transcript the summary covers
        self._has_fallback = has_fallback

    # --- the call's length ------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.started_at = now

    def until_limit(self, now: float) -> float:
        """Seconds left before the call reaches `max_call_s` (its length limit)."""
        started = now if self.started_at is None else self.started_at
        return max(0.0, started + self.limits.max_call_s - now)

    def on_user_state(self, state: str) -> EndReason | None:
        """LiveKit marks the caller "away" once nobody spoke for `idle_s` (the session's
        `user_away_timeout`): the call is idle and ends."""
        return "idle" if state == "away" else None

    def end(self, why: EndReason) -> bool:
        """True the first time only: the call ends for the first reason; a later one finds
        the goodbye already playing."""
        if self.ending is not None:
            return False
        self.ending = why
        return True

    # --- a caller who leaves ----------------------------------------------------------------

    def caller_left(self, now: float, *, is_caller: bool, phone: bool, ended: bool) -> float | None:
        """How long to wait for the caller to come back before the call ends: not at all for
        a phone (SIP) caller who hung up or one who ended the call (`kaiwa.ended`), else
        `rejoin_s`. None when it was not the caller who left, or the call already waits."""
        if not is_caller or self.rejoin_by is not None:
            return None
        wait_s = 0.0 if phone or ended else self.limits.rejoin_s
        self.rejoin_by = now + wait_s
        return wait_s

    def caller_back(self, *, is_caller: bool) -> bool:
        """True when the call was waiting for this caller: the wait is over."""
        if not is_caller or self.rejoin_by is None:
            return False
        self.rejoin_by = None
        return True

    # --- the summary ------------------------------------------------------------------------

    def summary_step(self, *, turns: int, agent_state: str, user_state: str) -> SummaryStep:
        quiet = agent_state == "listening" and user_state != "speaking"
        if not quiet:
            return "yield"
        if turns - self.summary_covers >= SUMMARY_EVERY_TURNS:
            return "refresh"
        return "wait"

    def summarised(self, turns: int) -> None:
        """The summary now covers the first `turns` turns."""
        self.summary_covers = turns

    # --- engine failures --------------------------------------------------------------------

    def engine_error(self, *, recoverable: bool, realtime: bool, llm: bool) -> ErrorStep:
        """What an error from the session's engines leads to. `realtime`: it came from the
        realtime model (Gemini); `llm`: from a text LLM. The fallback is used once."""
        if recoverable:
            return "retried"
        if realtime and self._has_fallback:
            self._has_fallback = False
            return "fallback"
        if llm:
            return "apologise"
        return "failed"
