"""The `kelpie-trio` command: `serve` the API, `sim` one simulated scenario, `reindex`
the search index, `bench` the server."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from kelpie_trio import __version__, gc_tuning


def _startup_error(error: BaseException) -> BaseException | None:
    from kelpie_trio.config import StartupError

    if isinstance(error, StartupError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _startup_error(inner)
            if found is not None:
                return found
    return None


def _serve(args: argparse.Namespace) -> int:
    from kelpie_trio.config import ServerConfig
    from kelpie_trio.llm.config import CatalogConfig
    from kelpie_trio.nursery.node import run_node

    try:
        config = ServerConfig.from_env(
            host=args.host,
            port=args.port,
            store=args.store,
            data_dir=args.data_dir,
            db=args.db,
            fdb_cluster_file=args.fdb_cluster_file,
            password=args.password,
        )
        CatalogConfig.from_env()  # the providers' variables, refused before anything starts
    except ValueError as error:
        print(f"kelpie-trio: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx says every call it makes at INFO: a line per LLM call, besides our own line per
    # request (kelpie_trio.requests), and its cost on every message. Its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    gc_tuning.tune()
    try:
        trio.run(run_node, config)
    except BaseException as error:  # re-raised unless it is a start-up problem
        problem = _startup_error(error)
        if problem is None:
            raise
        print(f"kelpie-trio: {problem}", file=sys.stderr)
        return 2
    return 0


def _sim(args: argparse.Namespace) -> int:
    from kelpie_trio.sim import cli

    return cli.main(args)


def _reindex(args: argparse.Namespace) -> int:
    from kelpie_trio.search import cli

    return cli.main(args)


def _bench(args: argparse.Namespace) -> int:
    from bench.cli import run  # bench/ ships beside kelpie_trio; its extras: pip install '.[bench]'

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kelpie-trio", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kelpie-trio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the Letta-compatible API")
    serve.add_argument("--host", help="address to bind (KELPIE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (KELPIE_PORT; default 8283)")
    serve.add_argument(
        "--store", choices=["sqlite", "memory", "fdb"], help="backend (KELPIE_STORE; sqlite)"
    )
    serve.add_argument(
        "--data-dir", type=Path, help="data directory (KELPIE_DATA_DIR; ~/.kelpie-trio)"
    )
    serve.add_argument("--db", type=Path, help="SQLite file (KELPIE_DB; <data-dir>/kelpie.db)")
    serve.add_argument(
        "--fdb-cluster-file", help="FoundationDB cluster file (KELPIE_FDB_CLUSTER_FILE)"
    )
    serve.add_argument(
        "--password",
        help="require `Authorization: Bearer <password>` on every route but health "
        "(KELPIE_SERVER_PASSWORD)",
    )
    serve.set_defaults(func=_serve)

    from kelpie_trio.search.cli import add_arguments as add_reindex_arguments
    from kelpie_trio.sim.cli import add_arguments

    reindex = commands.add_parser("reindex", help="rebuild the search index from the store")
    add_reindex_arguments(reindex)
    reindex.set_defaults(func=_reindex)

    sim = commands.add_parser("sim", help="run one deterministic simulation from a seed")
    add_arguments(sim)
    sim.set_defaults(func=_sim)

    from bench.cli import add_arguments as add_bench_arguments

    bench = commands.add_parser("bench", help="stress the server next to the framework floor")
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
