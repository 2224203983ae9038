"""`python -m bench.sandbox [N]`: time per sandboxed tool call against today's process start.

Runs the same trivial tool N times (default 20) three ways, one call at a time, and
prints the median and p90 wall time of each: the isolated sandbox (namespaces, uid
65534, seccomp: what custom tools get), the unisolated child process (the sandbox
before namespaces), and a bare `python -I -c pass` (the floor: starting an
interpreter). The issue's target is isolated within 2x of unisolated. Real processes on
the real clock; a printed measurement, not a test.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import attrs
import trio

from kelpie_trio.tools.sandbox import ToolSandbox, default_python

TOOL = "def tool(x: int) -> int:\n    return x + 1\n"


async def _time_calls(sandbox: ToolSandbox, n: int) -> list[float]:
    took = []
    for i in range(n):
        began = time.perf_counter()
        result = await sandbox.run(TOOL, "tool", {"x": i})
        took.append(time.perf_counter() - began)
        if result.func_return != i + 1:
            raise RuntimeError(f"the sandbox failed: {result.error}")
    return took


def _time_bare(n: int) -> list[float]:
    took = []
    for _ in range(n):
        began = time.perf_counter()
        subprocess.run([default_python(), "-I", "-c", "pass"], check=True)
        took.append(time.perf_counter() - began)
    return took


def _line(name: str, took: list[float]) -> str:
    p90 = sorted(took)[max(0, int(len(took) * 0.9) - 1)]
    return f"{name:<26} median {statistics.median(took) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


async def measure(n: int) -> dict[str, list[float]]:
    isolated = ToolSandbox(timeout=30.0)
    return {
        "isolated sandbox call": await _time_calls(isolated, n),
        "unisolated process call": await _time_calls(attrs.evolve(isolated, isolated=False), n),
        "bare interpreter start": await trio.to_thread.run_sync(_time_bare, n),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 20
    results = trio.run(measure, n)
    for name, took in results.items():
        print(_line(name, took))
    ratio = statistics.median(results["isolated sandbox call"]) / statistics.median(
        results["unisolated process call"]
    )
    print(f"isolated / unisolated: {ratio:.2f}x (target: within 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
