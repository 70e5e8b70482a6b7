"""`kaiwa bench search`: the history list's search at scale, on SQLite and PostgreSQL.

Generates a call history (kaiwa.bench.corpus) into a fresh SQLite file and a fresh
throwaway PostgreSQL cluster, both made by the API's own migrations, then times a fixed mix
of searches through `api.conversations.list_conversations`, the function behind
GET /api/conversations, and checks that both databases return the same pages
(kaiwa.bench.search_run). Figures and method: docs/history-search.md.

    python -m kaiwa.bench.search [--json] [--segments N] [--database sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_SEGMENTS = 1_000_000
SEED = 20261122
# The cluster the bench starts: modest memory, as on a small self-hosted server; more
# maintenance memory only to build the indexes faster.
POSTGRES_SETTINGS = {"shared_buffers": "256MB", "maintenance_work_mem": "512MB"}


def main(argv: list[str] | None = None) -> int:
    """`kaiwa bench search`, with its calibration line."""
    from kaiwa.cli import main as kaiwa

    return kaiwa(["bench", "search", *(sys.argv[1:] if argv is None else argv)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--segments",
        type=int,
        default=DEFAULT_SEGMENTS,
        help=f"transcript segments, about 100 a call (default {DEFAULT_SEGMENTS:,})",
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seed", type=int, default=SEED, help="the same seed, the same history")


def run(args: argparse.Namespace) -> int:
    # Imported here: the API and SQLAlchemy are heavy, and `kaiwa --help` needs neither.
    from ..stack.postgres import fresh_postgres_database, postgres_server
    from .search_run import PAGE, QUERIES, bench_database

    result: dict[str, Any] = {"segments": args.segments, "queries": QUERIES, "page": PAGE}
    pages: dict[str, list[list[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="kaiwa-bench-") as folder:
        if args.database in ("sqlite", "both"):
            url = f"sqlite:///{Path(folder) / 'history.db'}"
            result["sqlite"], pages["sqlite"] = bench_database(
                "sqlite", url, args.segments, args.seed
            )
        if args.database in ("postgresql", "both"):
            with postgres_server(POSTGRES_SETTINGS) as server:
                url = fresh_postgres_database(server, "kaiwa_bench")
                result["postgresql"], pages["postgresql"] = bench_database(
                    "postgresql", url, args.segments, args.seed
                )
    if len(pages) == 2:
        result["same_results"] = pages["sqlite"] == pages["postgresql"]
    result["calibration"] = args.calibration.figures()
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
    return 0 if result.get("same_results", True) else 1


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['segments']:,} segments, {result['queries']} searches, first page of 25"]
    for name in ("sqlite", "postgresql"):
        if name not in result:
            continue
        r = result[name]
        lines.append(
            f"{name:<11} p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
            f"max {r['max_ms']:6.1f} ms  (load {r['load_s']:.0f} s, "
            f"{r['conversations']:,} conversations)"
        )
        for kind, k in r["by_kind"].items():
            lines.append(
                f"  {kind:<18} n={k['n']:<3} p50 {k['p50_ms']:6.1f}  p95 {k['p95_ms']:6.1f}"
            )
    if "same_results" in result:
        lines.append(f"same pages on both databases: {result['same_results']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
