"""Custom tools run in a child process: limits, a clean environment, errors as results.

These start real processes on the real clock; each test takes well under 3 s.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest
import trio

from kelpie_trio.models.tools import PipRequirement
from kelpie_trio.tools.sandbox import ToolResult, ToolSandbox

# Generous: a loaded machine (CI beside other jobs) starts a jailed Python slowly; the
# tests of the time limit build sandboxes of their own with short ones.
SANDBOX = ToolSandbox(timeout=30.0, memory_mb=256)


async def run(
    source: str,
    name: str = "tool",
    arguments: dict[str, object] | None = None,
    *,
    sandbox: ToolSandbox = SANDBOX,
    **options: object,
) -> ToolResult:
    return await sandbox.run(textwrap.dedent(source), name, arguments or {}, **options)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


async def gone(pid: int, *, within: float = 1.0) -> bool:
    # A SIGKILLed process disappears within moments, not at once.
    for _ in range(int(within / 0.01)):
        if not alive(pid):
            return True
        await trio.sleep(0.01)
    return False


ADD = """
def tool(a: int, b: int) -> int:
    return a + b
"""


async def test_a_tool_returns_its_value() -> None:
    result = await run(ADD, arguments={"a": 2, "b": 3})
    assert result == ToolResult("success", func_return=5)


async def test_prints_are_captured_apart_from_the_return_value() -> None:
    result = await run(
        """
        import sys

        def tool() -> str:
            print("first line")
            print("second line")
            print("a warning", file=sys.stderr)
            return "done"
        """
    )
    assert result.status == "success"
    assert result.func_return == "done"
    assert result.stdout == ["first line", "second line"]
    assert result.stderr == ["a warning"]


async def test_an_exception_becomes_an_error_with_its_type_and_message() -> None:
    result = await run(
        """
        def tool(city: str) -> str:
            raise ValueError(f"no weather for {city}")
        """,
        arguments={"city": "Atlantis"},
    )
    assert result.status == "error"
    assert result.error == "ValueError: no weather for Atlantis"
    assert result.func_return is None
    # The traceback shows the tool's own line, not the runner's frames.
    assert result.stderr[0] == "Traceback (most recent call last):"
    assert 'raise ValueError(f"no weather for {city}")' in "\n".join(result.stderr)
    assert "_runner.py" not in "\n".join(result.stderr)


async def test_wrong_arguments_are_an_error_not_a_crash() -> None:
    result = await run(ADD, arguments={"a": 1})
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith("TypeError: ")
    assert "'b'" in result.error


async def test_a_syntax_error_in_the_source_is_an_error() -> None:
    result = await run("def tool(:\n    pass\n")
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith("SyntaxError: ")


async def test_sys_exit_in_a_tool_is_an_error() -> None:
    result = await run(
        """
        import sys

        def tool() -> None:
            sys.exit(3)
        """
    )
    assert (result.status, result.error) == ("error", "SystemExit: 3")


async def test_the_named_function_must_exist() -> None:
    result = await run(ADD, name="subtract")
    assert result.status == "error"
    assert result.error == "tool source defines no function named 'subtract' (functions: tool)"


async def test_a_main_block_in_the_source_does_not_run() -> None:
    result = await run(
        """
        def tool() -> str:
            return "called"

        if __name__ == "__main__":
            raise RuntimeError("ran as a script")
        """
    )
    assert result == ToolResult("success", func_return="called")


def host_pids(token: str) -> list[int]:
    """Live processes on this host (any namespace) whose command line holds `token`.

    Pids inside the sandbox's PID namespace mean nothing here, so tests mark the
    processes a tool starts with a token and look for it from outside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def all_gone(token: str, *, within: float = 1.0) -> bool:
    for _ in range(int(within / 0.01)):
        if not host_pids(token):
            return True
        await trio.sleep(0.01)
    return False


async def started(token: str, *, within: float = 3.0) -> None:
    for _ in range(int(within / 0.01)):
        if host_pids(token):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"no process marked {token} ever started")


def token() -> str:
    return f"kelpie-test-{os.getpid()}-{time.monotonic_ns()}"


# Starts a marked sleeper (in a session of its own when `detach`), then waits or returns.
SLEEPER = """
import subprocess
import sys
import time

def tool(token: str, detach: bool = False, wait: bool = True) -> str:
    subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", token],
        start_new_session=detach,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if wait:
        time.sleep(60)
    return "returned"
"""


async def test_a_timeout_kills_the_tool_and_is_an_error() -> None:
    sandbox = ToolSandbox(timeout=1.0)
    began = time.monotonic()
    result = await run(
        """
        import time

        def tool() -> None:
            print("before the deadline", flush=True)
            time.sleep(60)
        """,
        sandbox=sandbox,
    )
    assert time.monotonic() - began < 3.0
    assert result.status == "error"
    assert (result.error, result.limit) == ("timed out after 1 s (wall time limit)", "wall_time")
    # Output printed before the deadline is kept.
    assert result.stdout == ["before the deadline"]


async def test_a_timeout_kills_processes_the_tool_started() -> None:
    mark = token()
    result = await run(SLEEPER, arguments={"token": mark}, sandbox=ToolSandbox(timeout=1.0))
    assert result.limit == "wall_time"
    assert await all_gone(mark)


async def test_processes_left_running_after_a_call_are_killed() -> None:
    mark = token()
    result = await run(SLEEPER, arguments={"token": mark, "wait": False})
    assert result == ToolResult("success", func_return="returned")
    assert await all_gone(mark)


async def test_a_process_in_a_session_of_its_own_dies_with_the_call() -> None:
    # setsid escapes a process group, not a PID namespace; and the call, whose function
    # returned at once, is not held until the timeout by the child's open pipes.
    mark = token()
    began = time.monotonic()
    result = await run(
        SLEEPER,
        arguments={"token": mark, "detach": True, "wait": False},
        sandbox=ToolSandbox(timeout=5.0),
    )
    assert result == ToolResult("success", func_return="returned")
    assert time.monotonic() - began < 3.0
    assert await all_gone(mark)


async def test_unisolated_a_detached_child_does_not_turn_a_return_into_a_timeout() -> None:
    # Outside the namespaces a child in a new session outlives the call (the README says
    # so); it holds the tool's stdout open, yet the call reports what the function returned.
    mark = token()
    unisolated = ToolSandbox(timeout=5.0, isolated=False)
    began = time.monotonic()
    try:
        result = await run(
            """
            import subprocess
            import sys

            def tool(token: str) -> str:
                subprocess.Popen(
                    [sys.executable, "-c", "import time; time.sleep(60)", token],
                    start_new_session=True,
                )
                return "returned"
            """,
            arguments={"token": mark},
            sandbox=unisolated,
        )
        assert result == ToolResult("success", func_return="returned")
        assert time.monotonic() - began < 3.0
    finally:
        for pid in host_pids(mark):
            os.kill(pid, 9)


async def test_threads_left_running_do_not_hold_the_call() -> None:
    began = time.monotonic()
    result = await run(
        """
        import threading
        import time

        def tool() -> str:
            threading.Thread(target=time.sleep, args=(60,)).start()
            return "returned"
        """
    )
    assert result == ToolResult("success", func_return="returned")
    assert time.monotonic() - began < 3.0


async def test_cancelling_the_caller_kills_the_tool() -> None:
    mark = token()

    async def call() -> None:
        await run(SLEEPER, arguments={"token": mark})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await started(mark)
        nursery.cancel_scope.cancel()
    assert await all_gone(mark)


SERVER = '''
import sys

import trio

from kelpie_trio.tools.sandbox import ToolSandbox

TOOL = """
import subprocess
import sys
import time

def tool(token: str) -> None:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
    time.sleep(60)
"""

trio.run(ToolSandbox(timeout=60).run, TOOL, "tool", {"token": sys.argv[1]})
'''


async def test_a_tool_does_not_outlive_a_crashed_server(tmp_path: Path) -> None:
    mark = token()
    # The dead server cannot remove the tool's scratch directory; keep it in tmp_path.
    server = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVER, mark], env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    try:
        await started(mark, within=10.0)
    finally:
        server.kill()  # SIGKILL: the server gets no chance to clean up
        await server.wait()
    # The runner's lifeline closes with the server; PID 1 exits and takes the rest along.
    assert await all_gone(mark, within=2.0)


async def test_a_memory_hog_is_an_error_and_the_sandbox_goes_on() -> None:
    hog = """
    def tool() -> int:
        chunks = [bytearray(1024 * 1024) for _ in range(2048)]  # 2 GB
        return len(chunks)
    """
    result = await run(hog, sandbox=ToolSandbox(memory_mb=256))
    assert result.status == "error"
    assert (result.error, result.limit) == ("memory limit exceeded (256 MB)", "memory")
    assert await run(ADD, arguments={"a": 1, "b": 1}) == ToolResult("success", func_return=2)


async def test_one_huge_allocation_is_a_memory_error() -> None:
    result = await run(
        """
        def tool() -> int:
            return len(bytearray(2 * 1024**3))
        """,
        sandbox=ToolSandbox(memory_mb=256),
    )
    assert result == ToolResult("error", error="memory limit exceeded (256 MB)", limit="memory")


ENV_SOURCE = """
import os

def tool() -> dict:
    return {name: os.environ.get(name) for name in ("KELPIE_SECRET", "OPENAI_API_KEY", "TOKEN")}
"""


async def test_the_servers_secrets_are_not_in_the_tools_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KELPIE_SECRET", "x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = await run(ENV_SOURCE, env_vars={"TOKEN": "tool-token"})
    assert result.status == "success"
    assert result.func_return == {
        "KELPIE_SECRET": None,
        "OPENAI_API_KEY": None,
        "TOKEN": "tool-token",
    }


async def test_only_allowed_variables_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("KELPIE_SECRET", "x")
    result = await run(
        """
        import os

        def tool() -> dict:
            return dict(os.environ)
        """
    )
    env = result.func_return
    assert env["TZ"] == "UTC"
    assert "KELPIE_SECRET" not in env
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "MALLOC_ARENA_MAX"}


async def test_an_invalid_env_var_name_is_refused() -> None:
    result = await run(ENV_SOURCE, env_vars={"A=B": "x"})
    assert result == ToolResult("error", error="invalid environment variable name 'A=B'")


async def test_async_tools_are_awaited() -> None:
    result = await run(
        """
        import asyncio

        async def tool(x: int) -> int:
            await asyncio.sleep(0.01)
            return x * 2
        """,
        arguments={"x": 21},
    )
    assert result == ToolResult("success", func_return=42)


async def test_a_return_value_json_cannot_hold_comes_back_as_text() -> None:
    result = await run(
        """
        def tool() -> object:
            return {1, 2, 3}
        """
    )
    assert result == ToolResult("success", func_return="{1, 2, 3}")


async def test_a_custom_object_comes_back_as_its_str() -> None:
    result = await run(
        """
        class Weather:
            def __str__(self) -> str:
                return "sunny"

        def tool() -> object:
            return Weather()
        """
    )
    assert result == ToolResult("success", func_return="sunny")


async def test_json_values_come_back_as_json() -> None:
    result = await run(
        """
        def tool() -> dict:
            return {"list": [1, 2.5, None, True], "text": "héllo", "tuple": (1, 2)}
        """
    )
    assert result.func_return == {"list": [1, 2.5, None, True], "text": "héllo", "tuple": [1, 2]}


async def test_a_missing_pip_requirement_is_refused_clearly() -> None:
    result = await run(
        ADD,
        arguments={"a": 1, "b": 2},
        pip_requirements=[{"name": "kelpie-surely-not-installed", "version": "1.0"}],
    )
    assert result == ToolResult(
        "error",
        error="requires packages not installed in the sandbox: kelpie-surely-not-installed==1.0; "
        "install them into the sandbox environment",
    )


async def test_an_installed_pip_requirement_is_accepted() -> None:
    result = await run(
        """
        import attrs

        def tool() -> str:
            return attrs.__name__
        """,
        pip_requirements=[{"name": "attrs"}, PipRequirement("attrs", attrs.__version__)],
    )
    assert result == ToolResult("success", func_return="attrs")


async def test_a_pip_requirement_at_another_version_is_refused() -> None:
    result = await run(ADD, pip_requirements=[{"name": "attrs", "version": "0.0.1"}])
    assert result.status == "error"
    assert result.error == (
        f"requires packages not installed in the sandbox: attrs==0.0.1 "
        f"(installed: {attrs.__version__}); install them into the sandbox environment"
    )


async def test_huge_output_is_truncated() -> None:
    result = await run(
        """
        import sys

        def tool() -> str:
            for _ in range(5_000):
                sys.stdout.write("x" * 999 + "\\n")
            return "still returned"
        """,
        sandbox=ToolSandbox(),  # the default cap of 1 MB
    )
    assert result.status == "success"
    assert result.func_return == "still returned"
    kept = result.stdout[:-1]
    assert sum(len(line) + 1 for line in kept) <= 1_000_000
    assert len(kept) >= 999
    assert result.stdout[-1] == "[stdout truncated: 4000000 more bytes not kept]"


async def test_the_tool_runs_in_a_private_scratch_directory_each_call() -> None:
    source = """
        import os

        def tool() -> list:
            found = os.listdir(".")
            with open("notes.txt", "w") as f:
                f.write("scratch")
            return [os.getcwd(), os.environ["HOME"], found]
        """
    assert (await run(source)).func_return == ["/tmp", "/tmp", []]
    # The next call starts from an empty scratch directory again.
    assert (await run(source)).func_return == ["/tmp", "/tmp", []]


async def test_a_missing_python_is_an_error() -> None:
    result = await run(ADD, sandbox=ToolSandbox(python="/nonexistent/python3"))
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith("could not start the sandbox's Python '/nonexistent/python3'")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ToolSandbox(timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        ToolSandbox(memory_mb=-1)


async def test_calls_run_concurrently() -> None:
    sandbox = ToolSandbox(timeout=5.0)
    source = textwrap.dedent(
        """
        import time

        def tool(n: int) -> int:
            time.sleep(0.5)
            return n
        """
    )
    results: dict[int, ToolResult] = {}

    async def call(n: int) -> None:
        results[n] = await sandbox.run(source, "tool", {"n": n})

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(call, n)
    assert time.monotonic() - started < 2.0
    assert {n: r.func_return for n, r in results.items()} == {0: 0, 1: 1, 2: 2, 3: 3}


@pytest.mark.parametrize("arguments", [{"x": float("nan")}, {"x": object()}])
async def test_arguments_json_cannot_carry_are_an_error(arguments: dict[str, object]) -> None:
    result = await run(ADD, arguments=arguments)
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith("tool call cannot be sent to the sandbox: ")
