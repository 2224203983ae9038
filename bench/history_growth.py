"""A hot agent's CPU per message against a short history's: `python -m bench.history_growth`.

One node in process on a fresh SQLite file, agents on `openai/gpt-4o-mini` whose calls go
over HTTP to the bench's fake provider (a process of its own: its CPU is not counted), and
no HTTP server or indexer in front: what is left is each message's own work (the service,
the actor's step, the provider request, the store's transactions on both threads), the
part a history's length could make grow. Messages alternate between the hot agent (its
history grows) and a reference agent with a short one (a fresh agent every `--window`
messages, each given one message beforehand so none is activated in the window), and the
process CPU each message takes (`time.process_time`: every thread, the SQLite thread's
commits too) is charged to its agent. Alternating message by message cancels the machine's
drift, which over the `hot-agent` scenario's windows is larger than the 10 % the issue
allows; the scenario (the whole server over HTTP, its background included) stays the
issue's figure, this says what of it follows the history.

Prints, per window: the hot agent's and the reference's CPU ms per message and their
ratio; at the end a straight line fitted through the ratios, its value at the last window
over its value at the first (1.00: flat).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from bench.hops import node_in_process
from bench.procs import start_fake_provider
from bench.stats import fitted_growth
from kelpie_trio import gc_tuning
from kelpie_trio.env import RealEnv
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.storage.sqlite import SqliteStore

MODEL = "openai/gpt-4o-mini"


async def measure(messages: int, window: int) -> list[tuple[float, float]]:
    """Per window: (hot agent's, reference's) CPU ms per message."""
    env = RealEnv()
    rows: list[tuple[float, float]] = []
    async with start_fake_provider(0.0) as provider:
        catalog = CatalogConfig.from_env(
            {"OPENAI_BASE_URL": provider.url, "OPENAI_API_KEY": "bench-fake-key"}
        )
        with tempfile.TemporaryDirectory() as folder:
            store = SqliteStore(Path(folder) / "kelpie.db")
            async with node_in_process(store, env, catalog_config=catalog) as service:

                async def new_agent() -> str:
                    agent = (await service.create_agent({"model": MODEL})).agent.id
                    await send(agent, "hello")  # activated, outside the windows
                    return agent

                async def send(agent: str, text: str) -> float:
                    body = {"messages": [{"role": "user", "content": text}]}
                    started = time.process_time()
                    await service.send_message(agent, body)
                    return time.process_time() - started

                hot = await new_agent()
                references = [await new_agent() for _ in range(-(-messages // window))]
                hot_cpu: list[float] = []
                reference_cpu: list[float] = []
                for i in range(messages):
                    hot_cpu.append(await send(hot, f"message {i}"))
                    reference_cpu.append(await send(references[i // window], f"message {i}"))
                    if (i + 1) % window == 0 or i + 1 == messages:
                        n = len(hot_cpu)
                        rows.append((
                            1000 * statistics.mean(hot_cpu[n - window :]),
                            1000 * statistics.mean(reference_cpu[n - window :]),
                        ))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="to the hot agent")
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    os.environ.pop("OPENAI_API_KEY", None)  # a real key is never used by a bench
    gc_tuning.tune()  # as `kelpie-trio serve` does
    rows = trio.run(measure, args.messages, args.window)
    for k, (hot, reference) in enumerate(rows):
        print(f"messages {k * args.window}-{(k + 1) * args.window}: hot {hot:.3f} ms, "
              f"reference {reference:.3f} ms, ratio {hot / reference:.3f}")  # fmt: skip
    growth = fitted_growth([hot / reference for hot, reference in rows])
    if growth is not None:
        print(f"growth (fitted, last window / first): {growth:.3f}")


if __name__ == "__main__":
    main()
