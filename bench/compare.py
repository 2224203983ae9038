"""`python -m bench compare --base-url URL [SCENARIO...]`: the same load against kelpie-trio
(started by the bench) and against another Letta-compatible server, side by side.

Each scenario runs twice with the same sizes, seed, model handle and fake provider: first
on a kelpie-trio the bench starts, then on the server at URL (start it with
`OPENAI_BASE_URL=http://127.0.0.1:PORT/v1` and pass `--provider-port PORT`, so its LLM
calls reach the bench's provider; `--server-pid` lets the bench read its CPU and RSS, and
given again, its database server's). Each server names the provider's model its own way
(Letta lists the models of an OPENAI_BASE_URL that is not OpenAI's as `openai-proxy/...`),
so unless `--model`/`--embedding` say otherwise the other server's handles are read from
its `GET /v1/models/` and `/v1/models/embedding`: those of the fake provider's models. The
table shows each figure for both and the ratio other / kelpie-trio (above 1: the other
server spends or waits more, or, for msgs/s, carries more). The framework floor is not
measured here (`--no-floor` is implied): the comparison is between the two servers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from bench import SCENARIOS

__all__ = ["COMPARED", "Row", "compare_rows", "pick_handle", "run_compare", "served_handles"]

# (label, path into a scenario's result, digits): the figures both servers have.
COMPARED: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("msgs/s", ("msgs_per_s",), 1),
    ("latency p50 ms", ("latency_ms", "p50"), 1),
    ("latency p99 ms", ("latency_ms", "p99"), 1),
    ("overhead p50 ms", ("overhead_ms", "p50"), 1),
    ("overhead p99 ms", ("overhead_ms", "p99"), 1),
    ("server CPU ms/msg", ("server", "cpu_ms_per_msg"), 2),
    ("server RSS MB", ("server", "rss_mb"), 1),
    ("errors", ("errors",), 0),
)


@attrs.frozen
class Row:
    scenario: str
    figure: str
    kelpie: float | None
    other: float | None
    digits: int

    @property
    def ratio(self) -> float | None:
        """other / kelpie-trio, when both are known and kelpie-trio's is not zero."""
        if self.kelpie is None or self.other is None or self.kelpie == 0:
            return None
        return self.other / self.kelpie


def _dig(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def compare_rows(kelpie: dict[str, Any], other: dict[str, Any]) -> list[Row]:
    """One scenario's figures for both servers (sans-IO, over the results' dicts)."""
    return [
        Row(kelpie["scenario"], label, _dig(kelpie, path), _dig(other, path), digits)
        for label, path, digits in COMPARED
    ]


def pick_handle(listing: Any, field: str, name: str) -> str | None:
    """The handle a server lists for the model `name` (`field`: `model` for LLMs,
    `embedding_model` for embeddings), an OpenAI provider's first; None if it lists none."""
    if not isinstance(listing, list):
        return None
    found = [
        entry["handle"]
        for entry in listing
        if isinstance(entry, dict) and entry.get(field) == name and entry.get("handle")
    ]
    found.sort(key=lambda handle: not handle.startswith(("openai/", "openai-proxy/")))
    return found[0] if found else None


async def served_handles(url: str, headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The handles under which the server at `url` serves the fake provider's chat model
    and its text-embedding-3-small (None for one it does not list)."""
    import json

    from bench.fake_provider import MODEL
    from bench.http1 import Connection

    conn = Connection(url, headers=headers)
    listings = []
    try:
        for path in ("/v1/models/", "/v1/models/embedding"):
            reply = await conn.request("GET", path)
            listings.append(json.loads(reply.body) if reply.status == 200 else None)
    finally:
        await conn.aclose()
    return (
        pick_handle(listings[0], "model", MODEL),
        pick_handle(listings[1], "embedding_model", "text-embedding-3-small"),
    )


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_comparison(rows: list[Row], other_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"kelpie-trio vs {other_name} (same load)")
    for column in ("scenario", "figure", "kelpie-trio", other_name, "other / kelpie"):
        table.add_column(column, justify="left" if column in ("scenario", "figure") else "right")
    for row in rows:
        ratio = row.ratio
        table.add_row(
            row.scenario,
            row.figure,
            _cell(row.kelpie, row.digits),
            _cell(row.other, row.digits),
            "-" if ratio is None else f"{ratio:.2f}x",
        )
    console.print(table)


def run_compare(args: argparse.Namespace, names: list[str]) -> int:
    import trio

    from bench import report
    from bench.cli import done_with
    from bench.scenarios import Options, Runner

    if not args.base_url:
        print("compare needs --base-url: the server to compare kelpie-trio with", file=sys.stderr)
        return 2
    if args.llm == "fake" and not args.provider_port:
        print("compare needs --provider-port PORT: start the other server with "
              "OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 so its LLM calls reach the bench's "
              "fake provider", file=sys.stderr)  # fmt: skip
        return 2
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario {unknown[0]!r}: use {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    two_node = [n for n in names if n == "two-nodes"]
    if two_node:
        print("compare runs single-server scenarios; two-nodes is not one", file=sys.stderr)
        return 2
    if "schedules" in names:  # it counts the firings on a server it starts (bench/schedules.py)
        print("compare cannot run schedules: it starts its own server", file=sys.stderr)
        return 2
    names = names or ["steady"]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kelpie-bench-compare-"))
    common = {
        "password": None,  # the bench's kelpie-trio runs without one
        "store": args.store,
        "llm": args.llm,
        "smoke": args.smoke,
        "overrides": {
            "agents": args.agents,
            "messages": args.messages,
            "concurrency": args.concurrency,
            "latency": args.latency,
        },
        "floor": False,
        "provider_port": args.provider_port,
        "seed": args.seed,
        "work_dir": work,
        "model": args.model,
        "embedding": args.embedding,
    }
    ours = Options(**common)
    theirs = attrs.evolve(
        ours, base_url=args.base_url, password=args.password, server_pid=args.server_pid
    )
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []
    started = report.machine()  # its load average is the one before either side ran

    async def main() -> None:
        nonlocal theirs
        if args.llm == "fake" and not (args.model and args.embedding):
            model, embedding = await served_handles(args.base_url, theirs.headers)
            theirs = attrs.evolve(
                theirs, model=args.model or model, embedding=args.embedding or embedding
            )
            print(f"{args.base_url} serves the fake provider's models as "
                  f"{theirs.handles()[0]} and {theirs.handles()[1]}")  # fmt: skip
        for name in names:
            # The machine's load around each side's run: a shared machine's numbers need it.
            mine = await Runner(ours).run(name)
            mine["load_avg_after"] = _load()
            other = await Runner(theirs).run(name)
            other["load_avg_after"] = _load()
            results.append((mine, other))

    try:
        trio.run(main)
    finally:
        done_with(work, keep=args.keep_data)
    rows = [row for mine, other in results for row in compare_rows(mine, other)]
    print_comparison(rows, args.base_url)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"compare-{stamp}.json"
    report.write_json(
        path,
        {
            "bench": "kelpie-trio bench compare 1",
            "machine": started,
            "other": args.base_url,
            "handles": {"kelpie_trio": list(ours.handles()), "other": list(theirs.handles())},
            "load_avg_at_end": _load(),
            "scenarios": [{"kelpie_trio": mine, "other": other} for mine, other in results],
            "rows": [attrs.asdict(row) | {"ratio": row.ratio} for row in rows],
        },
    )
    print(f"wrote {path}")
    return 0
