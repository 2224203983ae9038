"""Where a server's CPU went, from py-spy's collapsed stacks (`--profile py-spy`).

    python -m bench.profile_summary bench-results/<stamp>-profile-steady.txt [--cpu-ms 4.5]

Samples of a thread sleeping (the idle SQLite worker, epoll_wait) are left out. Each other
sample is put in the first category whose marker appears anywhere in its stack (so the
order below matters: the LLM call inside an actor's turn counts as the LLM call), then the
functions with the most samples of their own are listed. With `--cpu-ms` (the bench's CPU ms
per message) each category is also given in ms per message.

    python -m bench.profile_summary LAST --against FIRST [--cpu-ms 17.8 --against-cpu-ms 10.5]

compares two profiles of the same work (hot-agent's first and last window: `--profile py-spy`
records them apart): per category, and per function counted wherever it is on the stack
(inclusive), the share of each and, given each window's CPU ms per message, what moved in ms
per message, largest growth first. That is what grows with the history.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

__all__ = ["CATEGORIES", "compare", "summarize"]

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LLM call (httpx/httpcore client)", ("OpenAiCompatibleClient.complete",)),
    ("forwarding to another node (httpx)", ("HttpTransport.invoke",)),
    ("store: SQLite thread (SQL; fsync waits are not CPU)", ("Thread.run (threading.py",)),
    ("store: transactions, trio side", ("Store.transact", "ActorContext.transact")),
    ("agent step: build request, interpret, render", ("AgentActor._turn", "AgentActor.handle")),
    ("access log line", ("Logger.info", "Logger._log")),
    ("dispatcher / actor runtime / leases", ("Dispatcher.", "ActorHost", "renew_heartbeat")),
    ("API handlers and service", ("kelpie_trio/api/", "kelpie_trio/service/")),
    ("HTTP server: hypercorn + quart", ("hypercorn", "quart", "TrioASGI")),
)
OTHER = "unattributed: trio scheduler, epoll, partial stacks"
# Leaf frames where a thread sleeps with the GIL released, which py-spy may still sample as
# active: the idle worker thread waiting for its next job, trio's epoll_wait.
WAITING = ("WorkerThread._work (", "EpollIOManager.get_events (")


def _read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(path: Path, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(category, share) and (function, share of samples on top of the stack), largest first."""
    stacks = [(frames, n) for frames, n in _read(path) if not frames[-1].startswith(WAITING)]
    total = sum(n for _, n in stacks) or 1
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        joined = ";".join(frames)
        name = next((c for c, marks in CATEGORIES if any(m in joined for m in marks)), OTHER)
        categories[name] += n
        leaves[frames[-1]] += n
    return (
        [(c, n / total) for c, n in categories.most_common()],
        [(f, n / total) for f, n in leaves.most_common(top)],
    )


def _inclusive(path: Path) -> tuple[collections.Counter[str], int]:
    """Samples per function, wherever on the stack (once per sample), and the total."""
    stacks = [(frames, n) for frames, n in _read(path) if not frames[-1].startswith(WAITING)]
    found: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        for frame in {f.rsplit(":", 1)[0] for f in frames}:  # the function, not the line
            found[frame] += n
    return found, sum(n for _, n in stacks) or 1


def compare(
    path: Path, against: Path, cpu_ms: float | None, against_ms: float | None, top: int = 25
) -> list[tuple[str, float, float]]:
    """(name, value in `against`, value in `path`) per category and per function (inclusive),
    largest growth first: ms per message when both CPU figures are given, else shares."""
    rows: list[tuple[str, float, float]] = []
    a_cats, b_cats = dict(summarize(against)[0]), dict(summarize(path)[0])
    a_fun, a_total = _inclusive(against)
    b_fun, b_total = _inclusive(path)
    scale_a, scale_b = against_ms or 1.0, cpu_ms or 1.0
    for name in a_cats.keys() | b_cats.keys():
        rows.append((f"[{name}]", a_cats.get(name, 0.0) * scale_a, b_cats.get(name, 0.0) * scale_b))
    functions = [
        (f, a_fun.get(f, 0) / a_total * scale_a, b_fun.get(f, 0) / b_total * scale_b)
        for f in a_fun.keys() | b_fun.keys()
    ]
    functions.sort(key=lambda r: r[2] - r[1], reverse=True)
    rows.sort(key=lambda r: r[2] - r[1], reverse=True)
    return rows + functions[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-ms", type=float, help="CPU ms per message, to split it up")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--against", type=Path, help="a profile to compare with (the baseline)")
    parser.add_argument("--against-cpu-ms", type=float, help="CPU ms per message of --against")
    args = parser.parse_args(argv)
    if args.against is not None:
        unit = "ms/msg" if args.cpu_ms and args.against_cpu_ms else "share"
        digits = 3 if unit == "ms/msg" else 4
        print(f"{'against':>9} {'this':>9} {'moved':>9}  ({unit}; functions inclusive)")
        for name, before, after in compare(
            args.profile, args.against, args.cpu_ms, args.against_cpu_ms, args.top
        ):
            print(f"{before:9.{digits}f} {after:9.{digits}f} {after - before:+9.{digits}f}  {name}")
        return 0
    categories, leaves = summarize(args.profile, args.top)
    for name, share in categories:
        per = f"  ~{share * args.cpu_ms:.2f} ms/msg" if args.cpu_ms else ""
        print(f"{share * 100:5.1f}%  {name}{per}")
    print("\nmost samples on top of the stack:")
    for frame, share in leaves:
        print(f"{share * 100:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
