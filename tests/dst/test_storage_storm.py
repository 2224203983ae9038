"""The storage storm: concurrent transfers under every storage and crash fault.

Invariants (checked by the `bank` scenario at the end of every seed): total
conserved, no acknowledged write lost, no write applied twice.
"""

from __future__ import annotations

import pytest

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.faults import preset
from kelpie_trio.sim.scenarios import BankReport, InvariantViolation, bank
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import Store, StoreError

STORM = preset("storm")


def test_dst_storage_storm() -> None:
    totals = BankReport()

    def one(seed: int) -> None:
        report = SimWorld(seed, STORM).run(bank)
        totals.acknowledged += report.acknowledged
        totals.crashes += report.crashes
        totals.failed += report.failed

    ran = run_seeds(one, 200, scenario="bank", faults="storm")
    # The storm must actually storm and still get work done, or it proves nothing.
    assert totals.acknowledged > ran * 40
    assert totals.crashes > 0 and totals.failed > 0


def test_storm_invariants_catch_a_retry_loop_without_idempotency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A naive @fdb.transactional loop: it retries CommitUnknownResult blindly, so a
    # commit that did land is applied again. The storm's checks must notice.
    async def naive_transact(self: Store, fn, *, max_attempts=None):
        tr = self.create_transaction()
        for attempt in range(1, 101):
            try:
                result = await fn(tr)
                await tr.commit()
                return result
            except StoreError as error:
                if attempt == 100:
                    raise
                await tr.on_error(error)

    monkeypatch.setattr(Store, "transact", naive_transact)
    with pytest.raises(InvariantViolation, match="applied twice"):
        for seed in range(50):
            SimWorld(seed, STORM).run(bank)
