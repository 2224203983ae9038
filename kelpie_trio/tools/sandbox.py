"""Custom tools run here: in a child process, never inside the server.

`ToolSandbox.run` starts `python -I kelpie_trio/tools/_runner.py` for each call,
hands it the tool's source, the function's name and the arguments as one JSON
document on stdin, and reads back one JSON result on a pipe of its own; the
tool's prints arrive separately on stdout and stderr. Whatever goes wrong in the
child -- an exception, a timeout, a memory limit, a crash -- comes back as a
`ToolResult` with status "error" and a one-line `error`, never as an exception in
the server, so the agent records a tool_return and goes on.

The rules:

- Wall clock: a call gets `timeout` seconds. Then the child's whole process group
  (the runner and anything the tool started) is killed with SIGKILL and the error
  is "timed out after N s". When a call ends normally, processes the tool left
  running are killed too. If the server itself dies, the runner notices within a
  second and kills its group, so no orphan outlives the call.
- Memory: the runner sets RLIMIT_AS to `memory_mb` before the tool's code runs; an
  allocation past it is "memory limit exceeded (N MB)". RLIMIT_AS counts address
  space, not resident memory, so the child gets MALLOC_ARENA_MAX=1 (glibc would
  otherwise reserve 64 MB per thread); libraries that reserve large regions up
  front need a larger limit.
- Environment: the child gets only the `allowed_env` variables the server has, the
  tool's own `env_vars`, HOME and TMPDIR pointing at a fresh scratch directory
  (also its working directory, removed after the call) and MALLOC_ARENA_MAX; the
  tool's `env_vars` win. `-I` makes Python ignore PYTHON* variables, the user's
  site-packages and the working directory on sys.path.
- Output: stdout and stderr are kept up to `max_output_bytes` each and the rest is
  read and dropped (a last line says how much); the JSON result may be up to
  MAX_RESULT_BYTES. A return value JSON cannot hold comes back as its str().
- pip requirements are checked, never installed: installing per call is slow and
  this server has no network to install from. In the child, each requirement's
  distribution must be installed in the sandbox's Python (`importlib.metadata`), at
  exactly the pinned version when one is given (Letta installs `name==version`).
  Otherwise the call is refused with "requires packages not installed in the
  sandbox: x==1.0; install them into the sandbox environment". To give tools
  packages, install them into the Python named by `python` -- ideally a venv of
  its own, since by default it is the server's, whose packages tools can import.

A tool call is at-least-once: after a crash, a call whose result was not yet
checkpointed is run again (only checkpointed results are never re-run). Custom
tools should therefore be idempotent, or tolerate running twice.

This isolates the server from a tool's failures, hangs and memory, and keeps the
server's environment (KELPIE_*, API keys) out of the tool's. It is not a security
boundary against hostile code: the child runs as the server's user, so it can
read what the server can read (files, and /proc/<server pid>/environ unless the
server makes itself non-dumpable), reach the network, or leave its process group.
Untrusted tools need a separate user, container or VM around `python`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import trio

from kelpie_trio.models.tools import PipRequirement

__all__ = [
    "DEFAULT_ALLOWED_ENV",
    "MAX_OUTPUT_BYTES",
    "MAX_RESULT_BYTES",
    "ToolResult",
    "ToolSandbox",
]

DEFAULT_ALLOWED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
MAX_OUTPUT_BYTES = 1_000_000  # of stdout, and again of stderr
# Above the largest return_char_limit (1,000,000 characters) with room for JSON escapes.
MAX_RESULT_BYTES = 8_000_000

_RUNNER = Path(__file__).with_name("_runner.py")
_READ_SIZE = 65_536
_REAP_SECONDS = 5.0  # a SIGKILLed child is gone at once unless stuck in the kernel
_ENV_NAME = re.compile(r"[^=\0]+")


@attrs.frozen
class ToolResult:
    """How one tool call went; `error` is set exactly when status is "error"."""

    status: Literal["success", "error"]
    func_return: Any = None  # the JSON value returned, or its str() if JSON cannot hold it
    stdout: list[str] = attrs.Factory(list)
    stderr: list[str] = attrs.Factory(list)
    error: str | None = None


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive whole number, not {value!r}")


@attrs.frozen(kw_only=True)
class ToolSandbox:
    """Runs custom tools in child processes under the rules of the module docstring."""

    timeout: float = attrs.field(default=30.0, validator=_positive)
    memory_mb: int = attrs.field(default=512, validator=_positive_int)
    python: str = sys.executable
    allowed_env: tuple[str, ...] = DEFAULT_ALLOWED_ENV
    max_output_bytes: int = attrs.field(default=MAX_OUTPUT_BYTES, validator=_positive_int)

    async def run(
        self,
        tool_source: str,
        function_name: str,
        arguments: Mapping[str, Any],
        *,
        env_vars: Mapping[str, str] | None = None,
        pip_requirements: Sequence[Mapping[str, Any] | PipRequirement] | None = None,
    ) -> ToolResult:
        """Call `function_name(**arguments)` from `tool_source` in a fresh child process."""
        try:
            requirements = _requirements(pip_requirements or ())
        except _Refused as e:
            return _failed(str(e))
        try:
            request = json.dumps(
                {
                    "source": tool_source,
                    "function": function_name,
                    "arguments": dict(arguments),
                    "requirements": requirements,
                    "memory_bytes": self.memory_mb * 1024 * 1024,
                    "memory_mb": self.memory_mb,
                    "parent_pid": os.getpid(),
                },
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as e:
            return _failed(f"tool call cannot be sent to the sandbox: {e}")
        try:
            scratch = tempfile.mkdtemp(prefix="kelpie-tool-")
        except OSError as e:
            return _failed(f"could not create the tool's scratch directory: {e}")
        try:
            env = self._child_env(env_vars or {}, scratch)
            return await self._execute(request, env, scratch)
        except _Refused as e:
            return _failed(str(e))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    functools.partial(shutil.rmtree, scratch, ignore_errors=True)
                )

    def _child_env(self, env_vars: Mapping[str, str], scratch: str) -> dict[str, str]:
        env = {"HOME": scratch, "TMPDIR": scratch, "MALLOC_ARENA_MAX": "1"}
        env |= {name: os.environ[name] for name in self.allowed_env if name in os.environ}
        for name, value in env_vars.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise _Refused(f"invalid environment variable name {name!r}")
            if not isinstance(value, str) or "\0" in value:
                raise _Refused(f"environment variable {name} must be a string without NUL")
            env[name] = value
        return env

    async def _execute(self, request: bytes, env: dict[str, str], cwd: str) -> ToolResult:
        result_read, result_write = os.pipe()
        async with trio.lowlevel.FdStream(result_read) as results:
            try:
                process = await trio.lowlevel.open_process(
                    [self.python, "-I", str(_RUNNER), str(result_write)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # its own process group, killed as one
                    pass_fds=(result_write,),
                )
            except OSError as e:
                return _failed(f"could not start the sandbox's Python {self.python!r}: {e}")
            finally:
                # The child holds the only write end, so its exit ends our reads.
                os.close(result_write)

            stdout = _Capture(self.max_output_bytes)
            stderr = _Capture(self.max_output_bytes)
            result = _Capture(MAX_RESULT_BYTES)
            try:
                with trio.move_on_after(self.timeout) as deadline:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_feed, process.stdin, request)
                        nursery.start_soon(stdout.drain, process.stdout)
                        nursery.start_soon(stderr.drain, process.stderr)
                        nursery.start_soon(result.drain, results)
                        await process.wait()
                        # Whatever the tool started dies with it, closing the pipes it held.
                        # (The leader is reaped by now, but its group lives on while any
                        # member does, and pids are not reused that fast.)
                        _kill_group(process.pid)
            finally:
                _kill_group(process.pid)
                with trio.CancelScope(shield=True), trio.move_on_after(_REAP_SECONDS):
                    for stream in (process.stdin, process.stdout, process.stderr):
                        if stream is not None:
                            await stream.aclose()
                    await process.wait()

        out, err = stdout.lines("stdout"), stderr.lines("stderr")
        if deadline.cancelled_caught:
            return _failed(f"timed out after {self.timeout:g} s", out, err)
        return _outcome(result, process.returncode, out, err)


class _Refused(Exception):
    """A call the sandbox will not start; the message says why."""


def _requirements(
    requirements: Sequence[Mapping[str, Any] | PipRequirement],
) -> list[dict[str, str | None]]:
    checked: list[dict[str, str | None]] = []
    for requirement in requirements:
        if isinstance(requirement, PipRequirement):
            name, version = requirement.name, requirement.version
        elif isinstance(requirement, Mapping):
            name, version = requirement.get("name"), requirement.get("version")
        else:
            raise _Refused(f"pip requirement {requirement!r} is not a {{name, version}} record")
        if not isinstance(name, str) or not name.strip():
            raise _Refused(f"pip requirement {requirement!r} has no package name")
        if version is not None and not isinstance(version, str):
            raise _Refused(f"pip requirement {name!r} has a version that is not a string")
        checked.append({"name": name.strip(), "version": (version or "").strip() or None})
    return checked


@attrs.define
class _Capture:
    """One of the child's output streams, kept up to `limit` bytes."""

    limit: int
    data: bytearray = attrs.Factory(bytearray)
    dropped: int = 0

    async def drain(self, stream: trio.abc.ReceiveStream | None) -> None:
        # Reading on past the limit keeps the child from blocking on a full pipe.
        assert stream is not None
        while chunk := await stream.receive_some(_READ_SIZE):
            room = max(0, self.limit - len(self.data))
            self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - room)

    def lines(self, name: str) -> list[str]:
        lines = self.data.decode("utf-8", errors="replace").splitlines()
        if self.dropped:
            lines.append(f"[{name} truncated: {self.dropped} more bytes not kept]")
        return lines


async def _feed(stdin: trio.abc.SendStream | None, request: bytes) -> None:
    assert stdin is not None
    try:
        async with stdin:
            await stdin.send_all(request)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the child died before reading; its exit status tells the story


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, signal.SIGKILL)


def _outcome(
    result: _Capture, returncode: int | None, out: list[str], err: list[str]
) -> ToolResult:
    if result.dropped:
        return _failed(f"tool result is larger than {MAX_RESULT_BYTES} bytes", out, err)
    if not result.data:
        return _failed(_no_result(returncode, err), out, err)
    try:
        reply = json.loads(result.data)
    except ValueError:
        return _failed("tool process sent a malformed result", out, err)
    if isinstance(reply, dict) and reply.get("status") == "success":
        return ToolResult("success", func_return=reply.get("func_return"), stdout=out, stderr=err)
    if isinstance(reply, dict) and reply.get("status") == "error":
        return _failed(str(reply.get("error")), out, err)
    return _failed("tool process sent a malformed result", out, err)


def _no_result(returncode: int | None, err: list[str]) -> str:
    if any("MemoryError" in line for line in err[-20:]):
        return "memory limit exceeded"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"tool process was killed by {name} before returning"
    return f"tool process exited with status {returncode} before returning"


def _failed(message: str, out: list[str] | None = None, err: list[str] | None = None) -> ToolResult:
    return ToolResult("error", stdout=out or [], stderr=err or [], error=message)
