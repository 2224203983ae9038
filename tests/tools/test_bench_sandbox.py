"""The sandbox bench runs and prints its three lines and the ratio (no timing asserted)."""

from __future__ import annotations

import pytest

from bench.sandbox import main


def test_the_sandbox_bench_prints_time_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out[:3]] == [
        "isolated sandbox call",
        "unisolated process call",
        "bare interpreter start",
    ]
    assert out[3].startswith("isolated / unisolated: ")
