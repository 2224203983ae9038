"""The sandbox's child process: run one custom tool and report how it went.

kelpie_trio/tools/sandbox.py starts this file as `python -I _runner.py RESULT_FD`;
the server never imports it. It uses the standard library only and plain syntax,
because it runs in whatever Python the sandbox is given, not the server's.

Stdin carries one JSON document: `source`, `function`, `arguments`, `requirements`
(`[{"name", "version"}]`), `memory_bytes`, `memory_mb` and `parent_pid`. The
outcome is one JSON document written to RESULT_FD, so the tool's own prints on
stdout and stderr never mix with it:

    {"status": "success", "func_return": <JSON value, or str() of the value>}
    {"status": "error", "error": "<ExceptionType: message, or why not run>"}
"""

import asyncio
import contextlib
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
import time
import traceback
import types

TOOL_FILENAME = "<tool source>"
TOOL_MODULE = "__tool__"  # not "__main__": an `if __name__ == "__main__":` block stays idle
_PARENT_POLL_SECONDS = 0.5


def main():
    result_fd = int(sys.argv[1])
    # Processes the tool starts must not inherit the result channel.
    os.set_inheritable(result_fd, False)
    request = json.loads(sys.stdin.buffer.read())
    _watch_parent(request["parent_pid"])
    _limit_memory(request["memory_bytes"])
    outcome = _run(request)
    try:
        payload = json.dumps(outcome, allow_nan=False)
    except MemoryError:
        payload = json.dumps(_memory_error(request))
    except (TypeError, ValueError, RecursionError):
        outcome["func_return"] = _text(outcome["func_return"])
        payload = json.dumps(outcome, allow_nan=False)
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(payload)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    # Threads the tool left running must not keep the process (and the call) alive.
    os._exit(0)


def _watch_parent(parent_pid):
    """Kill this process group if the server dies, so no orphaned tool keeps running.

    A tool call may be re-run after a server crash; an orphan of the first run must
    not race the second. (PR_SET_PDEATHSIG would be simpler, but it fires when the
    *thread* that started us exits, and trio starts processes from worker threads.)
    """

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.stack_size(256 * 1024)
    threading.Thread(target=watch, name="kelpie-parent-watch", daemon=True).start()
    threading.stack_size(0)


def _limit_memory(memory_bytes):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    # Soft and hard alike, so the tool cannot raise its own limit.
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


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
        return _error(f"{type(e).__name__}: {_text(e)}")
    return {"status": "success", "func_return": value}


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
    return _error(f"memory limit exceeded ({request['memory_mb']} MB)")


def _error(message):
    return {"status": "error", "error": message}


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
