"""Where a server's CPU went, from py-spy's collapsed stacks (`--profile py-spy`).

    python -m bench.profile_summary bench-results/<stamp>-profile-steady.txt [--cpu-ms 4.5]

Samples of a thread sleeping (the idle SQLite worker, epoll_wait) are left out. Each other
sample is put in the first category whose marker appears anywhere in its stack (so the
order below matters: the LLM call inside an actor's turn counts as the LLM call), then the
functions with the most samples of their own are listed. With `--cpu-ms` (the bench's CPU ms
per message) each category is also given in ms per message.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

__all__ = ["CATEGORIES", "summarize"]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-ms", type=float, help="CPU ms per message, to split it up")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
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
