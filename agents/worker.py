"""The agent worker: registers with LiveKit under one agent name and serves dispatched rooms.

Rooms are dispatched with metadata naming their mode (`dialog` or `interpret`, set by the
token service); the entrypoint reads it and runs the matching agent. How a job joins its
room and leaves it (`serve_call`) and how a dialog call is kept (`run_dialog`) are also what
the benches' reference worker (kaiwa/bench/reference) runs its designs with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from livekit import api as lkapi
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    AutoSubscribe,
    JobContext,
    JobExecutorType,
    JobProcess,
    llm,
)
from livekit.agents.__main__ import main as agents_main
from openai import AsyncOpenAI
from prometheus_client import Gauge

from core import scenarios
from core.loop_metrics import LOOP_TASKS
from core.protocol import (
    AGENT_NAME,
    AGENT_STATE_ATTRIBUTE,
    APOLOGY_KEY,
    GENERATION_KEY,
    MODE_ATTRIBUTE,
    WORKER_KEY_REFRESH_S,
    WORKER_KEY_TTL_S,
    worker_key,
)
from core.scenarios import Scenario
from core.tasks import TaskOwner

from . import engines, roles
from .apology import apologise, callers_language
from .dialog.agent import ScenarioAgent
from .dialog.call import DialogCall
from .dialog.policy import CallLimits
from .dialog.resume import restored_context
from .dialog.sessions import gemini_session, local_engines, local_session, use_gemini
from .history_client import SegmentStore
from .interpret.phones import UpdateSubscriptions
from .interpret.session import Interpreter
from .lease import CallLease, LeaseHolder
from .models import ModelError
from .settings import AgentSettings
from .translate import Translator

logger = logging.getLogger("kaiwa.agents")

settings = AgentSettings()


def prewarm(_proc: JobProcess) -> None:
    if settings.agent_prewarm:
        engines.warm(settings.stt_model)


# What an autoscaler scales workers on (infra/k8s): a worker's CPU is its models, not its
# load. Refreshed whenever livekit-agents asks for the load (every 0.5 s).
CALLS_IN_USE = Gauge("kaiwa_agent_calls_in_use", "Calls this worker serves now.")
CALLS_MAX = Gauge("kaiwa_agent_calls_max", "Calls this worker takes at most (AGENT_MAX_SESSIONS).")


class CallSlots:
    """The worker's calls against AGENT_MAX_SESSIONS, and its load as LiveKit sees it.

    LiveKit's default load is the machine's CPU use, which turns the worker away ("full")
    whenever anything else on the machine is busy; counting our own calls keeps dispatch
    predictable. LiveKit dispatches while load < its `agents.target_load` (livekit.yaml sets
    1.0) and never retries a dispatch, so a call that arrives while every slot is taken gets
    no agent: that is logged here when the worker fills, and shown by the API's /healthz.
    """

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.in_use = 0
        self.full = False
        CALLS_MAX.set(max_calls)

    def load(self, server: AgentServer) -> float:
        self.in_use = len(server.active_jobs)
        CALLS_IN_USE.set(self.in_use)
        full = self.in_use >= self.max_calls
        if full != self.full:
            self.full = full
            if full:
                logger.warning(
                    "worker full: every call slot is in use; new calls get no agent from this "
                    "worker until one ends",
                    extra={"calls": self.in_use, "max_calls": self.max_calls},
                )
            else:
                logger.info(
                    "worker has a free call slot again",
                    extra={"calls": self.in_use, "max_calls": self.max_calls},
                )
        return min(1.0, self.in_use / self.max_calls)


call_slots = CallSlots(settings.agent_max_sessions)


# Jobs run as threads of this process, not as processes of their own: the models are then
# loaded once per worker and shared by every call (a process per job would load them per
# call). Inference runs in native code that releases the GIL.
server = AgentServer(
    host=settings.agent_http_host,
    port=settings.agent_http_port,
    num_idle_processes=settings.agent_idle_processes,
    job_executor_type=JobExecutorType.THREAD,
    setup_fnc=prewarm,
    initialize_process_timeout=120,
    load_fnc=call_slots.load,
    load_threshold=1.0,
    drain_timeout=settings.agent_drain_timeout_s,
    prometheus_port=settings.agent_metrics_port,
)


def dispatch_metadata(job_metadata: str) -> dict[str, Any]:
    try:
        metadata = json.loads(job_metadata or "{}")
    except json.JSONDecodeError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


# Runs the call in a room the worker joined: (the job, set when the call is over, the mode,
# the dispatch's metadata).
RunCall = Callable[[JobContext, asyncio.Event, str, dict[str, Any]], Awaitable[None]]
# The agent's attributes are one round trip to the server: long done when a call ends.
ATTRIBUTES_WAIT_S = 5.0


async def serve_call(ctx: JobContext, run: RunCall) -> None:
    """Join the dispatched room, hold its call lease, run its call, and leave once the call
    is over (or a newer agent has it: agents/lease.py)."""
    metadata = dispatch_metadata(ctx.job.metadata)
    mode = str(metadata.get("mode", "dialog"))
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    if await made_the_room_again(ctx):
        return
    tasks = TaskOwner(logger, room=ctx.room.name)
    done = asyncio.Event()
    lease = CallLease(
        aioredis.Redis.from_url(settings.redis_url, socket_timeout=2),
        ctx.job.room.sid or await ctx.room.sid,
        LeaseHolder(
            worker_id=ctx.worker_id,
            job_id=ctx.job.id,
            agent_identity=ctx.room.local_participant.identity,
            generation=generation_of(metadata),
        ),
        on_lost=done.set,
    )
    try:
        # Every agent of a room comes after the ones before it, however it was dispatched:
        # by the watchdog, or by LiveKit again for a room re-created on another node after
        # its node died (with the first dispatch's metadata).
        await lease.take_next_generation()
        if not await lease.hold_once():  # a newer agent is already here
            await lease.aclose()
            ctx.shutdown(reason="replaced by a newer agent")
            return
    except aioredis.RedisError as exc:  # the call is served; the watchdog waits for Redis
        logger.warning("call lease not taken", extra={"error": str(exc)})
    # What this job writes to the history carries its generation (history_store).
    metadata[GENERATION_KEY] = lease.holder.generation
    holding = tasks.spawn(lease.hold(), "call-lease")
    # Not awaited: a round trip to the server the caller's greeting need not wait for.
    tasks.spawn(
        ctx.room.local_participant.set_attributes(
            {AGENT_STATE_ATTRIBUTE: "listening", MODE_ATTRIBUTE: mode}
        ),
        "agent-attributes",
    )
    logger.info(
        "joined room",
        extra={"room": ctx.room.name, "mode": mode, "generation": lease.holder.generation},
    )

    @ctx.room.on("disconnected")
    def _on_disconnected(_: rtc.DisconnectReason) -> None:
        done.set()

    @ctx.room.on("reconnecting")
    def _on_reconnecting() -> None:
        if done.is_set():
            tasks.spawn(ctx.room.disconnect(), "leave-not-rejoin")

    deadline = tasks.spawn(hand_over_before_the_drain_ends(done), "drain-deadline")
    tasks.spawn(leave_if_reconnecting_once_over(ctx.room, done), "leave-once-over")

    try:
        await run(ctx, done, mode, metadata)
    finally:
        done.set()  # however the call ended: nothing of this job waits on it any more
        await tasks.cancel(holding)
        await tasks.cancel(deadline)
        await tasks.wait(ATTRIBUTES_WAIT_S)
        await tasks.aclose()
        if not lease.lost:
            await lease.release()
        await lease.aclose()
        # The call is over: leave now, which frees this call's slot on the worker. The job
        # would otherwise stay until LiveKit closes the empty room (departure_timeout).
        ctx.shutdown(reason="call ended" if not lease.lost else "replaced by a newer agent")


async def made_the_room_again(ctx: JobContext) -> bool:
    """Whether the call ended before its agent arrived, so that the agent's own join made its
    room again (LiveKit creates a room on any join): then the agent closes that room and
    leaves. It would otherwise sit alone in a room nobody comes to, holding a worker slot, and
    the room would count as a call still held (api/calls_held.py). A room re-created with
    people in it (a node's loss, the callers back first) is a call, and is served."""
    dispatched = ctx.job.room.sid
    if not dispatched or await ctx.room.sid == dispatched or ctx.room.remote_participants:
        return False
    logger.info(
        "the call ended before its agent arrived: closing the room made again",
        extra={"room": ctx.room.name},
    )
    await ctx.delete_room()
    ctx.shutdown(reason="call ended before the agent arrived")
    return True


async def leave_if_reconnecting_once_over(room: rtc.Room, done: asyncio.Event) -> None:
    """An agent whose call is over never rejoins its room.

    A call can end while the agent's own connection is down: after a Redis or network outage
    the SDK rejoins as a new session, and meanwhile it sees no caller, so the rejoin grace
    runs out. Were the agent to rejoin then, it would stand in the room during its call's
    last writes (history, summary, lease), beside the agent the watchdog sends to the room
    it finds without a lease: a caller saw two agents at once. So it leaves at once instead.
    (While connected it stays for those writes, as before; the room learns of its end when
    it leaves. Not at the outage's start: a node's death also begins with a reconnect, and
    the agent's lease, held meanwhile, is what keeps the watchdog from sending a second
    agent beside the one LiveKit dispatches to the re-created room.)"""
    await done.wait()
    if room.connection_state == rtc.ConnectionState.CONN_RECONNECTING:
        logger.warning(
            "the call ended while reconnecting: not rejoining", extra={"room": room.name}
        )
        await room.disconnect()


# Before the drain's deadline, so the call ends its own way: what it has is stored and its
# lease released, and another worker takes it over at once.
HAND_OVER_BEFORE_DRAIN_END_S = 2.0


async def hand_over_before_the_drain_ends(done: asyncio.Event) -> None:
    """A call still running when its worker's drain (SIGTERM) is about to time out ends here;
    the watchdog moves it, with its context, to another worker. (Left to livekit-agents, the
    job would be cancelled 15 s after the deadline, mid-write.)"""
    # Polled: the server runs in the worker's main thread, this job in a thread of its own.
    while not server.draining:  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    await asyncio.sleep(max(0.0, settings.agent_drain_timeout_s - HAND_OVER_BEFORE_DRAIN_END_S))
    logger.warning("the worker's drain is ending: the call is handed over to another worker")
    done.set()


def generation_of(metadata: dict[str, Any]) -> int:
    """The agent's place in its room's line of agents: 0 unless re-dispatched."""
    try:
        return max(0, int(metadata.get(GENERATION_KEY, 0)))
    except (TypeError, ValueError):
        return 0


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    LOOP_TASKS.watch()  # each call's loop: its tasks show on /metrics
    await serve_call(ctx, run_call)


async def run_call(
    ctx: JobContext, done: asyncio.Event, mode: str, metadata: dict[str, Any]
) -> None:
    if metadata.get(APOLOGY_KEY):
        language = (
            dialog_scenario(metadata).language
            if mode == "dialog"
            else callers_language(ctx, default="en")
        )
        await apologise(ctx, roles.make_tts(settings, language), language)
    elif mode == "interpret":
        await interpret(ctx, done, metadata)
    else:
        await dialog(ctx, done, metadata)


async def history_store(
    ctx: JobContext, done: asyncio.Event, metadata: dict[str, Any]
) -> SegmentStore:
    """Where this call's transcript and report go: the API, as this worker's service. The
    agent claims the call there first (`store.claimed` is what the history holds of it).
    Should the API answer that a newer agent has the call, this one leaves."""
    store = SegmentStore(
        settings.api_internal_url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        # The job names its room's sid; the connection may learn it only later.
        room_sid=ctx.job.room.sid or await ctx.room.sid,
        room_name=ctx.room.name,
        generation=generation_of(metadata),
        on_stale=done.set,
    )
    await store.claim()
    return store


def dialog_scenario(metadata: dict[str, Any]) -> Scenario:
    return scenarios.pick(str(metadata.get("scenario") or ""), settings.scenarios_file)


def call_limits() -> CallLimits:
    return CallLimits(
        idle_s=settings.dialog_idle_timeout_s,
        max_call_s=settings.dialog_max_call_s,
        rejoin_s=settings.dialog_rejoin_grace_s,
    )


async def dialog(ctx: JobContext, done: asyncio.Event, metadata: dict[str, Any]) -> None:
    scenario = dialog_scenario(metadata)
    limits = call_limits()
    reader: llm.LLM[Any] | None = None
    if use_gemini(settings):
        session = gemini_session(settings, scenario, idle_s=limits.idle_s)
        engine = f"gemini/{settings.gemini_live_model}"
    else:
        session = local_session(settings, scenario, idle_s=limits.idle_s)
        engine = f"local/{settings.llm_model}"
        if settings.llm_engine == "local":
            # A second client of the local LLM server, for reading prompts ahead
            # (ScenarioAgent); built off the event loop (an OpenAI client's SSL context takes
            # a few hundred ms).
            reader = await asyncio.to_thread(partial(roles.make_llm, settings, reply_tokens=1))
    try:
        await run_dialog(
            ctx,
            done,
            scenario=scenario,
            limits=limits,
            session=session,
            engine=engine,
            make_agent=lambda chat_ctx: ScenarioAgent(
                scenario,
                reader=reader,
                history_tokens=settings.llm_history_tokens,
                chat_ctx=chat_ctx,
            ),
            metadata=metadata,
        )
    finally:
        if reader is not None:
            await reader.aclose()


async def run_dialog(
    ctx: JobContext,
    done: asyncio.Event,
    *,
    scenario: Scenario,
    limits: CallLimits,
    session: AgentSession[Any],
    engine: str,
    make_agent: Callable[[llm.ChatContext | None], Agent],
    metadata: dict[str, Any],
) -> None:
    """A dialog call in the job's room through `session`, kept in the history as served by
    `engine`, until it ends. An agent that joins a call under way (its agent was lost)
    first restores the conversation from the history."""
    room = ctx.room
    store = await history_store(ctx, done, metadata)
    resumed = store.claimed
    if resumed is not None and not resumed.turns:
        resumed = None  # the lost agent had not even greeted: this one starts the call
    chat_ctx = restored_context(resumed) if resumed is not None else None

    async def end_call() -> None:
        await ctx.delete_room()

    call = DialogCall(
        room,
        scenario=scenario,
        session=session,
        make_agent=lambda: make_agent(chat_ctx),
        # The session's own text LLM where it has one: a second client per call would be
        # built on the event loop (its SSL context alone takes a few hundred ms).
        summary_model=(
            session.llm if isinstance(session.llm, llm.LLM) else roles.make_llm(settings)
        ),
        store=store,
        engine=engine,
        call_started_at=room.creation_time.timestamp(),
        limits=limits,
        end_call=end_call,
        fallback=lambda: local_engines(settings, scenario),
        fallback_engine=f"local/{settings.llm_model}",
        resumed=resumed,
    )
    logger.info(
        "dialog started",
        extra={
            "room": room.name,
            "scenario": scenario.id,
            "engine": engine,
            "resumed_turns": len(resumed.turns) if resumed else None,
        },
    )
    await call.run(done)


async def interpret(ctx: JobContext, done: asyncio.Event, metadata: dict[str, Any]) -> None:
    room = ctx.room
    store = await history_store(ctx, done, metadata)
    llm_client = AsyncOpenAI(base_url=settings.llm_base_url, api_key="local")
    interpreter = Interpreter(
        room,
        translator=Translator(llm_client, settings.llm_model),
        store=store,
        make_stt=lambda language: roles.make_stt(settings, language),
        make_tts=lambda language: roles.make_tts(settings, language),
        call_started_at=room.creation_time.timestamp(),
        update_subscriptions=subscriptions_of(ctx),
        max_lag_s=settings.interpret_max_lag_s,
    )
    try:
        await interpreter.run(done)
    finally:
        await llm_client.close()


def subscriptions_of(ctx: JobContext) -> UpdateSubscriptions:
    """Sets which tracks a participant of this room receives, through the server API."""

    async def update(identity: str, track_sids: list[str], subscribe: bool) -> None:
        await ctx.api.room.update_subscriptions(
            lkapi.UpdateSubscriptionsRequest(
                room=ctx.room.name, identity=identity, track_sids=track_sids, subscribe=subscribe
            )
        )

    return update


class Heartbeat:
    """Refreshes this worker's presence key while the worker process lives."""

    def __init__(self, redis_url: str, prepared: dict[str, Any]) -> None:
        self._redis = aioredis.Redis.from_url(redis_url)
        # What the worker prepared before registering (beyond the engines it loaded).
        self._prepared = prepared
        # It lives as long as the worker process: nothing closes it.
        self._tasks = TaskOwner(logger)
        self._task: asyncio.Task[None] | None = None

    def start(self, worker_id: str, *_: Any) -> None:
        if self._task is None:
            self._task = self._tasks.spawn(self._run(worker_id), "kaiwa-worker-heartbeat")

    async def _run(self, worker_id: str) -> None:
        registered_at = time.time()
        while True:
            info = json.dumps(
                {
                    "worker_id": worker_id,
                    "agent_name": AGENT_NAME,
                    "pid": os.getpid(),
                    "registered_at": registered_at,
                    "calls": call_slots.in_use,
                    "max_calls": call_slots.max_calls,
                    # SIGTERM: no new calls; it exits once its calls end (or the drain times
                    # out, and the watchdog moves what is left).
                    "draining": server.draining,
                    **engines.loaded(),
                    **self._prepared,
                }
            )
            try:
                await self._redis.set(worker_key(worker_id), info, ex=WORKER_KEY_TTL_S)
            except aioredis.RedisError:
                logger.warning("heartbeat write failed", exc_info=True)
            await asyncio.sleep(WORKER_KEY_REFRESH_S)


async def warm_translations(timeout_s: float = 90.0) -> int:
    """Have the LLM server read each translation prompt prefix the worker will need, bounded:
    a server that is slow or down costs the start-up no more than `timeout_s`. Returns the
    directions warmed."""
    languages = settings.interpret_warm_languages
    if not languages:
        return 0
    client = AsyncOpenAI(base_url=settings.llm_base_url, api_key="local", max_retries=0)
    try:
        translator = Translator(client, settings.llm_model)
        return await asyncio.wait_for(translator.warm_directions(languages), timeout_s)
    except TimeoutError:
        logger.warning("translation warm-up cut short after %.0f s", timeout_s)
        return 0
    finally:
        await client.close()


def main() -> None:
    prepared: dict[str, Any] = {}
    if settings.agent_prewarm:
        # Before registering: a missing or corrupt model stops the worker here, naming the
        # file, instead of failing the first call that needs it.
        try:
            engines.warm(settings.stt_model)
        except ModelError as exc:
            logger.error("cannot start: %s", exc)
            raise SystemExit(f"error: {exc}") from None
        # Also before registering: a call's first sentence then finds its direction's
        # prompt read. Measured: warmed only when the call began, a call's first translation
        # waited 3.8 s behind the warm-ups and then read its prompt again, 3.8 s more, as
        # the server reads one prompt at a time (docs/interpretation.md).
        prepared["translations_warmed"] = asyncio.run(warm_translations())
    heartbeat = Heartbeat(settings.redis_url, prepared)
    server.on("worker_registered", heartbeat.start)
    agents_main(["start", __file__, "--log-format", "json"])
