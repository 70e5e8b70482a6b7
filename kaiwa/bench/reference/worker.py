"""The reference worker: runs the benches' reference designs, apart from the product worker.

It registers with LiveKit as REFERENCE_AGENT_NAME and serves only the rooms a bench
dispatches to it by that name: a dialog room gets the plain AgentSession (plain_dialog.py),
an interpreted room LiveKit's multi-user translator (multi_user_translator.py). Everything
else is the product worker's (agents/worker.py): its settings, engines and roles, how it
joins a room and leaves it, how it keeps a dialog call, and jobs as threads of one process
with the models loaded once, so the two designs are measured on equal terms.

`python -m kaiwa.bench.reference [--ready-file PATH]`: the file is written once the worker
has registered, when a room dispatched to it will be served.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType
from livekit.agents.__main__ import main as agents_main

from agents import engines, roles, worker
from agents.models import ModelError

from . import REFERENCE_AGENT_NAME, multi_user_translator, plain_dialog

logger = logging.getLogger("kaiwa.bench.reference")

settings = worker.settings
call_slots = worker.CallSlots(settings.agent_max_sessions)

# As the product worker's server (agents/worker.py), on a port of its own.
server = AgentServer(
    host=settings.agent_http_host,
    port=settings.agent_http_port,
    num_idle_processes=settings.agent_idle_processes,
    job_executor_type=JobExecutorType.THREAD,
    setup_fnc=worker.prewarm,
    initialize_process_timeout=120,
    load_fnc=call_slots.load,
    load_threshold=1.0,
)


@server.rtc_session(agent_name=REFERENCE_AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    await worker.serve_call(ctx, run_reference)


async def run_reference(
    ctx: JobContext, done: asyncio.Event, mode: str, metadata: dict[str, Any]
) -> None:
    if mode == "interpret":
        await multi_user_translator.run(
            ctx.room,
            done,
            make_stt=lambda language: roles.make_stt(settings, language),
            make_llm=lambda: roles.make_llm(settings),
            make_tts=lambda language: roles.make_tts(settings, language),
            vad_model=engines.vad(),
        )
    else:
        await plain_dialog.run(ctx, done, metadata)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kaiwa.bench.reference")
    parser.add_argument("--ready-file", type=Path, help="written once the worker registered")
    args = parser.parse_args()
    if settings.agent_prewarm:
        # Before registering, as the product worker: no measured call waits for a model.
        try:
            engines.warm(settings.stt_model)
        except ModelError as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.ready_file is not None:
        ready_file: Path = args.ready_file

        def registered(*_: Any) -> None:
            logger.info("reference worker registered", extra={"agent": REFERENCE_AGENT_NAME})
            ready_file.write_text(REFERENCE_AGENT_NAME)

        server.on("worker_registered", registered)
    agents_main(["start", __file__, "--log-format", "json"])
