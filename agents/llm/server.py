"""Run a llama.cpp server (xllamacpp) on a catalogue model: `python -m agents.llm.server`.

It is its own process so that every call on the machine shares one loaded model, and so a
crash of the model cannot take calls down with it: the agents see a failed request, apologise
and retry while the stack restarts the server.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ..models import ModelError, ModelStore


def serve(
    model: str,
    host: str,
    port: int,
    *,
    ctx: int,
    parallel: int,
    threads: int,
    cache_ram_mib: int,
    cache_reuse: int,
    slot_similarity: float,
) -> None:
    import xllamacpp

    path = ModelStore().path(model) / "model.gguf"  # verified before loading
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {model}
    params.hostnames = [host]
    params.port = port
    # Context is shared by the parallel slots: 2 slots of 2048 tokens fit short dialog turns
    # and sentence translations.
    params.n_ctx = ctx * parallel
    params.n_parallel = parallel
    params.cont_batching = True
    params.cache_prompt = True  # one source sentence, several targets: the prefix is reused
    # llama.cpp keeps prompts' states in host memory as well, so that a dialog whose slot
    # another call took need not be read again; its own default bound is 8 GiB. Every
    # translated sentence is a new prompt, and in a 30-minute soak the server grew by
    # 0.7 GB with nothing bounding it short of that (docs/operations.md).
    params.cache_ram_mib = cache_ram_mib
    # A long dialog drops its oldest turns to stay within its context (agents/dialog/
    # context.py): what follows them is the same, one place earlier. Shifting it in the
    # slot's cache, rather than reading it again, took one such prompt (735 tokens) from
    # 9.5 s to 0.5 s here; on a busy node the reading took 22-30 s, past the reply's timeout.
    params.n_cache_reuse = cache_reuse
    # A request goes to the slot whose cached prompt shares the most of its start, if that
    # is at least this share of it; else to the least recently used slot. After a drop, a
    # dialog shares only its instructions with its own slot (about 5% of the prompt), under
    # llama.cpp's default of 10%: it was sent to another slot and read whole, and the
    # translations, which share less still with anything, took the dialog's slot by age.
    params.slot_prompt_similarity = slot_similarity
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)  # blocks until the model is loaded
    print(f"llm server ready: {server.listening_address} model={model}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    del server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.llm.server")
    parser.add_argument("--model", default="qwen2.5-1.5b-instruct")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--parallel", type=int, default=2, help="requests served at once")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache-ram-mib",
        type=int,
        default=256,
        help="host memory for cached prompt states (about 28 KiB a token for the 1.5B model)",
    )
    parser.add_argument(
        "--cache-reuse",
        type=int,
        default=256,
        help="reuse runs of at least this many tokens of a slot's cached prompt found further "
        "on in the new one, shifting them instead of reading them again (0: off)",
    )
    parser.add_argument(
        "--slot-similarity",
        type=float,
        default=0.02,
        help="the least share of a prompt's start a slot's cached prompt must share for the "
        "request to go to it rather than to the least recently used slot",
    )
    args = parser.parse_args(argv)
    try:
        serve(
            args.model,
            args.host,
            args.port,
            ctx=args.ctx,
            parallel=args.parallel,
            threads=args.threads,
            cache_ram_mib=args.cache_ram_mib,
            cache_reuse=args.cache_reuse,
            slot_similarity=args.slot_similarity,
        )
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: the model {args.model} could not be loaded: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
