"""The `kaiwa` command: everything the make targets do goes through here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from core.paths import STATE_DIR

from .bench import search as bench_search
from .stack.config import Ports, Secrets, StackConfig
from .stack.install import install
from .stack.monitoring import write_scrape_config
from .stack.process import ManagedProcess, StackError
from .stack.services import Stack


def local_config() -> StackConfig:
    return StackConfig(
        state_dir=STATE_DIR,
        secrets=Secrets.load_or_create(STATE_DIR),
        ports=Ports.from_env(),
    )


def cmd_install(args: argparse.Namespace) -> int:
    install(args.profile)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    if not args.no_install:
        install("up")
    cfg = replace(local_config(), livekit_nodes=args.livekit_nodes)
    stack = Stack(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the stack as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, on_signal)
    # Explicit: a shell may start us with SIGINT ignored, and Python then keeps it ignored.
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()

    def on_ready(service: ManagedProcess) -> None:
        print(
            f"==> {service.name:<7} ready  ({time.monotonic() - started:4.1f} s, "
            f"log: {service.log_path})",
            flush=True,
        )

    try:
        print(f"==> starting the stack (state in {cfg.state_dir})", flush=True)
        stack.start(on_ready=on_ready)
        scrape = write_scrape_config(cfg, cfg.state_dir)
        with urllib.request.urlopen(f"{cfg.api_url}/healthz", timeout=10) as response:
            healthy = response.status == 200
        print(
            f"\nKaiwa is up{' and healthy' if healthy else ''} after "
            f"{time.monotonic() - started:.1f} s.\n"
            f"  Open the app:      {cfg.api_url}/\n"
            f"  Admin console:     {cfg.api_url}/admin.html\n"
            f"  API docs:          {cfg.api_url}/docs\n"
            f"  Health:            {cfg.api_url}/healthz\n"
            f"  LiveKit:           {', '.join(cfg.livekit_node_urls)}\n"
            f"  Phone (SIP):       sip:<number>@127.0.0.1:{cfg.ports.sip} (UDP/TCP); "
            "provision numbers with `kaiwa sip apply FILE` (docs/phone.md)\n"
            f"  Admin password:    in {cfg.state_dir / 'secrets.env'} (ADMIN_PASSWORD)\n"
            f"  Logs:              {cfg.logs_dir}\n"
            f"  Metrics:           prometheus --config.file={scrape} (docs/operations.md)\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while True:
            stack.supervise(on_restart=_report_restart, on_move=_report_move)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\n==> stopping", flush=True)
        return 0
    finally:
        # On any exit, StackError included (main() prints it last, after this).
        stack.stop(on_stop=lambda s: print(f"==> stopping {s.name}", flush=True))
        print("==> stopped", flush=True)


def _report_restart(service: ManagedProcess, code: int) -> None:
    print(
        f"==> {service.name} exited with code {code}; restarting it. Last lines of "
        f"{service.log_path}:\n{service.log_tail(5)}",
        flush=True,
    )


def _report_move(service: ManagedProcess, url: str) -> None:
    print(
        f"==> {service.name}: its LiveKit node stopped answering; restarting it on {url}",
        flush=True,
    )


def cmd_models(args: argparse.Namespace) -> int:
    from agents.models import CATALOG, ModelError, ModelStore
    from agents.models.catalog import PROFILES
    from agents.models.report import table

    store = ModelStore()
    if args.action == "list":
        print(table(store))
        return 0
    names = args.names or list(PROFILES[args.profile])
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise StackError(f"unknown model(s) {unknown}; known: {', '.join(CATALOG)}")
    failed = False
    for name in names:
        try:
            if args.action == "install":
                store.install(CATALOG[name], say=lambda m: print(f"==> {m}", flush=True))
            else:
                store.verify(CATALOG[name], full=True)
            print(f"==> {name}: verified", flush=True)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from .eval import dialog, speech
    from .stack.process import free_port
    from .stack.services import llm_service

    if args.suite == "languages":  # speech-to-text only: no language model to start
        figures = speech.evaluate_languages(args.stt_model)
        print(json.dumps(figures, indent=1) if args.json else speech.languages_table(figures))
        return 0

    def evaluate(url: str) -> dict[str, Any]:
        if args.suite == "dialog":
            return asyncio.run(dialog.evaluate(url, args.llm_model))
        return asyncio.run(speech.evaluate(url, args.llm_model, args.stt_model))

    if args.llm_url is None:
        with tempfile.TemporaryDirectory() as state:
            cfg = replace(local_config(), state_dir=Path(state), llm_model=args.llm_model)
            cfg = replace(cfg, ports=replace(cfg.ports, llm=free_port()))
            llm = llm_service(cfg)
            print(f"==> starting the LLM server ({args.llm_model})", file=sys.stderr)
            llm.start()
            try:
                llm.wait_ready()
                figures = evaluate(cfg.llm_base_url)
            finally:
                llm.stop()
    else:
        figures = evaluate(args.llm_url)
    table = dialog.table if args.suite == "dialog" else speech.table
    print(json.dumps(figures, ensure_ascii=False, indent=1) if args.json else table(figures))
    return 0


def print_figures(
    args: argparse.Namespace, figures_of: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run a bench to its figures and print them as JSON: one line with --json, else indented.
    The figures carry the machine's calibration, measured before the bench began."""
    import asyncio
    import json

    figures = asyncio.run(figures_of())
    figures["calibration"] = args.calibration.figures()
    print(json.dumps(figures, ensure_ascii=False, indent=None if args.json else 1))
    return figures


def calibrated(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A bench command that first takes its share of the CPU (`--cpus`), then measures the
    machine and prints the calibration line, on stderr, before any figure."""

    def bench(args: argparse.Namespace) -> int:
        import asyncio

        from .bench.calibration import calibrate
        from .bench.cpu_share import CpuShareError, limit_cpu

        try:
            share = "all" if args.cpus is None else limit_cpu(args.cpus)
        except CpuShareError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        args.calibration = asyncio.run(calibrate(share))
        print(args.calibration.line(), file=sys.stderr, flush=True)
        return run(args)

    return bench


def cmd_bench(args: argparse.Namespace) -> int:
    import asyncio
    import json

    # Imported here: the recorder bench pulls in livekit, which `kaiwa up` does not need.
    from .bench import recorder

    figures = asyncio.run(recorder.run(args.rooms, args.seconds, args.keep_logs))
    figures["calibration"] = args.calibration.figures()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:34} {value}")
    return 0


def cmd_bench_interpret(args: argparse.Namespace) -> int:
    from .bench import interpret

    print_figures(args, lambda: interpret.run(args.compare, args.keep_logs))
    return 0


def cmd_bench_dialog(args: argparse.Namespace) -> int:
    from .bench import dialog

    print_figures(args, lambda: dialog.run(args.compare, args.keep_logs, args.llm))
    return 0


def cmd_bench_phone(args: argparse.Namespace) -> int:
    from .bench import phone

    print_figures(args, lambda: phone.run(args.calls))
    return 0


def cmd_bench_recovery(args: argparse.Namespace) -> int:
    from .bench import recovery

    print_figures(args, lambda: recovery.run(args.kills, args.workers))
    return 0


def cmd_bench_nodes(args: argparse.Namespace) -> int:
    from .bench import nodes

    print_figures(args, lambda: nodes.run(args.rooms, args.outages))
    return 0


def cmd_bench_load(args: argparse.Namespace) -> int:
    from .bench import load

    print_figures(args, lambda: load.run(tuple(args.mode), args.max_rooms, args.plot))
    return 0


def cmd_bench_dispatch(args: argparse.Namespace) -> int:
    from .bench import dispatch

    print_figures(args, lambda: dispatch.run(tuple(args.rooms)))
    return 0


def cmd_bench_loss(args: argparse.Namespace) -> int:
    from .bench import loss

    print_figures(args, lambda: loss.run(tuple(args.loss)))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from .bench import soak

    figures = print_figures(
        args,
        lambda: soak.run(
            args.minutes, args.baseline_minutes, args.warmup_minutes, keep_logs=args.keep_logs
        ),
    )
    return 0 if figures["passed"] else 1


def cmd_bench_web(args: argparse.Namespace) -> int:
    from .bench import web

    print_figures(args, lambda: web.run(args.joins, args.drops))
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    return bench_search.run(args)


def livekit_connection() -> tuple[str, str, str]:
    """LiveKit's HTTP URL, key and secret: LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET
    when LIVEKIT_URL is set (a deployment), else the local stack's."""
    if "LIVEKIT_URL" in os.environ:
        from core.settings import LiveKitSettings

        settings = LiveKitSettings()
        return settings.livekit_http_url, settings.livekit_api_key, settings.livekit_api_secret
    cfg = local_config()
    return (
        cfg.livekit_url.replace("ws://", "http://"),
        cfg.secrets.livekit_api_key,
        cfg.secrets.livekit_api_secret,
    )


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_sip(args: argparse.Namespace) -> int:
    import asyncio

    import aiohttp
    from livekit import api as lkapi
    from pydantic import ValidationError

    from . import sip

    try:
        desired = None
        if args.action == "apply":
            desired = sip.validate(
                sip.read_file(args.file),
                allow_open=args.allow_open,
                settings=sip.SipCliSettings(),
                environ=os.environ,
            )
            for warning in desired.warnings:
                print(f"warning: {warning}", file=sys.stderr)

        async def run() -> int:
            async with lkapi.LiveKitAPI(*livekit_connection()) as livekit:
                if desired is None:
                    findings = await sip.check(livekit.sip, _say)
                    return 1 if any(f.severity == "error" for f in findings) else 0
                changes = await sip.apply(livekit.sip, desired, prune=args.prune, say=_say)
                print(f"{len(changes)} changes", flush=True)
                return 0

        return asyncio.run(run())
    except sip.SipRefused as exc:
        for problem in exc.problems:
            print(f"refused: {problem}", file=sys.stderr)
        print("refused: nothing was changed", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError, lkapi.TwirpError) as exc:
        print(f"error: LiveKit: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # LIVEKIT_* or KAIWA_SIP_* settings
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_sip_call(args: argparse.Namespace) -> int:
    import asyncio

    import aiohttp
    from livekit import api as lkapi

    from . import sip

    async def run() -> int:
        async with lkapi.LiveKitAPI(*livekit_connection()) as livekit:
            placed = await sip.call(
                livekit,
                args.number,
                trunk=args.trunk,
                mode=args.mode,
                scenario=args.scenario,
                language=args.language,
                wait=args.wait,
                ringing_timeout_s=args.ringing_timeout,
                say=_say,
            )
        state = "answered" if args.wait else "dialling"
        print(f"{state}: room {placed.room_name}, participant {placed.participant_identity}")
        return 0

    try:
        return asyncio.run(run())
    except sip.SipCallFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError, lkapi.TwirpError) as exc:
        print(f"error: LiveKit: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kaiwa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_install = sub.add_parser("install", help="install what the stack or the tests need")
    p_install.add_argument("--profile", choices=["up", "test"], default="up")
    p_install.set_defaults(func=cmd_install)

    p_up = sub.add_parser("up", help="start the whole local stack and wait for Ctrl-C")
    p_up.add_argument("--no-install", action="store_true", help="skip the install checks")
    p_up.add_argument(
        "--livekit-nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="LiveKit nodes sharing the stack's Redis, each with an agent worker",
    )
    p_up.set_defaults(func=cmd_up)

    p_models = sub.add_parser("models", help="list, install or verify the offline models")
    p_models.add_argument(
        "action", nargs="?", choices=["list", "install", "verify"], default="list"
    )
    p_models.add_argument("names", nargs="*", help="model names (default: the profile's)")
    p_models.add_argument("--profile", choices=["default", "test", "all"], default="default")
    p_models.set_defaults(func=cmd_models)

    p_eval = sub.add_parser("eval", help="measure the engines on the project's evaluation set")
    p_eval.add_argument(
        "suite",
        choices=["speech", "dialog", "languages"],
        help="speech: STT, MT and TTS on the eval set; dialog: sensible replies per scenario; "
        "languages: speech in another language than the one set, told apart",
    )
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--llm-url", help="an OpenAI-compatible endpoint (default: start one)")
    p_eval.add_argument("--llm-model", default="qwen2.5-1.5b-instruct")
    p_eval.add_argument("--stt-model", default="whisper-base")
    p_eval.set_defaults(func=cmd_eval)

    p_bench = sub.add_parser("bench", help="measure a capability and print its figures")
    bench = p_bench.add_subparsers(dest="suite", required=True)
    p_recorder = bench.add_parser(
        "recorder", help="recordings per core, completeness, gaps (a stack of its own)"
    )
    p_recorder.add_argument("--rooms", type=int, default=20, help="concurrent calls")
    p_recorder.add_argument("--seconds", type=float, default=60, help="length of each call")
    p_recorder.add_argument("--json", action="store_true", help="print one JSON object")
    p_recorder.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy the stack's logs here at the end"
    )
    p_recorder.set_defaults(func=cmd_bench)
    p_interpret = bench.add_parser(
        "interpret", help="caption and translation lag, interim cadence, CPU (a stack of its own)"
    )
    p_interpret.add_argument(
        "--compare", action="store_true", help="also run LiveKit's multi-user translator design"
    )
    p_interpret.add_argument("--json", action="store_true", help="print one JSON object")
    p_interpret.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy the stack's logs here at the end"
    )
    p_interpret.set_defaults(func=cmd_bench_interpret)
    p_dialog = bench.add_parser(
        "dialog", help="voice-to-voice latency, barge-in stop, CPU (a stack of its own)"
    )
    p_dialog.add_argument(
        "--compare", action="store_true", help="also run a plain AgentSession with defaults"
    )
    p_dialog.add_argument("--json", action="store_true", help="print one JSON object")
    p_dialog.add_argument(
        "--llm", metavar="MODEL", help="the LLM from the model catalogue (default: the stack's)"
    )
    p_dialog.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy the stack's logs here at the end"
    )
    p_dialog.set_defaults(func=cmd_bench_dialog)
    p_phone = bench.add_parser(
        "phone",
        help="phone calls by SIPp: answer time, voice to voice, STT, a flood (a stack of its own)",
    )
    p_phone.add_argument("--calls", type=int, default=20, help="calls timed for the answer")
    p_phone.add_argument("--json", action="store_true", help="print one JSON object")
    p_phone.set_defaults(func=cmd_bench_phone)
    p_recovery = bench.add_parser(
        "recovery",
        help="a call's worker killed mid-sentence: time to a new agent's voice; a drain "
        "(a stack of its own)",
    )
    p_recovery.add_argument("--kills", type=int, default=10, help="kills timed")
    p_recovery.add_argument(
        "--workers",
        type=int,
        choices=(1, 2),
        default=2,
        help="agent workers: 1 is the stack `make up` starts, whose one worker is restarted "
        "as `kaiwa up` restarts it",
    )
    p_recovery.add_argument("--json", action="store_true", help="print one JSON object")
    p_recovery.set_defaults(func=cmd_bench_recovery)
    p_nodes = bench.add_parser(
        "nodes",
        help="two LiveKit nodes: agent dispatch on a room's own node and across; calls "
        "through again after a Redis restart and a node's death (a stack of its own)",
    )
    p_nodes.add_argument("--rooms", type=int, default=10, help="rooms timed for dispatch")
    p_nodes.add_argument("--outages", type=int, default=3, help="Redis restarts and node deaths")
    p_nodes.add_argument("--json", action="store_true", help="print one JSON object")
    p_nodes.set_defaults(func=cmd_bench_nodes)
    p_load = bench.add_parser(
        "load",
        help="ramp concurrent rooms (dialog, then interpret) until p95 lag reaches 3 s or a "
        "translation drops: the capacity of one node (a stack of its own)",
    )
    p_load.add_argument(
        "--mode", nargs="+", choices=["dialog", "interpret"], default=["dialog", "interpret"]
    )
    p_load.add_argument("--max-rooms", type=int, default=6, help="the ramp's last step")
    p_load.add_argument("--plot", type=Path, help="write rooms against lag as a PNG here")
    p_load.add_argument("--json", action="store_true", help="print one JSON object")
    p_load.set_defaults(func=cmd_bench_load)
    p_dispatch = bench.add_parser(
        "dispatch",
        help="agent dispatch and join timed by the Python caller and by LiveKit's Go SDK "
        "(infra/dispatch-check, built on first use), N rooms at once (a stack of its own)",
    )
    p_dispatch.add_argument(
        "--rooms", type=int, nargs="+", default=[1, 2], help="rooms made at once, per step"
    )
    p_dispatch.add_argument("--json", action="store_true", help="print one JSON object")
    p_dispatch.set_defaults(func=cmd_bench_dispatch)
    p_loss = bench.add_parser(
        "loss",
        help="an interpreted call with its callers behind a lossy link (a network namespace, "
        "nftables dropping packets), at each loss level; needs root (a stack of its own)",
    )
    p_loss.add_argument(
        "--loss", type=int, nargs="+", default=[0, 5, 10], help="percent of packets dropped"
    )
    p_loss.add_argument("--json", action="store_true", help="print one JSON object")
    p_loss.set_defaults(func=cmd_bench_loss)
    p_soak = bench.add_parser(
        "soak",
        help="a dialog and an interpreted call side by side for a long time, every process "
        "sampled for leaks (a stack of its own); exits 1 if a slope or a queue grew",
    )
    p_soak.add_argument(
        "--warmup-minutes",
        type=float,
        default=15,
        help="how long the calls run first, sampled but not judged, while caches fill",
    )
    p_soak.add_argument(
        "--minutes", type=float, default=30, help="how long the calls run after the warm-up"
    )
    p_soak.add_argument(
        "--baseline-minutes",
        type=float,
        default=5,
        help="the start of those minutes that sets each series' noise",
    )
    p_soak.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy the stack's logs here at the end"
    )
    p_soak.add_argument("--json", action="store_true", help="print one JSON object")
    p_soak.set_defaults(func=cmd_bench_soak)
    p_web = bench.add_parser(
        "web", help="caller page in Chromium: join to greeting, reconnect (a stack of its own)"
    )
    p_web.add_argument("--joins", type=int, default=7, help="timed joins after a warm-up one")
    p_web.add_argument("--drops", type=int, default=3, help="5 s network drops, one call")
    p_web.add_argument("--json", action="store_true", help="print one JSON object")
    p_web.set_defaults(func=cmd_bench_web)
    p_search = bench.add_parser(
        "search", help="history search at 1M segments, SQLite and PostgreSQL"
    )
    bench_search.add_arguments(p_search)
    p_search.set_defaults(func=cmd_bench_search)
    for p_suite in bench.choices.values():
        p_suite.add_argument(
            "--cpus",
            type=float,
            metavar="N",
            help="run the bench and its stack on N cores' worth of CPU, as a smaller machine "
            "would (a cgroup quota where allowed, else pinned to N cores)",
        )
        p_suite.set_defaults(func=calibrated(p_suite.get_default("func")))

    p_sip = sub.add_parser("sip", help="phone trunks and dispatch rules in LiveKit")
    sip_actions = p_sip.add_subparsers(dest="action", required=True)
    p_apply = sip_actions.add_parser(
        "apply", help="make LiveKit's trunks and rules what a TOML file says (docs/phone.md)"
    )
    p_apply.add_argument("file", type=Path, help="the trunks and rules, in TOML")
    p_apply.add_argument(
        "--prune", action="store_true", help="delete Kaiwa's trunks and rules the file omits"
    )
    p_apply.add_argument(
        "--allow-open",
        action="store_true",
        help="accept a trunk with no address list and no credentials (loopback bridge only)",
    )
    p_apply.set_defaults(func=cmd_sip)
    p_check = sip_actions.add_parser(
        "check", help="list every trunk and rule in LiveKit; fail on an unsafe one"
    )
    p_check.set_defaults(func=cmd_sip)
    p_call = sip_actions.add_parser(
        "call", help="call a phone from a new room with the agent (an outbound trunk)"
    )
    p_call.add_argument("number", help="the number to call, E.164 (+81...)")
    p_call.add_argument("--trunk", required=True, help="the outbound trunk's name in LiveKit")
    p_call.add_argument("--mode", choices=["dialog", "interpret"], default="dialog")
    p_call.add_argument("--scenario", help="the dialog's scenario (GET /api/scenarios)")
    p_call.add_argument("--language", default="en", help="what the phone speaks and hears")
    p_call.add_argument("--wait", action="store_true", help="return once the phone answered")
    p_call.add_argument(
        "--ringing-timeout", type=int, default=30, metavar="S", help="give up after S seconds"
    )
    p_call.set_defaults(func=cmd_sip_call)

    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
