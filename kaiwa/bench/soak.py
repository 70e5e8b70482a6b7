"""`kaiwa bench soak`: the stack through long use, sampled for leaks.

Two calls run side by side for the whole soak, as in a small office: a dialog (a synthetic
caller in the `assistant` scenario) and an interpreted call (an English and a Japanese
caller). Each caller goes round a cycle of speech, silence and noise, so the pipelines see
every kind of input many times over. The three callers take turns: one cycle at a time is
a line every 20 s or so on the node, which 2 cores carry (`kaiwa bench load`: one room of
either kind, a line every 15 s). All talking at once, they overloaded it: its LLM requests
queued and timed out, and a leak test must judge leaks, not overload. Every
`SAMPLE_EVERY_S` the harness samples:

- each process (agent worker, API, recorder, LLM server, livekit-server), with everything
  in its process group: resident memory, open file descriptors, threads;
- the asyncio tasks alive in Kaiwa's own processes (`kaiwa_asyncio_tasks`);
- Redis: its keys and its memory;
- every bounded queue's depth (`kaiwa_queue_depth`, from the worker's and the recorder's
  metrics).

The calls first run for a warm-up, sampled and reported but not judged: caches fill to
their bounds there (the worker's model arenas), and a cache that fills is not a leak. One
cache the calls do not fill in any warm-up: the LLM server's host-memory prompt cache
(256 MiB). A translation saves 3 MiB to it now and then, and a dialog 30 MiB each time it
drops turns, which begins half an hour in: in the sixth and seventh runs the cache was
still filling at the end, and its fill was judged as a leak. So before the calls begin the
harness fills it with prompts of its own, as hours of calls would, until the server's
memory stops rising: from then on each state it saves evicts the oldest.

Then each series gets a least-squares slope per hour over the run after its baseline (the
first minutes after the warm-up). What is noise comes from the baseline: a series whose
fitted growth over the rest of the run stays within three standard deviations of the
baseline's scatter around its own trend (or a floor of the series' kind, for one that did
not move in the baseline) is flat. Only growth fails: a leak grows, and memory handed back
(a cache evicting) is not one. A queue passes when its lowest depth over the last
`QUEUE_END_SAMPLES` samples is no higher than the most it held before the judged run. And
the calls must have worked: no LLM request may fail (`kaiwa_llm_errors_total`, by mode).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis.asyncio as aioredis

from agents import engines
from kaiwa.caller import SyntheticCaller
from kaiwa.stack.config import StackConfig
from kaiwa.stack.services import Stack, ephemeral_config

from .common import group_stats, metric_values

SAMPLE_EVERY_S = 10.0
# A queue is judged by its lowest depth over its last samples, not by the last one alone: a
# queue in use holds a packet or a sentence at any instant (the recorder's packet queue was
# once one deep at the end of a run, against none in its baseline), while one that leaks
# never drains back.
QUEUE_END_SAMPLES = 3
PROCESSES = ("agent", "api", "recorder", "llm", "livekit")
# Below these, a drift over the run is not a leak even when the baseline did not move.
FLOORS = {"rss_bytes": 32 << 20, "fds": 4, "threads": 4, "asyncio_tasks": 8, "keys": 8}
FLOORS["used_memory_bytes"] = 4 << 20
# A caller's cycle: a line, a pause, a stretch of noise, a pause.
PAUSE_S = 6.0
NOISE_S = 4.0
NOISE_LEVEL = 300  # about -40 dBFS: a room, a fan, traffic far off
# Filling the LLM server's prompt cache: prompts of about a slot's 2048 tokens (one token a
# word here), each saved when the next one takes its slot, so they also bring the slots'
# own memory in. The cache is full when two prompts in a row raised the server's memory by
# less than a tenth of a prompt's state (1800 tokens at 28 KiB: 49 MiB); measured with
# 1400-token prompts, it rose 38-39 MiB a prompt, then not at all from the eighth.
FILL_PROMPT_WORDS = 1800
FILL_MAX_PROMPTS = 16
FILL_FLAT_BYTES = 5 << 20
FILL_WORDS = (
    "station ticket platform train morning evening coffee river teacher market bridge "
    "lesson weather city friend window garden letter music island"
).split()

LINES = {
    "en": [
        "Where is the nearest train station?",
        "I would like a cup of coffee, please.",
        "What time does the museum open tomorrow?",
    ],
    "ja": ["駅はどこですか。", "コーヒーを一杯ください。", "明日は何時に開きますか。"],
}


@dataclass
class Series:
    """One sampled quantity: (seconds since the calls began, value)."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    def report(
        self, baseline_s: float, run_s: float, floor: float, warmup_s: float = 0.0
    ) -> dict[str, Any]:
        """Judged from `warmup_s` on: the baseline is the `baseline_s` after it, the slope is
        fitted to the rest, up to `run_s` (all in seconds since the calls began)."""
        judged_from = warmup_s + baseline_s
        base = [(t, v) for t, v in self.samples if warmup_s < t <= judged_from]
        after = [(t, v) for t, v in self.samples if t > judged_from]
        if len(base) < 3 or len(after) < 2:
            return {"samples": len(self.samples), "passed": None}
        slope = _slope_per_h(after)
        # The baseline's noise around its own trend: a leak already under way in the
        # baseline must not widen the band that hides it.
        hours = np.array([t for t, _ in base]) / 3600
        values = np.array([v for _, v in base])
        fitted = np.polyval(np.polyfit(hours, values, 1), hours)
        spread = 3 * float(np.std(values - fitted))
        run_h = max(run_s - judged_from, 1.0) / 3600
        threshold = max(spread, floor) / run_h
        return {
            "samples": len(self.samples),
            "first": self.samples[0][1],
            "baseline_first": base[0][1],
            "last": self.samples[-1][1],
            "slope_per_h": round(slope, 3),
            "threshold_per_h": round(threshold, 3),
            "passed": slope <= threshold,
            # One value a minute, warm-up included, to see a plateau or a climb by eye.
            "per_minute": [v for t, v in self.samples if t % 60 < SAMPLE_EVERY_S],
        }


def judge_queue(series: Series, judged_from_s: float) -> dict[str, Any]:
    """A queue passes when its lowest depth over its last samples is no higher than the most
    it held before `judged_from_s` (see QUEUE_END_SAMPLES)."""
    base = [v for t, v in series.samples if t <= judged_from_s] or [0.0]
    end = [v for _, v in series.samples[-QUEUE_END_SAMPLES:]]
    return {
        "baseline_max": max(base),
        "max": max(v for _, v in series.samples),
        "last": end[-1],
        "end_min": min(end),
        "passed": min(end) <= max(base),
    }


def _slope_per_h(samples: list[tuple[float, float]]) -> float:
    hours = np.array([t for t, _ in samples]) / 3600
    return float(np.polyfit(hours, np.array([v for _, v in samples]), 1)[0])


class Sampler:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.series: dict[str, dict[str, Series]] = {}
        self.started = time.monotonic()
        # A soak whose calls failed is not a soak: the worker's LLM errors, by mode.
        self.llm_errors: dict[str, float] = {}
        self.llm_error_reasons: dict[str, float] = {}

    def add(self, group: str, name: str, value: float) -> None:
        series = self.series.setdefault(group, {}).setdefault(name, Series())
        series.samples.append((time.monotonic() - self.started, value))

    async def sample(self, client: httpx.AsyncClient, redis: aioredis.Redis) -> None:
        cfg = self.stack.cfg
        for name in PROCESSES:
            process = self.stack.services[name].proc
            if process is None:
                continue
            stats = await asyncio.to_thread(group_stats, process.pid)
            for key in ("rss_bytes", "fds", "threads"):
                self.add(name, key, stats[key])
        pages = {
            "agent": (f"http://127.0.0.1:{cfg.ports.agent_metrics}/metrics", {}),
            "api": (
                f"{cfg.api_url}/metrics",
                {"Authorization": f"Bearer {cfg.secrets.metrics_token}"},
            ),
            "recorder": (f"{cfg.recorder_url}/metrics", {}),
        }
        for name, (url, headers) in pages.items():
            text = (await client.get(url, headers=headers)).text
            for _, tasks in metric_values(text, "kaiwa_asyncio_tasks").items():
                self.add(name, "asyncio_tasks", tasks)
            for queue, depth in metric_values(text, "kaiwa_queue_depth", "queue").items():
                self.add("queues", queue, depth)
            if name == "agent":
                self.llm_errors = metric_values(text, "kaiwa_llm_errors_total", "mode")
                self.llm_error_reasons = metric_values(text, "kaiwa_llm_errors_total", "reason")
        info = await redis.info("memory")
        self.add("redis", "keys", float(await redis.dbsize()))
        self.add("redis", "used_memory_bytes", float(info["used_memory"]))

    def report(self, baseline_s: float, run_s: float, warmup_s: float) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for group, named in sorted(self.series.items()):
            if group == "queues":
                continue
            report[group] = {
                name: series.report(baseline_s, run_s, FLOORS[name], warmup_s)
                for name, series in sorted(named.items())
            }
        queues: dict[str, Any] = {}
        for queue, series in sorted(self.series.get("queues", {}).items()):
            queues[queue] = judge_queue(series, judged_from_s=warmup_s + baseline_s)
        report["queues"] = queues
        checked = [
            s["passed"] for group in report.values() for s in group.values() if "passed" in s
        ]
        report["llm_errors"] = self.llm_errors
        report["llm_error_reasons"] = self.llm_error_reasons
        no_errors = not any(self.llm_errors.values())
        report["passed"] = bool(checked) and all(p is not False for p in checked) and no_errors
        return report


def cache_filled(rises: list[float]) -> bool:
    """Whether the server's memory, prompt by prompt, has risen and then stopped rising."""
    return (
        len(rises) >= 3
        and any(rise >= FILL_FLAT_BYTES for rise in rises)
        and all(rise < FILL_FLAT_BYTES for rise in rises[-2:])
    )


async def fill_llm_cache(
    stack: Stack, max_prompts: int = FILL_MAX_PROMPTS, prompt_words: int = FILL_PROMPT_WORDS
) -> dict[str, Any]:
    """Send the LLM server distinct long prompts until its prompt cache is full (or
    `max_prompts` were sent); returns how many it took and the memory each added."""
    cfg = stack.cfg
    process = stack.services["llm"].proc
    assert process is not None, "the LLM server is not running"

    async def rss() -> float:
        return (await asyncio.to_thread(group_stats, process.pid))["rss_bytes"]

    rises: list[float] = []
    before = await rss()
    async with httpx.AsyncClient(timeout=300) as client:
        while len(rises) < max_prompts and not cache_filled(rises):
            words = np.random.default_rng(len(rises)).choice(FILL_WORDS, prompt_words)
            response = await client.post(
                f"{cfg.llm_base_url}/completions",
                json={
                    "model": cfg.llm_model,
                    # A number first: no two prompts share a start, so each takes the least
                    # recently used slot and the state there is saved.
                    "prompt": f"{len(rises)}. " + " ".join(words),
                    "max_tokens": 1,
                },
            )
            response.raise_for_status()
            after = await rss()
            rises.append(after - before)
            before = after
    return {
        "prompts": len(rises),
        "full": cache_filled(rises),
        "rises_mib": [round(rise / 2**20, 1) for rise in rises],
    }


def _cycle(language: str, line: str) -> list[np.ndarray[Any, Any]]:
    """One round of a caller's cycle at its voice's rate: a line, a pause, noise, a pause."""
    voice = engines.voice(language)
    rate = voice.sample_rate
    rng = np.random.default_rng(len(line))
    pause = np.zeros(int(rate * PAUSE_S), dtype=np.int16)
    noise = rng.normal(0, NOISE_LEVEL, int(rate * NOISE_S)).clip(-32768, 32767)
    return [voice.synthesize(line), pause, noise.astype(np.int16), pause]


async def _talk(
    caller: SyntheticCaller, language: str, offset: int, until: float, turn: asyncio.Lock
) -> int:
    """Go round the cycle until `until` (monotonic), one cycle per `turn`; returns the lines
    said. What the caller hears is let go as it goes: a soak must not measure its own
    harness."""
    rate = engines.voice(language).sample_rate
    cycles = [await asyncio.to_thread(_cycle, language, line) for line in LINES[language]]
    said = 0
    while time.monotonic() < until:
        # The lock hands turns out in the order they were asked for: the callers alternate.
        async with turn:
            if time.monotonic() >= until:
                break
            for part in cycles[(said + offset) % len(cycles)]:
                await caller.speak(part, rate)
        said += 1
        caller.heard.clear()
        caller.texts.clear()
    return said


async def soak(
    stack: Stack,
    minutes: float,
    baseline_minutes: float,
    on_sample: Callable[[int], None],
    warmup_minutes: float = 0.0,
) -> dict[str, Any]:
    """Run the two calls for `warmup_minutes`, then `minutes` more that are judged (the
    baseline's included), on a running stack, sampling all along. A run with a warm-up
    fills the LLM server's prompt cache first."""
    cfg = stack.cfg
    llm_cache_fill = await fill_llm_cache(stack) if warmup_minutes > 0 else None
    dialog = SyntheticCaller(cfg.api_url, name="Soak dialog", mode="dialog", language="en")
    alice = SyntheticCaller(cfg.api_url, name="Soak Alice", mode="interpret", language="en")
    await dialog.join(scenario="assistant")
    await alice.join()
    kenji = SyntheticCaller(
        cfg.api_url, name="Soak Kenji", mode="interpret", language="ja", room_name=alice.room_name
    )
    await kenji.join()
    callers = [(dialog, "en", 0), (alice, "en", 1), (kenji, "ja", 2)]
    sampler = Sampler(stack)
    redis = aioredis.Redis.from_url(cfg.redis_url)
    try:
        for caller, language, _ in callers:
            await caller.open_microphone(engines.voice(language).sample_rate)
        await dialog.wait_for_agent()
        await alice.wait_for_agent()
        sampler.started = time.monotonic()
        until = sampler.started + (warmup_minutes + minutes) * 60
        turn = asyncio.Lock()
        talking = [
            asyncio.create_task(_talk(caller, language, offset, until, turn))
            for caller, language, offset in callers
        ]
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() < until:
                await sampler.sample(client, redis)
                on_sample(len(sampler.series.get("api", {}).get("fds", Series()).samples))
                await asyncio.sleep(SAMPLE_EVERY_S)
            await sampler.sample(client, redis)
        lines = await asyncio.gather(*talking)
    finally:
        for caller, _, _ in callers:
            await caller.leave()
        await redis.aclose()
    run_s = time.monotonic() - sampler.started
    report = sampler.report(baseline_minutes * 60, run_s, warmup_minutes * 60)
    report["run_s"] = round(run_s, 1)
    report["warmup_s"] = warmup_minutes * 60
    report["llm_cache_fill"] = llm_cache_fill
    # A cache that never stopped filling leaves the LLM server's memory unjudgeable.
    if llm_cache_fill is not None and not llm_cache_fill["full"]:
        report["passed"] = False
    report["baseline_s"] = baseline_minutes * 60
    report["sample_every_s"] = SAMPLE_EVERY_S
    report["lines_said"] = sum(lines)
    report["lines_by_caller"] = {
        caller.name: said for (caller, _, _), said in zip(callers, lines, strict=True)
    }
    return report


async def run(
    minutes: float,
    baseline_minutes: float,
    warmup_minutes: float,
    *,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaiwa-soak-") as state_dir:
        cfg: StackConfig = ephemeral_config(Path(state_dir))
        stack = Stack(cfg)
        try:
            await asyncio.to_thread(stack.start)
            return await soak(
                stack,
                minutes,
                baseline_minutes,
                on_sample=lambda n: print(f"==> soak: sample {n}", file=sys.stderr, flush=True),
                warmup_minutes=warmup_minutes,
            )
        finally:
            await asyncio.to_thread(stack.stop)
            if keep_logs is not None:
                shutil.copytree(cfg.logs_dir, keep_logs, dirs_exist_ok=True)
