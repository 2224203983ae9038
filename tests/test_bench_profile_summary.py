"""bench/profile_summary.py's comparison of two profiles (hot-agent's first and last window):
per category and per function, wherever on the stack, what moved, largest growth first."""

from __future__ import annotations

from pathlib import Path

from bench.profile_summary import compare, main

STEP = "AgentActor._turn (kelpie_trio/agent/actor.py:10)"
BUILD = "build_request (kelpie_trio/agent/step.py:{line})"
LLM = "OpenAiCompatibleClient.complete (kelpie_trio/llm/openai_compat.py:5)"


def _profile(path: Path, lines: dict[str, int]) -> Path:
    path.write_text("".join(f"{stack} {n}\n" for stack, n in lines.items()))
    return path


def test_compare_puts_what_grew_first_in_ms_per_message(tmp_path: Path, capsys) -> None:
    first = _profile(tmp_path / "first.txt", {
        f"main;{STEP};{BUILD.format(line=1)}": 10, f"main;{STEP};{LLM}": 30, "main;idle": 60,
    })  # fmt: skip
    last = _profile(tmp_path / "last.txt", {
        f"main;{STEP};{BUILD.format(line=1)}": 20, f"main;{STEP};{BUILD.format(line=2)}": 20,
        f"main;{STEP};{LLM}": 30, "main;idle": 30,
    })  # fmt: skip
    rows = compare(last, first, cpu_ms=10.0, against_ms=5.0)
    by_name = {name: (before, after) for name, before, after in rows}
    # Categories: the LLM call first (it is matched first), then the agent step.
    assert by_name["[agent step: build request, interpret, render]"] == (0.5, 4.0)
    assert by_name["[LLM call (httpx/httpcore client)]"] == (1.5, 3.0)
    # A function counts once per sample, whatever its lines: 10 % of 5 ms, then 40 % of 10.
    assert by_name["build_request (kelpie_trio/agent/step.py"] == (0.5, 4.0)
    categories = [r for r in rows if r[0].startswith("[")]
    growth = [after - before for _, before, after in categories]
    assert growth == sorted(growth, reverse=True)
    assert (
        main([str(last), "--against", str(first), "--cpu-ms", "10", "--against-cpu-ms", "5"]) == 0
    )
    assert "+3.500  build_request" in capsys.readouterr().out
