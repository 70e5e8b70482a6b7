"""`kaiwa bench load`: how many calls one node carries before lag grows.

It starts a stack of its own (as `make up` does, with the default offline engines: one agent
worker, one LLM server) and ramps the number of concurrent rooms, 1, 2, 3 …, first in dialog
mode (one synthetic caller per room, in the `assistant` scenario), then in interpret mode
(Alice in English and Kenji in Japanese per room). Every caller says a scripted line every
`PERIOD_S`; the rooms' schedules are spread over the period, as calls that began at different
moments are, and in an interpreted room the two callers alternate. Measured at the callers:

- dialog: voice-to-voice, the end of the caller's line → the first voiced frame of the reply;
- interpret: the end of a line → the first voiced frame of its translation on the listener's
  track for that speaker;
- lines with no answer (or no translation heard) before the next line;
- translations the interpreter dropped (its own counter, and the queues' drop counters).

And on the node, over each step's steady state (every room joined and talking):
- CPU (cores) and resident memory of each process group: the agent worker with its job
  processes, the LLM server, livekit-server, the API, the recorder;
- the worker's stage histograms (kaiwa_stage_seconds: mean per stage over the step), and
  the deepest each bounded queue got (kaiwa_queue_depth, sampled every second).

A step passes when its p95 lag is under `LAG_LIMIT_S`, no line went unanswered and no
translation was dropped; the capacity of a mode is the largest N up to which every step
passed. Since on 2 cores one room's p95 can already be over the limit (the LLM's own time),
the bench also reports the largest N whose median lag stays within `LAG_GROWTH` of one
room's: how many rooms fit before lag grows. The ramp goes on past the limit, so that the
plot shows the curve, until a step is overloaded or `--max-rooms`. The stage whose mean grew
most from N = 1 to the last step is what gives first.

Each step also times dispatch and join: the room made (with its agent dispatch) → the agent
in the room, as its callers see it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.protocol import DROPPED_SENTENCES_ATTRIBUTE
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import bench_grant, create_room, group_stats, median, metric_values, percentile
from .dialog import QUESTIONS, Conversation, english_speech
from .interpret import SCRIPT, turn_speech

PERIOD_S = 15.0
LINES_PER_STEP = 4  # lines each caller says in a step
LAG_LIMIT_S = 3.0
LAG_GROWTH = 1.25  # a median this many times the one-room median: lag has grown
VOICED = 500  # int16 peak of a frame with speech in it
PROCESSES = ("agent", "llm", "livekit", "api", "recorder")
# Each caller's lines in an interpreted room: the café script's sentences, by language.
INTERPRET_LINES = {
    language: [s for spoken_in, sentences in SCRIPT if spoken_in == language for s in sentences]
    for language in ("en", "ja")
}


@dataclass
class RoomResult:
    lags: list[float] = field(default_factory=list)
    unanswered: int = 0
    dropped: int = 0
    agent_joined_s: float | None = None  # the room made → its agent in it


def _line_times(index: int, rooms: int, start: float) -> list[float]:
    """When a room's lines are due (monotonic): its own offset within the period."""
    offset = index * PERIOD_S / rooms
    return [start + offset + k * PERIOD_S for k in range(LINES_PER_STEP)]


async def _until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _first_voiced(
    caller: SyntheticCaller, after: float, before: float, track: str | None = None
) -> float | None:
    """The first voiced frame `caller` heard after `after` (on `track`, if named), waiting
    until `before` at most."""
    while time.monotonic() < before:
        voiced = [
            h.at
            for h in caller.heard[-3000:]
            if h.at > after and h.peak >= VOICED and (track is None or h.track_name == track)
        ]
        if voiced:
            return voiced[0]
        await asyncio.sleep(0.02)
    return None


async def _dialog_room(
    cfg: StackConfig, index: int, rooms: int, ready: asyncio.Barrier, start: asyncio.Future[float]
) -> RoomResult:
    result = RoomResult()
    room = f"load-dialog-{index}-{uuid.uuid4().hex[:6]}"
    # The callers' lines are made before the room: their synthesis is not the stack's time.
    lines = [await asyncio.to_thread(english_speech, q) for q in QUESTIONS]
    made = time.monotonic()
    await create_room(cfg, room, {"mode": "dialog", "scenario": "assistant"})
    caller = SyntheticCaller(cfg.api_url, name=f"Load {index}", mode="dialog", room_name=room)
    try:
        await caller.connect(bench_grant(cfg, room, f"load-{index}", mode="dialog", language="en"))
        await caller.wait_for_agent(timeout_s=120)
        result.agent_joined_s = time.monotonic() - made
        talk = Conversation(caller)
        joined = time.monotonic()
        await talk.reply_onset(joined)  # the greeting
        await talk.quiet(joined)
        await caller.open_microphone(lines[0][1])
        await ready.wait()
        for k, due in enumerate(_line_times(index, rooms, await start)):
            await _until(due)
            ended = (await caller.speak(*lines[(index + k) % len(lines)])).voice_until
            onset = await _first_voiced(caller, ended, before=due + PERIOD_S)
            if onset is None:
                result.unanswered += 1
            else:
                result.lags.append(onset - ended)
    finally:
        await caller.leave()
    return result


async def _interpret_room(
    cfg: StackConfig, index: int, rooms: int, ready: asyncio.Barrier, start: asyncio.Future[float]
) -> RoomResult:
    result = RoomResult()
    room = f"load-interpret-{index}-{uuid.uuid4().hex[:6]}"
    speech = {  # made before the room, as in a dialog room
        language: [(await asyncio.to_thread(turn_speech, language, [line]))[:2] for line in lines]
        for language, lines in INTERPRET_LINES.items()
    }
    made = time.monotonic()
    await create_room(cfg, room, {"mode": "interpret"})
    alice = SyntheticCaller(cfg.api_url, name="Alice", mode="interpret", language="en")
    kenji = SyntheticCaller(cfg.api_url, name="Kenji", mode="interpret", language="ja")
    try:
        for caller in (alice, kenji):
            grant = bench_grant(
                cfg, room, f"{caller.name}-{index}", mode="interpret", language=caller.language
            )
            await caller.connect(grant)
        agent = await alice.wait_for_agent(timeout_s=120)
        result.agent_joined_s = time.monotonic() - made
        for caller in (alice, kenji):  # microphones up before the clock starts
            await caller.open_microphone(
                speech[caller.language][0][1]  # its voice's rate
            )
        await ready.wait()
        begin = await start

        async def speak(speaker: SyntheticCaller, listener: SyntheticCaller, shift: float) -> None:
            lines = speech[speaker.language]
            for k, due in enumerate(_line_times(index, rooms, begin + shift)):
                await _until(due)
                pcm, rate = lines[(index + k) % len(lines)]
                ended = (await speaker.speak(pcm, rate)).voice_until
                track = f"{speaker.microphone_sid}-{listener.language}"
                onset = await _first_voiced(listener, ended, due + PERIOD_S, track)
                if onset is None:
                    result.unanswered += 1
                else:
                    result.lags.append(onset - ended)

        # The two alternate: Kenji half a period after Alice.
        await asyncio.gather(speak(alice, kenji, 0.0), speak(kenji, alice, PERIOD_S / 2))
        result.dropped = int(agent.attributes.get(DROPPED_SENTENCES_ATTRIBUTE, "0"))
    finally:
        for caller in (kenji, alice):
            await caller.leave()
    return result


ROOMS: dict[str, Callable[..., Coroutine[Any, Any, RoomResult]]] = {
    "dialog": _dialog_room,
    "interpret": _interpret_room,
}


def stage_totals(page: str, mode: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of kaiwa_stage_seconds per stage for `mode`, over its languages."""
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(page):
        if family.name != "kaiwa_stage_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("mode") != mode:
                continue
            part = {"kaiwa_stage_seconds_sum": 0, "kaiwa_stage_seconds_count": 1}.get(sample.name)
            if part is not None:
                totals.setdefault(sample.labels["stage"], [0.0, 0.0])[part] += sample.value
    return {stage: (total[0], total[1]) for stage, total in totals.items()}


def stage_means(before: str, after: str, mode: str) -> dict[str, float]:
    """Each stage's mean over what happened between two scrapes."""
    start, end = stage_totals(before, mode), stage_totals(after, mode)
    means = {}
    for stage, (total, count) in end.items():
        total0, count0 = start.get(stage, (0.0, 0.0))
        if count > count0:
            means[stage] = round((total - total0) / (count - count0), 3)
    return means


def queue_drops(before: str, after: str) -> dict[str, float]:
    start = metric_values(before, "kaiwa_queue_dropped_total", "queue")
    end = metric_values(after, "kaiwa_queue_dropped_total", "queue")
    return {q: v - start.get(q, 0.0) for q, v in end.items() if v - start.get(q, 0.0) > 0}


async def _worker_page(client: httpx.AsyncClient, cfg: StackConfig) -> str:
    return (await client.get(f"http://127.0.0.1:{cfg.ports.agent_metrics}/metrics")).text


async def _calls_in_use(client: httpx.AsyncClient, cfg: StackConfig) -> float:
    page = await _worker_page(client, cfg)
    return sum(metric_values(page, "kaiwa_agent_calls_in_use").values())


async def step(stack: Stack, mode: str, rooms: int) -> dict[str, Any]:
    """`rooms` rooms of `mode` at once, each for LINES_PER_STEP periods."""
    cfg = stack.cfg
    pgids = {name: stack.services[name].proc.pid for name in PROCESSES}  # type: ignore[union-attr]
    ready = asyncio.Barrier(rooms + 1)
    start: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    deepest: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        held = [asyncio.create_task(ROOMS[mode](cfg, i, rooms, ready, start)) for i in range(rooms)]
        await ready.wait()
        start.set_result(time.monotonic() + 1.0)
        page_before = await _worker_page(client, cfg)
        stats_before = {n: await asyncio.to_thread(group_stats, pid) for n, pid in pgids.items()}
        wall_before = time.monotonic()
        while not all(task.done() for task in held):
            page = await _worker_page(client, cfg)
            for queue, depth in metric_values(page, "kaiwa_queue_depth", "queue").items():
                deepest[queue] = max(deepest.get(queue, 0.0), depth)
            await asyncio.wait(held, timeout=1.0)
        wall = time.monotonic() - wall_before
        stats_after = {n: await asyncio.to_thread(group_stats, pid) for n, pid in pgids.items()}
        page_after = await _worker_page(client, cfg)
        results = [task.result() for task in held]
        # The next step starts on an idle worker: every call of this one has ended.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await _calls_in_use(client, cfg) == 0:
                break
            await asyncio.sleep(1)
    lags = [lag for r in results for lag in r.lags]
    unanswered = sum(r.unanswered for r in results)
    drops = queue_drops(page_before, page_after)
    dropped = sum(r.dropped for r in results) + int(
        sum(v for q, v in drops.items() if q in ("untranslated", "voice_sentences"))
    )
    p95 = percentile(lags, 95)
    return {
        "rooms": rooms,
        "callers": rooms * (2 if mode == "interpret" else 1),
        "lines": len(lags) + unanswered,
        "lag_s_median": median(lags),
        "lag_s_p95": p95,
        "lag_s_max": round(max(lags), 3) if lags else None,
        "unanswered": unanswered,
        "dropped_translations": dropped,
        "passed": p95 is not None and p95 < LAG_LIMIT_S and unanswered == 0 and dropped == 0,
        "agent_joined_s_median": median([r.agent_joined_s for r in results if r.agent_joined_s]),
        "cpu_cores": {
            n: round((stats_after[n]["cpu_s"] - stats_before[n]["cpu_s"]) / wall, 3) for n in pgids
        },
        "rss_mib": {n: round(stats_after[n]["rss_bytes"] / 2**20) for n in pgids},
        "stage_mean_s": stage_means(page_before, page_after, mode),
        "queue_depth_max": deepest,
        "queue_drops": drops,
    }


def first_to_give(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stage whose mean grew most from the first step to the last, and the queue that
    got deepest or dropped in the last."""
    if len(steps) < 2:
        return None
    first, last = steps[0]["stage_mean_s"], steps[-1]["stage_mean_s"]
    growth = {s: round(last[s] - first[s], 3) for s in last if s in first}
    stage = max(growth, key=lambda s: growth[s]) if growth else None
    queues = steps[-1]["queue_depth_max"]
    return {
        "stage": stage,
        "stage_growth_s": growth,
        "deepest_queue": max(queues, key=lambda q: queues[q]) if queues else None,
        "queue_drops": steps[-1]["queue_drops"],
    }


def overloaded(result: dict[str, Any]) -> bool:
    """Past any use: a quarter of the lines unanswered, or a median lag twice the limit."""
    median_lag = result["lag_s_median"]
    return result["unanswered"] > result["lines"] / 4 or (
        median_lag is None or median_lag > 2 * LAG_LIMIT_S
    )


def capacities(steps: list[dict[str, Any]]) -> dict[str, int]:
    """The largest N up to which every step passed the rule: the issue's (p95 under the
    limit, nothing unanswered or dropped), and lag as with one room (median within
    `LAG_GROWTH` of the one-room median, nothing unanswered or dropped)."""
    within_limit = within_one_room = 0
    one_room = steps[0]["lag_s_median"] if steps else None
    for s in steps:
        clean = s["unanswered"] == 0 and s["dropped_translations"] == 0
        if s["passed"] and within_limit == s["rooms"] - 1:
            within_limit = s["rooms"]
        median_lag = s["lag_s_median"]
        grew = one_room is None or median_lag is None or median_lag > LAG_GROWTH * one_room
        if clean and not grew and within_one_room == s["rooms"] - 1:
            within_one_room = s["rooms"]
    return {"capacity_rooms": within_limit, "rooms_at_one_room_lag": within_one_room}


async def ramp(
    stack: Stack, mode: str, max_rooms: int, on_step: Callable[[str], None]
) -> dict[str, Any]:
    """Steps of 1, 2, … rooms, on past the limit (the curve is the answer) until overloaded."""
    steps: list[dict[str, Any]] = []
    for rooms in range(1, max_rooms + 1):
        result = await step(stack, mode, rooms)
        steps.append(result)
        on_step(
            f"{mode}: {rooms} room(s): lag median {result['lag_s_median']} s, "
            f"p95 {result['lag_s_p95']} s, unanswered {result['unanswered']}, "
            f"dropped {result['dropped_translations']}"
        )
        if overloaded(result):
            break
    return {**capacities(steps), "steps": steps, "gives_first": first_to_give(steps)}


def plot(results: dict[str, Any], path: Path) -> None:
    """Rooms against lag, median and p95, one line per mode, with the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = {"dialog": "tab:blue", "interpret": "tab:orange"}
    labels = {"dialog": "dialog: voice-to-voice", "interpret": "interpret: end of line → voice"}
    for mode, ramped in results["modes"].items():
        steps = [s for s in ramped["steps"] if s["lag_s_median"] is not None]
        rooms = [s["rooms"] for s in steps]
        axes.plot(rooms, [s["lag_s_median"] for s in steps], "o-", color=colours[mode],
                  label=f"{labels[mode]}, median")  # fmt: skip
        axes.plot(rooms, [s["lag_s_p95"] for s in steps], "s--", color=colours[mode],
                  label=f"{labels[mode]}, p95")  # fmt: skip
    axes.axhline(LAG_LIMIT_S, color="grey", linestyle=":", label=f"limit: p95 < {LAG_LIMIT_S:g} s")
    axes.set_xlabel("concurrent rooms on one node (2 cores)")
    axes.set_ylabel("lag at the caller (s)")
    axes.set_title("Kaiwa: rooms against lag (kaiwa bench load)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _progress(line: str) -> None:
    print(f"==> load: {line}", file=sys.stderr, flush=True)


async def run(modes: tuple[str, ...], max_rooms: int, plot_to: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-load-") as state_dir:
        # Every room's callers get their grants here; the API's per-address limit would
        # otherwise turn the bench away, as would the worker's default cap.
        cfg = ephemeral_config(
            Path(state_dir), extra_env={"TOKEN_RATE_LIMIT": "1000", "AGENT_MAX_SESSIONS": "20"}
        )
        stack = Stack(cfg)
        results: dict[str, Any] = {"modes": {}}
        try:
            await asyncio.to_thread(stack.start)
            for mode in modes:
                results["modes"][mode] = await ramp(stack, mode, max_rooms, on_step=_progress)
        finally:
            await asyncio.to_thread(stack.stop)
    results.update(
        {
            "period_s": PERIOD_S,
            "lines_per_caller_per_step": LINES_PER_STEP,
            "lag_limit_s": LAG_LIMIT_S,
            "llm": cfg.llm_model,
            "machine_cpus": os.cpu_count(),
            "capacity_rooms": {m: r["capacity_rooms"] for m, r in results["modes"].items()},
            "rooms_at_one_room_lag": {
                m: r["rooms_at_one_room_lag"] for m, r in results["modes"].items()
            },
        }
    )
    if plot_to is not None:
        plot(results, plot_to)
    return results
