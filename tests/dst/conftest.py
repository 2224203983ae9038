"""After a DST run, the faults fired across every test of the process, per type.

A deep run (`DST_SEEDS=1000 pytest tests/dst`) reports what it exercised, not only
that it passed; the README's deep-run figures come from this summary.
"""

from kelpie_trio.sim.faults import FIRED_IN_PROCESS, FaultType
from kelpie_trio.sim.store import LATE_COMMITS_IN_PROCESS


def pytest_terminal_summary(terminalreporter):
    if not FIRED_IN_PROCESS:
        return
    terminalreporter.section("DST faults fired (all tests of this run)")
    for fault in FaultType:
        if FIRED_IN_PROCESS[fault]:
            terminalreporter.write_line(f"{fault.value:<24} {FIRED_IN_PROCESS[fault]:>10}")
    for why, count in sorted(LATE_COMMITS_IN_PROCESS.items()):
        terminalreporter.write_line(f"{'commits landing late (' + why + ')':<40} {count:>10}")
