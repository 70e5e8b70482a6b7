"""The calibration line every bench prints first: how fast this machine runs the models.

A figure holds only with its machine: the same bench gives 1.8 s on one 2-core machine and
4.8 s on another. So before a bench starts its stack, on an idle machine (and inside the CPU
share `--cpus` gave it), it measures the three speeds its figures are made of, with the
stack's default models:
- the LLM reading a prompt, in tokens a second (a fresh llama.cpp server of its own, so
  nothing of the prompt is cached);
- the LLM writing, in tokens a second;
- one Whisper decode of a spoken sentence, in seconds (the median of three, after one to
  warm up).
Figures from two machines are then read side by side by their calibration lines.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from agents import engines
from agents.stt.whisper_model import WhisperOptions
from core.paths import REPO_ROOT
from kaiwa.eval.speech import to_16k
from kaiwa.stack.config import StackConfig
from kaiwa.stack.process import ManagedProcess, free_port
from kaiwa.stack.services import http_ok

LLM_MODEL = StackConfig.llm_model
STT_MODEL = "whisper-base"
# About 270 tokens: as long as a translation direction's prompt, shorter than a role card.
PROMPT = " ".join(
    [
        "You are a patient Japanese teacher. The learner speaks English and Vietnamese and is",
        "practising ordering at a cafe in Tokyo. Answer in one short sentence of plain Japanese,",
        "then give its English meaning.",
    ]
    * 6
)
GENERATED_TOKENS = 48
SENTENCE = "Good morning. I would like a large cup of hot coffee and a slice of cake, please."
DECODES = 3


@dataclass(frozen=True)
class Calibration:
    cpu: str  # the processor's model name
    isa: str  # the widest vector instructions it has: what the models' kernels pick
    cores: int  # the cores this process may run on
    cpu_share: str  # what `--cpus` set, or "all"
    llm_prompt_tokens_per_s: float
    llm_generation_tokens_per_s: float
    whisper_decode_s: float  # one decode of SENTENCE (about 5 s of speech)

    def line(self) -> str:
        return (
            f"calibration: {self.cpu} ({self.isa}), {self.cores} cores, share {self.cpu_share}; "
            f"LLM {LLM_MODEL} reads {self.llm_prompt_tokens_per_s:.1f} tokens/s, "
            f"writes {self.llm_generation_tokens_per_s:.1f} tokens/s; "
            f"{STT_MODEL} decodes a 5 s sentence in {self.whisper_decode_s:.2f} s"
        )

    def figures(self) -> dict[str, Any]:
        return asdict(self)


async def calibrate(cpu_share: str = "all", llm_url: str | None = None) -> Calibration:
    """Measure this machine. `llm_url`: a running server of the calibration model to use
    instead of a fresh one (a test's)."""
    if llm_url is None:
        prompt_tps, generation_tps = await asyncio.to_thread(_with_own_llm_server)
    else:
        prompt_tps, generation_tps = await llm_speed(llm_url)
    return Calibration(
        cpu=_cpu_model(),
        isa=_isa(),
        cores=len(os.sched_getaffinity(0)),
        cpu_share=cpu_share,
        llm_prompt_tokens_per_s=prompt_tps,
        llm_generation_tokens_per_s=generation_tps,
        whisper_decode_s=await asyncio.to_thread(whisper_decode_s),
    )


async def llm_speed(url: str) -> tuple[float, float]:
    """Prompt and generation speed from llama.cpp's own timings of one completion. A
    per-run prefix keeps the server from serving any of the prompt from its cache."""
    body = {
        "prompt": f"[{time.time_ns()}] {PROMPT}",
        "n_predict": GENERATED_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{url}/completion", json=body)
        response.raise_for_status()
    timings = response.json()["timings"]
    return (
        round(float(timings["prompt_per_second"]), 1),
        round(float(timings["predicted_per_second"]), 1),
    )


def whisper_decode_s() -> float:
    voice = engines.voice("en")
    audio = to_16k(voice.synthesize(SENTENCE), voice.sample_rate).astype("float32") / 32768.0
    engine = engines.whisper(STT_MODEL)
    options = WhisperOptions(language="en")
    engine.transcribe(audio, options)  # the first decode also sets up the kernels
    times = []
    for _ in range(DECODES):
        started = time.perf_counter()
        engine.transcribe(audio, options)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def _with_own_llm_server() -> tuple[float, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kaiwa-calibration-") as logs:
        server = ManagedProcess(
            name="calibration-llm",
            argv=[
                sys.executable,
                "-m",
                "agents.llm.server",
                "--model",
                LLM_MODEL,
                "--port",
                str(port),
                "--parallel",
                "1",
            ],
            cwd=REPO_ROOT,
            log_path=Path(logs) / "llm.log",
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
            ready_timeout_s=120,
        )
        server.start()
        try:
            server.wait_ready()
            return asyncio.run(llm_speed(f"http://127.0.0.1:{port}"))
        finally:
            server.stop()


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _isa() -> str:
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    widest = next(
        (isa.upper() for isa in ("avx512f", "avx2", "avx", "asimd") if isa in flags), "no AVX"
    )
    forced = os.environ.get("CT2_FORCE_CPU_ISA")
    return f"{widest}, CTranslate2 forced to {forced}" if forced else widest


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
