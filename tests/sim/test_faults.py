"""The fault table: faults fire at their configured rates, and never when off."""

from __future__ import annotations

import math
import random

import pytest

from kelpie_trio.sim.faults import PRESETS, FaultConfig, FaultInjector, FaultType, preset


@pytest.mark.parametrize("fault", list(FaultType), ids=lambda f: f.value)
def test_new_fault_types(fault: FaultType) -> None:
    draws, rate = 20_000, 0.1
    injector = FaultInjector(FaultConfig({fault: rate}), random.Random(1234))
    fired = sum(injector.fires(fault, "op") for _ in range(draws))
    sigma = math.sqrt(draws * rate * (1 - rate))
    assert abs(fired - draws * rate) < 5 * sigma
    assert injector.fired[fault] == fired and injector.drawn[fault] == draws

    # Every other fault is off: it never fires and draws nothing from the RNG.
    for other in FaultType:
        if other is not fault:
            assert not any(injector.fires(other, "op") for _ in range(1000))
            assert injector.drawn[other] == 0


def test_rates_can_be_set_per_operation() -> None:
    fault = FaultType.CRASH_DURING_TRANSACTION
    config = FaultConfig({fault: 0.0}, op_rates={fault: {"commit": 1.0, "get_range": 0.5}})
    injector = FaultInjector(config, random.Random(0))
    assert injector.fires(fault, "commit")
    assert not injector.fires(fault, "get")
    fired = sum(injector.fires(fault, "get_range") for _ in range(2000))
    assert 850 < fired < 1150
    with pytest.raises(ValueError, match="not in"):
        FaultConfig(op_rates={fault: {"commit": 2.0}})


def test_a_fault_with_a_budget_stops_once_it_is_spent_and_then_draws_nothing() -> None:
    crash, read = FaultType.CRASH_AFTER_WRITE, FaultType.STORAGE_READ_FAIL
    config = FaultConfig({crash: 1.0, read: 0.5}, budgets={crash: 3})
    injector = FaultInjector(config, random.Random(7))
    assert [injector.fires(crash, "commit") for _ in range(10)] == [True] * 3 + [False] * 7
    assert injector.fired[crash] == 3 and injector.drawn[crash] == 3
    # The spent budget takes nothing from the RNG: the other faults draw what they
    # would have drawn had the crashes never been configured past their third.
    alone = FaultInjector(FaultConfig({crash: 1.0, read: 0.5}), random.Random(7))
    for _ in range(3):
        alone.fires(crash, "commit")
    assert [injector.fires(read, "get") for _ in range(200)] == [
        alone.fires(read, "get") for _ in range(200)
    ]


def test_disabled_injector_fires_nothing() -> None:
    injector = FaultInjector(preset("chaos"), random.Random(0))
    injector.enabled = False
    assert not any(injector.fires(f, "op") for f in FaultType for _ in range(100))


def test_same_rng_seed_fires_the_same_faults() -> None:
    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector(preset("storage"), random.Random(seed))
        return [injector.fires(FaultType.STORAGE_READ_FAIL, "get") for _ in range(500)]

    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)


def test_report_names_each_drawn_fault_with_fired_over_drawn() -> None:
    injector = FaultInjector(FaultConfig({FaultType.LLM_TIMEOUT: 1.0}), random.Random(0))
    injector.fires(FaultType.LLM_TIMEOUT)
    injector.fires(FaultType.LLM_TIMEOUT)
    report = injector.report()
    assert "LlmTimeout" in report and "2/2" in report
    assert "StorageWriteFail" not in report


def test_fault_names_match_the_plan() -> None:
    names = {f.value for f in FaultType}
    assert {
        "StorageWriteFail", "StorageReadFail", "StorageLatency", "TransactionConflict",
        "CommitUnknownResult", "CrashBeforeWrite", "CrashAfterWrite", "CrashDuringTransaction",
        "NetworkPartition", "NetworkDelay", "NetworkPacketLoss", "NetworkMessageReorder",
        "ClockSkew", "LlmTimeout", "LlmFailure", "LlmRateLimited", "LlmLatency",
        "AgentLoopPanic", "ToolTimeout", "ToolFail",
    } <= names  # fmt: skip
    assert FaultType.by_name("LlmTimeout") is FaultType.LLM_TIMEOUT
    with pytest.raises(ValueError, match="unknown fault"):
        FaultType.by_name("Gremlins")


def test_invalid_probability_and_unknown_preset_are_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        FaultConfig({FaultType.LLM_FAILURE: 1.5})
    with pytest.raises(ValueError, match="unknown fault preset"):
        preset("apocalypse")
    assert "chaos" in PRESETS
