"""letta-evals (Letta's evaluation runner, from PyPI) against a real kelpie-trio server.

letta-evals 0.26.0 drives Letta's CLI (`letta` from tests/e2e/js) headless for each sample
of a dataset, then reads the agent's trajectory back from the server with letta-client and
grades it. Here: a two-sample suite with the built-in `contains` grader on the last
assistant message, the server's model being the scripted fake provider, a recording proxy
between the clients and the server. It passes only if every sample's turn ran on the server
and the runner found the answer in what the server returned.

letta-evals lives in its own venv (tests/e2e/evals/.venv, from the pinned
requirements.txt beside it, installed once): it pins anyio 4.10 and pulls modal, pandas and
matplotlib, none of which the server wants.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from tests.e2e.harness import JS_DIR, MODEL, Server, install_once
from tests.e2e.recording_proxy import recording
from tests.e2e.scripted_provider import ScriptedProvider

EVALS_DIR = Path(__file__).parent / "evals"
VENV = EVALS_DIR / ".venv"
LETTA_EVALS = VENV / "bin" / "letta-evals"
_STAMP = VENV / ".kelpie-requirements-sha256"


@pytest.fixture(scope="session")
def letta_evals() -> Path:
    """letta-evals installed from evals/requirements.txt into its own venv, once."""
    install_once(
        EVALS_DIR / "requirements.txt", _STAMP,
        [[sys.executable, "-m", "venv", "--clear", str(VENV)],
         [str(VENV / "bin" / "pip"), "install", "-q", "-r", "requirements.txt"]],
        cwd=EVALS_DIR, timeout=900,
    )  # fmt: skip
    return LETTA_EVALS


SUITE = """\
name: kelpie-smoke
description: two questions, graded on the agent's last reply
dataset: dataset.jsonl
max_concurrent: 1
target:
  kind: letta_code
  model_handles: [{model}]
  timeout: 60
graders:
  answer:
    kind: tool
    function: contains
    extractor: last_assistant
reward:
  kind: metric
  metric_key: answer
"""


async def test_letta_evals_runs_a_suite_through_letta_code_and_grades_what_the_server_kept(
    js_clients: Path, letta_evals: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    (suite_dir / "suite.yaml").write_text(SUITE.format(model=MODEL))
    samples = [
        {"id": "capital", "input": "What is the capital of France?", "ground_truth": "Paris"},
        {"id": "sum", "input": "What is two plus two?", "ground_truth": "four"},
    ]
    (suite_dir / "dataset.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    provider.say("The capital of France is Paris.", "Two plus two is four.")
    (tmp_path / "server").mkdir()
    server = Server(tmp_path / "server", provider.url)
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    with trio.fail_after(240):
        await server.start()
        try:
            async with recording(server.url) as proxy:
                env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_")}
                env |= {
                    "HOME": str(home),
                    "PATH": f"{JS_DIR / 'node_modules' / '.bin'}{os.pathsep}{env['PATH']}",
                    "LETTA_API_KEY": "kelpie-e2e",
                    "LETTA_CODE_TELEM": "0",
                    "DISABLE_AUTOUPDATER": "1",
                }
                done = await trio.run_process(
                    [str(letta_evals), "run", str(suite_dir / "suite.yaml"), "--output",
                     str(out), "--display", "none", "--base-url", proxy.url],
                    cwd=suite_dir, env=env, capture_stdout=True, capture_stderr=True,
                    check=False,
                )  # fmt: skip
                calls = list(proxy.calls)
        finally:
            await server.stop()
    report = (
        f"letta-evals exited {done.returncode}\nstdout:\n{done.stdout.decode()[-3000:]}\n"
        f"stderr:\n{done.stderr.decode()[-3000:]}\nrefused:\n"
        + "\n".join(
            f"{c.method} {c.path} -> {c.status}"
            for c in calls
            if c.status is None or c.status >= 400
        )
    )
    assert done.returncode == 0, report
    results = [json.loads(line) for line in (out / f"{MODEL.replace('/', '-')}.jsonl").open()]
    assert sorted(r["sample_id"] for r in results) == ["capital", "sum"], report
    for result in results:
        assert result.get("error") is None, (result, report)
        assert result["grades"]["answer"]["score"] == 1.0, (result, report)
        # The trajectory is what the server kept, read back with letta-client: the prompt
        # the CLI sent and the scripted answer.
        [turn] = result["trajectory"]
        kinds = [m["message_type"] for m in turn]
        assert kinds.count("user_message") == 1 and kinds[-1] == "assistant_message", turn
    summary = json.loads((out / "summary.json").read_text())
    [model] = summary["models"]
    assert (model["n_total"], model["n_attempted"], model["reward"]) == (2, 2, 1.0), summary
    # Each sample: a new agent, its turn in a conversation, then its messages read back
    # agent-wide (no conversation named), which must include the conversation's.
    sends = [c for c in calls if c.method == "POST" and c.path.endswith("/messages")]
    assert len(sends) == 2 and all(c.path.startswith("/v1/conversations/") for c in sends)
    reads = [c for c in calls if c.method == "GET" and c.path.startswith("/v1/agents/")
             and c.path.endswith("/messages")]  # fmt: skip
    assert reads and all("conversation_id" not in c.query for c in reads), reads
