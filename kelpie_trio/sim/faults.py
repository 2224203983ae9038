"""The fault table: which faults fire, how often, and a report of what fired.

Fault names are those of the plan in shared/seed/ and of the project it comes
from, so runs of the two can be compared. Each injection point asks
`injector.fires(FaultType.X, op)`; the answer is drawn from the run's seeded
RNG, so the same seed fires the same faults at the same places. Later issues
add their faults to `FaultType` and their presets to `PRESETS`.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["PRESETS", "FaultConfig", "FaultInjector", "FaultType", "preset"]


class FaultType(enum.Enum):
    # storage
    STORAGE_WRITE_FAIL = "StorageWriteFail"
    STORAGE_READ_FAIL = "StorageReadFail"
    STORAGE_LATENCY = "StorageLatency"
    TRANSACTION_CONFLICT = "TransactionConflict"
    COMMIT_UNKNOWN_RESULT = "CommitUnknownResult"
    STORAGE_FULL = "StorageFull"  # the disk is full: a commit is refused, nothing written
    # node crashes, at a store call
    CRASH_BEFORE_WRITE = "CrashBeforeWrite"
    CRASH_AFTER_WRITE = "CrashAfterWrite"
    CRASH_DURING_TRANSACTION = "CrashDuringTransaction"
    # network between nodes
    NETWORK_PARTITION = "NetworkPartition"
    NETWORK_DELAY = "NetworkDelay"
    NETWORK_PACKET_LOSS = "NetworkPacketLoss"
    NETWORK_MESSAGE_REORDER = "NetworkMessageReorder"
    # time
    CLOCK_SKEW = "ClockSkew"
    # LLM
    LLM_TIMEOUT = "LlmTimeout"
    LLM_FAILURE = "LlmFailure"
    LLM_RATE_LIMITED = "LlmRateLimited"
    LLM_LATENCY = "LlmLatency"
    # agent and tools
    AGENT_LOOP_PANIC = "AgentLoopPanic"
    TOOL_TIMEOUT = "ToolTimeout"
    TOOL_FAIL = "ToolFail"

    @classmethod
    def by_name(cls, name: str) -> FaultType:
        for fault in cls:
            if name in (fault.value, fault.name):
                return fault
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(f.value for f in cls)}")


STORAGE_FAULTS = (
    FaultType.STORAGE_WRITE_FAIL,
    FaultType.STORAGE_READ_FAIL,
    FaultType.STORAGE_LATENCY,
    FaultType.TRANSACTION_CONFLICT,
    FaultType.COMMIT_UNKNOWN_RESULT,
)
CRASH_FAULTS = (
    FaultType.CRASH_BEFORE_WRITE,
    FaultType.CRASH_AFTER_WRITE,
    FaultType.CRASH_DURING_TRANSACTION,
)
# The crash budget of the scenarios that check every client is answered (FaultConfig's
# `budgets`): at most 12 node crashes a run, 4 of each kind.
LIVENESS_CRASH_BUDGET: dict[FaultType, int] = dict.fromkeys(CRASH_FAULTS, 4)
NETWORK_FAULTS = (
    FaultType.NETWORK_PARTITION,
    FaultType.NETWORK_DELAY,
    FaultType.NETWORK_PACKET_LOSS,
    FaultType.NETWORK_MESSAGE_REORDER,
)
LLM_FAULTS = (
    FaultType.LLM_TIMEOUT,
    FaultType.LLM_FAILURE,
    FaultType.LLM_RATE_LIMITED,
    FaultType.LLM_LATENCY,
)


@attrs.frozen
class FaultConfig:
    """Probability per fault type, and per operation where one is given.

    `op_rates[fault][op]` (op names such as "commit", "get", "llm.complete")
    overrides `rates[fault]` at that operation: `rates={F: 0.0}, op_rates={F:
    {"commit": 0.5}}` makes F fire at commits only.

    `budgets[fault]` caps how often a fault fires in one run (a nemesis that stops):
    a liveness check ("every request is answered") holds only once the faults that
    stop all progress, such as node crashes, do stop; without a cap an unlucky seed
    crashes a node faster than any turn can finish.
    """

    rates: Mapping[FaultType, float] = attrs.field(factory=dict)
    op_rates: Mapping[FaultType, Mapping[str, float]] = attrs.field(factory=dict)
    budgets: Mapping[FaultType, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        every = [*self.rates.items()]
        every += [(f, r) for f, ops in self.op_rates.items() for r in ops.values()]
        for fault, rate in every:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{fault.value}: probability {rate} is not in [0, 1]")

    def rate(self, fault: FaultType, op: str | None = None) -> float:
        base = self.rates.get(fault, 0.0)
        by_op = self.op_rates.get(fault)
        if by_op is None or op is None:
            return base
        return by_op.get(op, base)

    def with_rates(self, rates: Mapping[FaultType, float]) -> FaultConfig:
        return attrs.evolve(self, rates={**self.rates, **rates})

    def without(self, faults: Iterable[FaultType]) -> FaultConfig:
        drop = set(faults)
        return attrs.evolve(self, rates={f: r for f, r in self.rates.items() if f not in drop})


def _uniform(faults: Iterable[FaultType], rate: float) -> dict[FaultType, float]:
    return dict.fromkeys(faults, rate)


PRESETS: dict[str, FaultConfig] = {
    "none": FaultConfig(),
    "storage": FaultConfig(_uniform(STORAGE_FAULTS, 0.05)),
    "crash": FaultConfig(_uniform(CRASH_FAULTS, 0.01)),
    # The storage storm of tests/dst: every storage fault often, crashes now and then.
    "storm": FaultConfig({**_uniform(STORAGE_FAULTS, 0.08), **_uniform(CRASH_FAULTS, 0.01)}),
    # A disk that fills up now and then: not in STORAGE_FAULTS, whose presets it would
    # change (a full disk is refused at once, not retried like the transient faults).
    "full": FaultConfig({FaultType.STORAGE_FULL: 0.1}),
    "network": FaultConfig(_uniform(NETWORK_FAULTS, 0.05)),
    "llm": FaultConfig(_uniform(LLM_FAULTS, 0.1)),
    "chaos": FaultConfig(
        {
            **_uniform(STORAGE_FAULTS, 0.05),
            **_uniform(CRASH_FAULTS, 0.01),
            **_uniform(NETWORK_FAULTS, 0.05),
            **_uniform(LLM_FAULTS, 0.05),
            FaultType.CLOCK_SKEW: 0.1,
            FaultType.AGENT_LOOP_PANIC: 0.01,
            FaultType.TOOL_TIMEOUT: 0.02,
            FaultType.TOOL_FAIL: 0.02,
        }
    ),
}


def preset(name: str) -> FaultConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown fault preset {name!r}; known: {', '.join(PRESETS)}") from None


# Every firing in this process, across injectors: what a sweep of many tests reports
# (`tests/dst/conftest.py` prints it). Written only, never read by simulated code, so
# it cannot change a run.
FIRED_IN_PROCESS: Counter[FaultType] = Counter()


class FaultInjector:
    """Decides, from a seeded RNG, whether a fault fires; counts draws and firings."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        self.drawn: Counter[FaultType] = Counter()
        self.fired: Counter[FaultType] = Counter()
        self.enabled = True  # switched off for the quiet end of a run (recovery checks)

    def fires(self, fault: FaultType, op: str | None = None) -> bool:
        rate = self.config.rate(fault, op) if self.enabled else 0.0
        budget = self.config.budgets.get(fault)
        if budget is not None and self.fired[fault] >= budget:
            rate = 0.0  # spent: from here on this fault draws nothing, as if turned off
        if rate <= 0.0:
            return False  # no draw: turning a fault off leaves the others' draws unchanged
        self.drawn[fault] += 1
        if self._rng.random() < rate:
            self.fired[fault] += 1
            FIRED_IN_PROCESS[fault] += 1
            return True
        return False

    def uniform(self, low: float, high: float) -> float:
        """A magnitude for a fault that fired (a latency, a skew), from the same RNG."""
        return self._rng.uniform(low, high)

    def report(self) -> str:
        """One line per fault type that was drawn: fired / drawn."""
        if not self.drawn:
            return "faults: none drawn"
        lines = ["faults (fired/drawn):"]
        for fault in FaultType:
            if self.drawn[fault]:
                lines.append(f"  {fault.value:<24} {self.fired[fault]:>6}/{self.drawn[fault]}")
        return "\n".join(lines)
