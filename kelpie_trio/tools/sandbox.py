"""Custom tools run here: in a child process, never inside the server, and (by default)
inside namespaces that make it a boundary.

`ToolSandbox.run` starts `python -I kelpie_trio/tools/_runner.py` for each call,
hands it the tool's source, the function's name and the arguments as one JSON
document on stdin, and reads back one result line on a pipe of its own; the
tool's prints arrive separately on stdout and stderr. Whatever goes wrong in the
child -- an exception, a limit, a crash -- comes back as a `ToolResult` with status
"error", a one-line `error` and, when a limit ended it, `limit` naming it; never as
an exception in the server, so the agent records a tool_return and goes on.

Isolated (`isolated=True`, the default; how in _jail.py): the runner steps into new
user, mount, PID, network, IPC and UTS namespaces before the tool's code is read, and
runs it as uid 65534 with no capabilities, PR_SET_NO_NEW_PRIVS and a seccomp filter
(x86_64). It sees the system's /usr, the tool's Python and a few /etc files,
read-only; a private /tmp of `scratch_mb` (also HOME and the working directory); a
/proc of its own processes; no network unless `network`. The server's data paths
(`hidden`) are covered if they fall inside that view. PID 1 of the namespace is the
runner: when it exits every process the tool started dies with it. Whether this host
can do it is asked once at start-up (isolation.py).

Unisolated (`isolated=False`, only when the operator chooses it on a host without
user namespaces): today's child process as the server's user, with the same limits
but no boundary: it can read what the server reads and reach the network, and a
process it starts in a new session can outlive the call.

Limits (attributes here, settings in config.py): `timeout` (wall clock: the child's
process group is killed, "wall_time"), `cpu_seconds` (RLIMIT_CPU, "cpu_time"),
`memory_mb` (RLIMIT_AS, "memory"; MALLOC_ARENA_MAX=1 so glibc does not reserve 64 MB
per thread), `max_processes` (RLIMIT_NPROC, isolated only, since outside a user
namespace it counts every process of the server's user: "processes"),
`max_open_files` (RLIMIT_NOFILE, "open_files"), `scratch_mb` (the size of /tmp,
"scratch"), and the result's size (MAX_RESULT_BYTES, "output"). stdout and stderr are
kept up to `max_output_bytes` each; the rest is read and dropped and a last line says
how much (that is not an error).

Environment: the child gets only the `allowed_env` variables the server has, the
agent's tool variables and secrets (`env_vars`), HOME and TMPDIR (the scratch
directory) and MALLOC_ARENA_MAX; `env_vars` win. They are never logged.

pip requirements: with `envs` (the node sets it unless KELPIE_TOOL_PIP=refuse), a call
runs in a cached venv holding its requirements, made on first use (envs.py); without,
each requirement must be installed in `python` at the pinned version if one is given.
Either way the runner checks them before the tool's code runs and refuses the call,
saying which, when one is missing. Nothing is installed into the server's environment.

A tool call is at-least-once: after a crash, a call whose result was not yet
checkpointed is run again. Custom tools should be idempotent, or tolerate running twice.
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
from kelpie_trio.tools.envs import EnvError, ToolEnvs

__all__ = [
    "DEFAULT_ALLOWED_ENV",
    "LIMITS",
    "MAX_OUTPUT_BYTES",
    "MAX_RESULT_BYTES",
    "ToolResult",
    "ToolSandbox",
    "default_python",
    "timed_out",
]

DEFAULT_ALLOWED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
MAX_OUTPUT_BYTES = 1_000_000  # of stdout, and again of stderr
# Above the largest return_char_limit (1,000,000 characters) with room for JSON escapes.
MAX_RESULT_BYTES = 8_000_000
# The names a result's `limit` takes.
LIMITS = ("wall_time", "cpu_time", "memory", "processes", "open_files", "scratch", "output")

_RUNNER = Path(__file__).with_name("_runner.py")
_READ_SIZE = 65_536
_REAP_SECONDS = 5.0  # a SIGKILLed child is gone at once unless stuck in the kernel
# After the runner exits, how long its pipes may stay open (unisolated, a process the tool
# started in a new session can hold them); the result is in hand by then.
_DRAIN_GRACE = 0.5
_ENV_NAME = re.compile(r"[^=\0]+")
_SCRATCH = "/tmp"  # inside the namespaces


def default_python() -> str:
    """The system's Python: the interpreter the server's venv (if any) was made from, so
    tools do not see the server's packages."""
    return getattr(sys, "_base_executable", None) or sys.executable


@attrs.frozen
class ToolResult:
    """How one tool call went; `error` is set exactly when status is "error", and `limit`
    when one of the sandbox's limits ended the call (one of LIMITS)."""

    status: Literal["success", "error"]
    func_return: Any = None  # the JSON value returned, or its str() if JSON cannot hold it
    stdout: list[str] = attrs.Factory(list)
    stderr: list[str] = attrs.Factory(list)
    error: str | None = None
    limit: str | None = None


def timed_out(
    seconds: float, out: list[str] | None = None, err: list[str] | None = None
) -> ToolResult:
    """The result of a call ended by its wall-clock limit (the simulator's too)."""
    return _failed(f"timed out after {seconds:g} s (wall time limit)", out, err, "wall_time")


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
    cpu_seconds: int = attrs.field(default=30, validator=_positive_int)
    memory_mb: int = attrs.field(default=512, validator=_positive_int)
    max_processes: int = attrs.field(default=64, validator=_positive_int)
    max_open_files: int = attrs.field(default=256, validator=_positive_int)
    scratch_mb: int = attrs.field(default=64, validator=_positive_int)
    max_output_bytes: int = attrs.field(default=MAX_OUTPUT_BYTES, validator=_positive_int)
    python: str = attrs.field(factory=default_python)
    allowed_env: tuple[str, ...] = DEFAULT_ALLOWED_ENV
    isolated: bool = True
    network: bool = False  # isolated only: unisolated tools always have the host's network
    seccomp: bool = True
    # Paths tools must never see (the server's data directory, its store), even should
    # they lie inside the view (a Python installed under the data directory).
    hidden: tuple[str, ...] = ()
    # Where tools with pip requirements get a venv of their own (envs.py); None: such a
    # tool runs only if `python` has its requirements already.
    envs: ToolEnvs | None = None

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
        python = self.python
        if requirements and self.envs is not None:
            try:
                python = await self.envs.python_for(requirements)
            except EnvError as e:
                return _failed(f"the tool's pip requirements cannot be provided: {e}")
        try:
            # The host directory the namespace's root is mounted on (isolated), or the
            # scratch directory itself (unisolated).
            workdir = tempfile.mkdtemp(prefix="kelpie-tool-")
        except OSError as e:
            return _failed(f"could not create the tool's scratch directory: {e}")
        try:
            scratch = _SCRATCH if self.isolated else workdir
            env = self._child_env(env_vars or {}, scratch)
            request = self._request(tool_source, function_name, arguments, requirements, workdir)
            return await self._execute(python, request, env, workdir)
        except _Refused as e:
            return _failed(str(e))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    functools.partial(shutil.rmtree, workdir, ignore_errors=True)
                )

    def _request(
        self,
        source: str,
        function: str,
        arguments: Mapping[str, Any],
        requirements: list[dict[str, str | None]],
        workdir: str,
    ) -> bytes:
        jail = None
        if self.isolated:
            jail = {
                "root": workdir,
                "network": self.network,
                "seccomp": self.seccomp,
                "scratch_bytes": self.scratch_mb * 1024 * 1024,
                "hide": [str(p) for p in self.hidden],
            }
        limits = {
            "cpu_seconds": self.cpu_seconds,
            "open_files": self.max_open_files,
            "processes": self.max_processes if self.isolated else None,
            "scratch_mb": self.scratch_mb if self.isolated else None,
        }
        try:
            return json.dumps(
                {
                    "source": source,
                    "function": function,
                    "arguments": dict(arguments),
                    "requirements": requirements,
                    "memory_bytes": self.memory_mb * 1024 * 1024,
                    "memory_mb": self.memory_mb,
                    "limits": limits,
                    "jail": jail,
                },
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as e:
            raise _Refused(f"tool call cannot be sent to the sandbox: {e}") from None

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

    async def _execute(
        self, python: str, request: bytes, env: dict[str, str], cwd: str
    ) -> ToolResult:
        result_read, result_write = os.pipe()
        # The server holds the lifeline's only write end while the call lasts: when it
        # closes (the call is over, or the server died) the runner ends itself.
        lifeline_read, lifeline_write = os.pipe()
        async with trio.lowlevel.FdStream(result_read) as results:
            try:
                process = await trio.lowlevel.open_process(
                    [python, "-I", str(_RUNNER), str(result_write), str(lifeline_read)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # its own process group, killed as one
                    pass_fds=(result_write, lifeline_read),
                )
            except OSError as e:
                os.close(lifeline_write)
                return _failed(f"could not start the sandbox's Python {python!r}: {e}")
            finally:
                # The child holds the only write end, so its exit ends our reads.
                os.close(result_write)
                os.close(lifeline_read)

            stdout = _Capture(self.max_output_bytes)
            stderr = _Capture(self.max_output_bytes)
            result = _Capture(MAX_RESULT_BYTES)
            try:
                with trio.move_on_after(self.timeout) as deadline:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_feed, process.stdin, request)
                        drained = _Drains(3)
                        nursery.start_soon(drained.run, stdout.drain, process.stdout)
                        nursery.start_soon(drained.run, stderr.drain, process.stderr)
                        nursery.start_soon(drained.run, result.drain, results)
                        await process.wait()
                        # Whatever the tool started dies with it, closing the pipes it held.
                        _kill_group(process.pid)
                        with trio.move_on_after(_DRAIN_GRACE):
                            await drained.done.wait()
                        nursery.cancel_scope.cancel()
            finally:
                os.close(lifeline_write)
                _kill_group(process.pid)
                with trio.CancelScope(shield=True), trio.move_on_after(_REAP_SECONDS):
                    for stream in (process.stdin, process.stdout, process.stderr):
                        if stream is not None:
                            await stream.aclose()
                    await process.wait()

        out, err = stdout.lines("stdout"), stderr.lines("stderr")
        reply, trailer = _records(result)
        if reply is None and deadline.cancelled_caught:
            # Only a call that had not answered by its deadline timed out.
            return timed_out(self.timeout, out, err)
        return self._outcome(result, reply, trailer, process.returncode, out, err)

    def _outcome(
        self,
        result: _Capture,
        reply: Any,
        trailer: dict[str, Any] | None,
        returncode: int | None,
        out: list[str],
        err: list[str],
    ) -> ToolResult:
        if result.dropped:
            return _failed(
                f"tool result is larger than {MAX_RESULT_BYTES} bytes (output limit)",
                out,
                err,
                "output",
            )
        if reply is _MALFORMED:
            return _failed("tool process sent a malformed result", out, err)
        if reply is None:
            return self._no_result(trailer, returncode, out, err)
        if isinstance(reply, dict) and reply.get("status") == "success":
            return ToolResult(
                "success", func_return=reply.get("func_return"), stdout=out, stderr=err
            )
        if isinstance(reply, dict) and reply.get("status") == "error":
            limit = reply.get("limit")
            return _failed(str(reply.get("error")), out, err, limit if limit in LIMITS else None)
        return _failed("tool process sent a malformed result", out, err)

    def _no_result(
        self,
        trailer: dict[str, Any] | None,
        returncode: int | None,
        out: list[str],
        err: list[str],
    ) -> ToolResult:
        """The tool's process ended without answering: say how, and which limit if one."""
        signum: int | None = None
        code = returncode
        cpu: float | None = None
        if trailer is not None:  # isolated: how PID 1 ended, seen from outside
            signum, code, cpu = (
                trailer.get("signal"),
                trailer.get("code"),
                trailer.get("cpu_seconds"),
            )
        elif returncode is not None and returncode < 0:
            signum, code = -returncode, None
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu is not None and cpu >= self.cpu_seconds
        ):
            return _failed(f"CPU time limit exceeded ({self.cpu_seconds} s)", out, err, "cpu_time")
        if any("MemoryError" in line for line in err[-20:]):
            return _failed(f"memory limit exceeded ({self.memory_mb} MB)", out, err, "memory")
        if signum is not None:
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = f"signal {signum}"
            return _failed(f"tool process was killed by {name} before returning", out, err)
        return _failed(f"tool process exited with status {code} before returning", out, err)


class _Refused(Exception):
    """A call the sandbox will not start; the message says why."""


_MALFORMED = object()


def _records(result: _Capture) -> tuple[Any, dict[str, Any] | None]:
    """The runner's reply ("R" line: None if it sent none) and the jail's trailer ("X")."""
    reply: Any = None
    trailer = None
    if result.dropped:
        return None, None
    for line in bytes(result.data).split(b"\n"):
        if not line:
            continue
        kind, body = line[:1], line[1:]
        try:
            value = json.loads(body)
        except ValueError:
            value = _MALFORMED
        if kind == b"R" and reply is None:
            reply = value
        elif kind == b"X" and isinstance(value, dict):
            trailer = value
        elif reply is None:
            reply = _MALFORMED
    return reply, trailer


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
class _Drains:
    """Counts the child's streams still open."""

    left: int
    done: trio.Event = attrs.Factory(trio.Event)

    async def run(self, drain: Any, stream: trio.abc.ReceiveStream | None) -> None:
        await drain(stream)
        self.left -= 1
        if self.left == 0:
            self.done.set()


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


def _failed(
    message: str,
    out: list[str] | None = None,
    err: list[str] | None = None,
    limit: str | None = None,
) -> ToolResult:
    return ToolResult("error", stdout=out or [], stderr=err or [], error=message, limit=limit)
