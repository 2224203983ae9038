"""`python -m bench` / `kelpie-trio bench`: run scenarios, print the table, write JSON and PNG."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import SCENARIOS

__all__ = ["add_arguments", "main", "run"]

SMOKE_SCENARIOS = ("steady", "hot-agent", "streaming", "cold-activation", "idle-footprint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"one or more of {', '.join(SCENARIOS)}, or all (default: steady); or "
        "compare SCENARIO... with --base-url: the same load on kelpie-trio and on that server, "
        "side by side; or table: the performance issue's table, each row at its own size, in "
        "one run (about 20 minutes; --smoke: tiny sizes)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes of every single-node scenario (CI's ~20 s run); sizes flags still win",
    )
    parser.add_argument(
        "--base-url",
        help="bench an already running Letta-compatible server instead of starting one",
    )
    parser.add_argument("--base-url-b", help="two-nodes with --base-url: the second node")
    parser.add_argument(
        "--provider-port",
        type=int,
        default=0,
        help="port of the bench's fake provider (default: a free one); with --base-url, start "
        "the server with OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 so its LLM calls reach it",
    )
    parser.add_argument("--password", help="Bearer token for --base-url")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        help="with --base-url: the server's process id, to read its CPU and RSS (and its "
        "children's) like those of a server the bench starts; again for each process that "
        "serves it without being its child (its database server), counted with it",
    )
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument(
        "--llm",
        choices=["fake", "sim"],
        default="fake",
        help="fake: the bench's OpenAI-compatible fake provider over loopback HTTP (default); "
        "sim: the server's in-process sim model with the same fixed latency",
    )
    parser.add_argument(
        "--latency",
        type=float,
        help="provider latency, seconds, per LLM call (subtracted per call for the overhead)",
    )
    parser.add_argument("--agents", type=int, help="agents (stored agents for cold-activation)")
    parser.add_argument("--messages", type=int, help="messages in the measured window")
    parser.add_argument("--concurrency", type=int, help="concurrent conversations")
    parser.add_argument(
        "--window", type=float, help="idle: seconds of wall time measured per step (30)"
    )
    parser.add_argument(
        "--window-messages",
        type=int,
        help="hot-agent: messages per window of its CPU-per-message series (100)",
    )
    parser.add_argument(
        "--background-s",
        type=float,
        help="hot-agent: seconds of messages to another agent before the measured history, "
        "so the server's background loops run at their steady rate from the first window (15)",
    )
    parser.add_argument(
        "--size-kb", type=int, help="file-ingestion: size of its generated Markdown file (64)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the framework floor")
    parser.add_argument(
        "--floor-requests", type=int, default=2000, help="requests per floor route (cap)"
    )
    parser.add_argument(
        "--profile",
        choices=["py-spy"],
        help="record the server with py-spy during each measured window (collapsed stacks, "
        "written beside the JSON)",
    )
    parser.add_argument("--model", help="model handle for the agents (default by --llm)")
    parser.add_argument("--embedding", help="embedding handle for the agents")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    parser.add_argument("--keep-data", action="store_true", help="keep the servers' data dirs")
    parser.add_argument("--seed", type=int, default=7)


def done_with(work: Path, *, keep: bool) -> None:
    """A run's temporary folder (its servers' data): removed, or kept and said where."""
    if keep:
        print(f"data kept in {work}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _progress_factory(progress: Any) -> Callable[[str, int], Callable[[], None]]:
    def track(description: str, total: int) -> Callable[[], None]:
        task = progress.add_task(description, total=total)

        def advance() -> None:
            progress.advance(task)

        return advance

    return track


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        yield progress


def run(args: argparse.Namespace) -> int:
    # The bench's own dependencies (psutil, rich, matplotlib: the `bench` extra) load here, not
    # when the parser is built.
    import trio

    from bench import report
    from bench.scenarios import Options, Runner

    names = list(args.scenarios or [])
    if names[:1] == ["compare"]:  # the same load on kelpie-trio and on --base-url
        from bench.compare import run_compare

        return run_compare(args, names[1:])
    if names == ["table"]:  # the table: every row at its own size, in one run
        from bench.table import main_table

        return main_table(args)
    unknown = [n for n in names if n not in (*SCENARIOS, "all")]
    if unknown:
        known = ", ".join(SCENARIOS)
        print(f"unknown scenario {unknown[0]!r}: use {known} or all", file=sys.stderr)
        return 2
    if "all" in names or (args.smoke and not names):
        names = list(SMOKE_SCENARIOS if args.smoke and "all" not in names else SCENARIOS)
    names = names or ["steady"]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Servers' data goes to a temporary folder, never to ~/.kelpie-trio.
    work = Path(tempfile.mkdtemp(prefix="kelpie-bench-"))
    options = Options(
        base_url=args.base_url,
        base_url_b=args.base_url_b,
        password=args.password,
        store=args.store,
        llm=args.llm,
        smoke=args.smoke,
        overrides={
            "agents": args.agents,
            "messages": args.messages,
            "concurrency": args.concurrency,
            "latency": args.latency,
            "window": args.window,
            "window_messages": args.window_messages,
            "background_s": args.background_s,
            "size_kb": args.size_kb,
        },
        floor=not args.no_floor,
        floor_requests=args.floor_requests,
        provider_port=args.provider_port,
        server_pid=args.server_pid,
        seed=args.seed,
        work_dir=work,
        profile=args.profile,
        model=args.model,
        embedding=args.embedding,
    )
    if args.base_url and args.llm == "fake" and not (args.model and args.embedding):
        # A server the bench did not start names the fake provider's models its own way.
        from bench.compare import served_handles

        model, embedding = trio.run(served_handles, args.base_url, options.headers)
        options.model, options.embedding = args.model or model, args.embedding or embedding
    run_info: dict[str, Any] = {
        "bench": "kelpie-trio bench 1",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": report.machine(),
        "target": args.base_url or "kelpie-trio serve (started by the bench)",
        "options": {
            "scenarios": names,
            "store": args.store,
            "llm": args.llm,
            "smoke": args.smoke,
            **{k: v for k, v in options.overrides.items() if v is not None},
        },
        "scenarios": [],
    }
    try:
        with _progress() as progress:
            runner = Runner(options, _progress_factory(progress))

            async def main() -> None:
                for name in names:
                    run_info["scenarios"].append(await runner.run(name))

            trio.run(main)
    finally:
        import shutil

        for profile in sorted(work.glob("profile-*.txt")):
            shutil.copy(profile, args.out / f"{stamp}-{profile.name}")
        done_with(work, keep=args.keep_data)
    run_info["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report.print_table(run_info["scenarios"])
    json_path = args.out / f"bench-{stamp}.json"
    png_path = args.out / f"bench-{stamp}.png"
    report.write_json(json_path, run_info)
    report.write_plot(png_path, run_info["scenarios"], runner.samples)
    print(f"wrote {json_path} and {png_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Stress kelpie-trio (or any Letta-compatible server) and compare it with "
        "the framework floor measured in the same run.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
