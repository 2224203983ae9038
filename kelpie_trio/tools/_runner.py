"""The sandbox's child process: run one custom tool and report how it went.

kelpie_trio/tools/sandbox.py starts this file as
`python -I _runner.py RESULT_FD LIFELINE_FD`; the server never imports it. It uses
the standard library only and plain syntax, because it runs in whatever Python the
sandbox is given, not the server's.

Stdin carries one JSON document: `source`, `function`, `arguments`, `requirements`
(`[{"name", "version"}]`), `memory_bytes`, `memory_mb`, `limits` (`cpu_seconds`,
`processes`, `open_files`, `scratch_mb`) and `jail` (None, or the spec _jail.py
builds namespaces from). The outcome is one line on RESULT_FD, "R" and a JSON
document, so the tool's own prints on stdout and stderr never mix with it:

    {"status": "success", "func_return": <JSON value, or str() of the value>}
    {"status": "error", "error": "<why>", "limit": <the limit that ended it, or null>}

In the jail, the parent left outside adds an "X" line saying how PID 1 ended.
"""

import asyncio
import contextlib
import errno
import importlib.metadata
import inspect
import json
import linecache
import os
import re
import resource
import signal
import sys
import threading
import traceback
import types

TOOL_FILENAME = "<tool source>"
TOOL_MODULE = "__tool__"  # not "__main__": an `if __name__ == "__main__":` block stays idle


def main():
    result_fd = int(sys.argv[1])
    lifeline_fd = int(sys.argv[2])
    # Processes the tool starts must not inherit the result channel or the lifeline.
    os.set_inheritable(result_fd, False)
    os.set_inheritable(lifeline_fd, False)
    request = json.loads(sys.stdin.buffer.read())
    jail = request.get("jail")
    if jail is not None:
        # -I keeps this file's directory off sys.path; the jail sits beside it.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import _jail

        del sys.path[0]
        _jail.enter(jail, result_fd)  # from here on: PID 1 of the namespaces, uid 65534
    _watch_lifeline(lifeline_fd, jailed=jail is not None)
    _set_limits(request)
    outcome = _run(request)
    try:
        payload = json.dumps(outcome, allow_nan=False)
    except MemoryError:
        payload = json.dumps(_memory_error(request))
    except (TypeError, ValueError, RecursionError):
        outcome["func_return"] = _text(outcome["func_return"])
        payload = json.dumps(outcome, allow_nan=False)
    # One line (JSON escapes every newline); the jail's outside parent may add its own after.
    data = ("R" + payload + "\n").encode("utf-8")
    with contextlib.suppress(OSError):
        view = memoryview(data)
        while view:
            view = view[os.write(result_fd, view) :]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    # Threads the tool left running must not keep the process (and the call) alive.
    # In the jail this process is PID 1: its exit ends every process the tool started.
    os._exit(0)


def _watch_lifeline(lifeline_fd, jailed):
    """End the call if the server goes away (or gives up on it) while the tool runs.

    The server holds the only write end of the lifeline until the call is over, so a
    read returning means the server died or let go: a call may be re-run after a server
    crash, and an orphan of the first run must not race the second. Outside the jail
    the whole process group is killed (what the tool started with setsid escapes that);
    in the jail, PID 1 exiting ends the namespace and everything in it.
    """

    def watch():
        with contextlib.suppress(OSError):
            while os.read(lifeline_fd, 1):
                pass
        if not jailed:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(0), signal.SIGKILL)
        os._exit(70)

    threading.stack_size(256 * 1024)
    threading.Thread(target=watch, name="kelpie-lifeline", daemon=True).start()
    threading.stack_size(0)


def _set_limits(request):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limits = request.get("limits") or {}
    memory_bytes = request.get("memory_bytes")
    if memory_bytes is not None:
        _cap(resource.RLIMIT_AS, memory_bytes)
    if limits.get("cpu_seconds"):
        # SIGXCPU at the soft limit; the hard one, a second later, is SIGKILL.
        seconds = int(limits["cpu_seconds"])
        _cap(resource.RLIMIT_CPU, seconds, seconds + 1)
    if limits.get("open_files"):
        _cap(resource.RLIMIT_NOFILE, limits["open_files"])
    if limits.get("processes"):
        _cap(resource.RLIMIT_NPROC, limits["processes"])


def _cap(which, soft, hard=None):
    """Soft and hard alike (or hard just above), so the tool cannot raise its own limit."""
    hard = soft if hard is None else hard
    _, current = resource.getrlimit(which)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))


def _run(request):
    missing = _missing_requirements(request["requirements"])
    if missing:
        return _error(
            "requires packages not installed in the sandbox: "
            + ", ".join(missing)
            + "; install them into the sandbox environment"
        )
    source = request["source"]
    name = request["function"]
    # Registered so tracebacks show the tool's own lines.
    linecache.cache[TOOL_FILENAME] = (len(source), None, source.splitlines(True), TOOL_FILENAME)
    module = types.ModuleType(TOOL_MODULE)
    sys.modules[TOOL_MODULE] = module  # dataclasses, pickle and get_type_hints look here
    try:
        exec(compile(source, TOOL_FILENAME, "exec"), module.__dict__)
        function = module.__dict__.get(name)
        if function is None:
            found = sorted(
                k for k, v in module.__dict__.items() if inspect.isfunction(v) and k[:1] != "_"
            )
            listed = ", ".join(found) or "none"
            return _error(f"tool source defines no function named {name!r} (functions: {listed})")
        if not callable(function):
            return _error(f"{name!r} in the tool source is not a function")
        value = function(**request["arguments"])
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
    except MemoryError:
        return _memory_error(request)
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        # SystemExit too: a tool calling sys.exit() has failed, not ended the runner.
        _print_tool_traceback(e)
        message = f"{type(e).__name__}: {_text(e)}"
        limit = _limit_hit(e, request)
        if limit is not None:
            name, shown = limit
            return _error(f"{shown}: {message}", limit=name)
        return _error(message)
    return {"status": "success", "func_return": value}


# Functions in whose frames a failed fork or spawn surfaces.
_SPAWNERS = {"_execute_child", "_fork_exec", "_launch", "fork", "posix_spawn", "spawnv"}


def _limit_hit(e, request):
    """Which of the sandbox's limits an exception the tool let escape comes from, if any."""
    if not isinstance(e, OSError):
        return None
    limits = request.get("limits") or {}
    if e.errno == errno.EMFILE and limits.get("open_files"):
        return "open_files", f"open files limit reached ({limits['open_files']})"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) and limits.get("scratch_mb"):
        return "scratch", f"scratch space is full ({limits['scratch_mb']} MB)"
    if e.errno == errno.EAGAIN and limits.get("processes"):
        names, line, tb = [], "", e.__traceback__
        while tb is not None:
            names.append(tb.tb_frame.f_code.co_name)
            line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
            tb = tb.tb_next
        if _SPAWNERS.intersection(names) or "fork" in line or "spawn" in line:
            return "processes", f"process limit reached ({limits['processes']})"
    return None


def _missing_requirements(requirements):
    """Requirements not installed in this Python; a version is an exact pin, as in Letta."""
    missing = []
    for requirement in requirements:
        name = requirement["name"]
        wanted = requirement.get("version")
        shown = f"{name}=={wanted}" if wanted else name
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(shown)
            continue
        if wanted and not _same_version(installed, wanted):
            missing.append(f"{shown} (installed: {installed})")
    return missing


def _same_version(installed, wanted):
    wanted = wanted.strip()
    if wanted.startswith("=="):
        wanted = wanted[2:].strip()
    return _version_key(installed) == _version_key(wanted)


def _version_key(version):
    # "1.0" and "1.0.0" are the same release; anything fancier compares as text.
    version = version.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)*", version):
        parts = [int(p) for p in version.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)
    return version


def _print_tool_traceback(e):
    # Drop the runner's (and asyncio's) frames above the tool's first frame.
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != TOOL_FILENAME:
        tb = tb.tb_next
    with contextlib.suppress(Exception):
        traceback.print_exception(type(e), e, tb, file=sys.stderr)


def _memory_error(request):
    return _error(f"memory limit exceeded ({request['memory_mb']} MB)", limit="memory")


def _error(message, limit=None):
    return {"status": "error", "error": message, "limit": limit}


def _text(value):
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__} object>"


if __name__ == "__main__":
    main()
