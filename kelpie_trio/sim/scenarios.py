"""Named simulation scenarios, run by `kelpie-trio sim` and by the DST tests.

`bank` (the default) is the storage storm: client nodes move money between
accounts in read-modify-write transactions on the SimStore, under storage and
crash faults; crashed clients restart as new incarnations. At the end, with
faults off, the invariants are checked:

- the total is conserved;
- every acknowledged transfer is in the store (no acknowledged write lost);
- every balance equals its opening balance plus the transfers recorded in the
  store, and the atomic transfer counter equals the number of records (no
  write applied twice, even through CommitUnknownResult and late landings);
- every request was answered or failed cleanly (none hung: the world's
  virtual-time limit would have caught it).

The agent scenarios (turns, chaos, sessions, transfer) are in agent_scenarios.py,
`search` in search_scenario.py, `search-threads` in search_threads_scenario.py,
`schedules` in schedule_scenario.py, the runtime `storm` in cluster.py; `SCENARIOS`
names them all. Later issues add theirs here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from kelpie_trio.sim import agent_scenarios as agents
from kelpie_trio.sim import (
    archive_scenario,
    conversation_scenario,
    file_scenario,
    schedule_scenario,
    search_scenario,
    search_threads_scenario,
)
from kelpie_trio.sim.cluster import STORM_FAULTS, runtime_storm
from kelpie_trio.sim.faults import CRASH_FAULTS, FaultConfig, FaultType
from kelpie_trio.sim.invariants import InvariantViolation
from kelpie_trio.sim.world import SimNode, SimWorld
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import (
    CommitRequest,
    Mutation,
    MutationKind,
    Transaction,
    decode_counter,
)
from kelpie_trio.storage.errors import StoreError

__all__ = ["SCENARIOS", "BankReport", "InvariantViolation", "Scenario", "bank"]


BANK = keys.SIM["bank"]
ACCOUNTS = BANK["account"]
RECORDS = BANK["transfer"]
COUNTER = BANK.pack(("count",))


@attrs.define
class BankReport:
    acknowledged: int = 0
    declined: int = 0
    failed: int = 0  # the store refused after retries, or the client crashed mid-transfer
    crashes: int = 0
    records: int = 0
    commits: int = 0
    failures: list[str] = attrs.field(factory=list)

    def summary(self) -> str:
        return (
            f"bank: {self.acknowledged} transfers acknowledged, {self.declined} declined, "
            f"{self.failed} failed cleanly, {self.crashes} client crashes, "
            f"{self.records} records in the store"
        )


def _encode(n: int) -> bytes:
    return str(n).encode()


async def bank(
    world: SimWorld,
    *,
    clients: int = 4,
    accounts: int = 6,
    transfers_per_client: int = 20,
    opening_balance: int = 100,
    restart_delay: float = 0.5,
) -> BankReport:
    report = BankReport()
    # Opening balances go straight into the engine: the scenario's setup is not under test.
    world.engine.apply(
        CommitRequest(
            read_version=None,
            read_ranges=[],
            cleared_ranges=[],
            mutations=[
                Mutation(MutationKind.SET, ACCOUNTS.pack((a,)), _encode(opening_balance))
                for a in range(accounts)
            ],
        ),
        now=0.0,
    )
    acknowledged: dict[str, tuple[int, int, int]] = {}
    declined: set[str] = set()

    def transfer(tid: str, src: int, dst: int, amount: int) -> Callable[[Transaction], Awaitable]:
        async def fn(tr: Transaction) -> bool:
            src_balance = int(await tr.get(ACCOUNTS.pack((src,))) or b"0")
            if src_balance < amount:
                return False
            dst_balance = int(await tr.get(ACCOUNTS.pack((dst,))) or b"0")
            tr.set(ACCOUNTS.pack((src,)), _encode(src_balance - amount))
            tr.set(ACCOUNTS.pack((dst,)), _encode(dst_balance + amount))
            tr.set(RECORDS.pack((tid,)), keys.pack((src, dst, amount)))
            tr.add(COUNTER, 1)
            return True

        return fn

    async def client(name: str) -> None:
        rng = world.rng(f"bank:{name}")
        todo = []
        for n in range(transfers_per_client):
            src, dst = rng.sample(range(accounts), 2)
            todo.append((f"{name}-{n}", src, dst, rng.randint(1, opening_balance // 2)))

        async def work(node: SimNode) -> None:
            while todo:
                tid, src, dst, amount = todo.pop(0)
                try:
                    done = await node.store.transact(transfer(tid, src, dst, amount))
                except StoreError as error:
                    report.failed += 1
                    world.trace.record(f"failed {tid} {error.__class__.__name__}")
                    if node.crashed:
                        return
                    continue
                if done:
                    acknowledged[tid] = (src, dst, amount)
                else:
                    declined.add(tid)
                world.trace.record(f"{'ack' if done else 'declined'} {tid}")

        while todo:
            node = world.new_node(name)
            await world.run_node(node, work)
            report.commits += node.store.commits
            if node.crashed:
                report.crashes += 1
                await trio.sleep(restart_delay)

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, f"client{i}")

    world.faults.enabled = False
    await _check_bank(world, report, accounts, opening_balance, acknowledged, declined)
    report.acknowledged = len(acknowledged)
    report.declined = len(declined)
    return report


async def _check_bank(
    world: SimWorld,
    report: BankReport,
    accounts: int,
    opening_balance: int,
    acknowledged: dict[str, tuple[int, int, int]],
    declined: set[str],
) -> None:
    checker = world.new_node("checker")

    async def read_all(tr: Transaction) -> tuple[list, list, bytes | None]:
        return (
            await tr.get_range(*_range(ACCOUNTS)),
            await tr.get_range(*_range(RECORDS)),
            await tr.get(COUNTER),
        )

    balances_kv, records_kv, counter = await checker.store.transact(read_all)
    balances = {ACCOUNTS.unpack(k)[0]: int(v) for k, v in balances_kv}
    records = {RECORDS.unpack(k)[0]: keys.unpack(v) for k, v in records_kv}
    report.records = len(records)
    problems: list[str] = []

    total = sum(balances.values())
    if total != accounts * opening_balance:
        problems.append(f"total {total} != {accounts * opening_balance}: money created or lost")
    lost = sorted(set(acknowledged) - set(records))
    if lost:
        problems.append(f"acknowledged transfers missing from the store: {lost[:10]}")
    wrong = sorted(tid for tid in declined if tid in records)
    if wrong:
        problems.append(f"declined transfers recorded as done: {wrong[:10]}")
    expected = dict.fromkeys(range(accounts), opening_balance)
    for src, dst, amount in records.values():
        expected[src] -= amount
        expected[dst] += amount
    if expected != balances:
        problems.append(f"balances {balances} != opening + recorded transfers {expected}")
    count = decode_counter(counter)
    if count != len(records):
        problems.append(
            f"transfer counter {count} != {len(records)} records: a write applied twice"
        )
    if problems:
        report.failures = problems
        raise InvariantViolation(f"seed {world.seed}: " + "; ".join(problems))


def _range(space: keys.Subspace) -> tuple[bytes, bytes]:
    r = space.range()
    return r.start, r.stop


@attrs.frozen
class Scenario:
    run: Callable[[SimWorld], Awaitable[object]]
    # A preset's name, or the scenario's own table (its DST test's), used unless
    # `--faults` names a preset.
    default_faults: str | FaultConfig
    description: str
    # Faults the scenario does not model (its own nodes are not restarted after them):
    # dropped from a preset named with `--faults`, and the command says so.
    unmodelled: frozenset[FaultType] = frozenset()


SCENARIOS: dict[str, Scenario] = {
    "bank": Scenario(
        bank, "chaos", "concurrent transfers on the SimStore under storage and crash faults"
    ),
    "turns": Scenario(
        agents.turns, agents.TURNS_FAULTS,
        "agent turns with otids through two nodes, retried until answered",
    ),
    "chaos": Scenario(
        agents.chaos, agents.CHAOS_FAULTS,
        "every fault of the table against the real agent on three nodes",
    ),
    "sessions": Scenario(
        agents.sessions, agents.SESSIONS_FAULTS,
        "crashes at every await point of an iteration; turns resume from checkpoints",
    ),
    "transfer": Scenario(
        agents.transfer, agents.TRANSFER_FAULTS,
        "a session moves between agents while a node crashes or the network splits",
    ),
    "conversations": Scenario(
        conversation_scenario.conversations, conversation_scenario.CONVERSATION_FAULTS,
        "one agent in three conversations at once, all editing one shared block, two nodes",
    ),
    "schedules": Scenario(
        schedule_scenario.schedules, schedule_scenario.SCHEDULE_FAULTS,
        "scheduled messages fire once each through three nodes: crashes and store cut-offs "
        "at the firing instants, skewed clocks",
    ),
    "search": Scenario(
        search_scenario.search_converges, search_scenario.FAULTS,
        "the search index converges to the store under storage faults, indexer crashes",
        unmodelled=frozenset(CRASH_FAULTS),  # it crashes its indexer itself, at its times
    ),
    "search-threads": Scenario(
        search_threads_scenario.search_threads_converge, search_threads_scenario.THREAD_FAULTS,
        "an agent's conversations write at once, each on its own outbox stream, without "
        "conflicts, while the index converges under storage faults and indexer crashes",
        unmodelled=frozenset(CRASH_FAULTS),  # it crashes its indexer itself, at its times
    ),
    "archives": Scenario(
        archive_scenario.archives_converge, archive_scenario.ARCHIVE_FAULTS,
        "archives shared, detached and deleted while the index converges under faults",
        unmodelled=frozenset(CRASH_FAULTS),  # it crashes its indexer itself, at its times
    ),
    "files": Scenario(
        file_scenario.files_processed, file_scenario.FILE_FAULTS,
        "uploaded files parsed, chunked and indexed while workers and the indexer crash",
        unmodelled=frozenset(CRASH_FAULTS),  # it crashes its workers itself, at its times
    ),
    "storm": Scenario(
        runtime_storm, STORM_FAULTS,
        "1,000 agents on three nodes of the actor runtime: crashes, cut-offs, skew",
    ),
}  # fmt: skip
