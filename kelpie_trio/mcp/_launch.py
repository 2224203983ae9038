"""Starts a stdio MCP server so that it never outlives the node (Linux).

    python -I .../kelpie_trio/mcp/_launch.py COMMAND [ARGS...]

The node runs this file instead of the server's command (the `mcp` SDK's stdio_client
starts it, in a new session and process group), and this process becomes the server: it
arms a watcher, then execs COMMAND, keeping its pid, pipes and group. The watcher is a
small process in the same group, not the server's child, that holds pidfds of the node
and of the server and waits for either to end:

- the node ends (even SIGKILLed, when nothing in it can run): the watcher kills the
  server's whole process group, itself included;
- the server ends (the SDK stopped it, or it exited): the watcher kills what is left of
  the group (what the server started and left behind), itself included.

Why not prctl(PR_SET_PDEATHSIG): the kernel sends that signal when the *thread* that
forked the child ends, and trio forks from a worker thread that it retires after 10 s
idle, so every server would be killed ten seconds after it started. A pidfd names the
node process, whatever thread started us.

Standard library only, run with -I: nothing of the node's package is imported, so the
launch costs a bare interpreter's start. Where pidfds are missing (kernels before 5.3)
it execs the command without a watcher (the stdin EOF of MCP's stdio transport is then
the only way the server learns the node is gone).
"""

import contextlib
import os
import select
import signal
import sys

NOT_FOUND = 127  # a shell's status for a command it cannot run


def main(argv):
    if not argv:
        sys.stderr.write("usage: _launch.py COMMAND [ARGS...]\n")
        return 2
    node = os.getppid()
    node_fd = _pidfd(node)
    if node_fd is not None and os.getppid() != node:
        return 1  # the node died before its pidfd was open: the pid may be another's now
    if node_fd is not None:
        _arm_watcher(node_fd)
        os.close(node_fd)
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        sys.stderr.write(f"cannot run {argv[0]!r}: {error.strerror}\n")
    return NOT_FOUND


def _pidfd(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _arm_watcher(node_fd):
    """Fork the watcher (twice, so that it is not the server's child: a server reaping
    its children never meets it) and return once it holds both pidfds."""
    server = os.getpid()
    server_fd = _pidfd(server)
    if server_fd is None:
        return
    first = os.fork()
    if first == 0:
        try:
            if os.fork() == 0:
                _watch(node_fd, server_fd, server)
        finally:
            os._exit(0)
    os.close(server_fd)
    os.waitpid(first, 0)


def _watch(node_fd, server_fd, server):
    """The watcher: never returns."""
    try:
        # The MCP pipes are the server's: holding them would keep the node from seeing
        # the server's stdout end when it exits.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        # The SDK's stop sends SIGTERM to the group, then SIGKILL: the watcher stays until
        # the server is gone, so a server that ignores SIGTERM is still followed.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        poller = select.poll()
        poller.register(node_fd, select.POLLIN)
        poller.register(server_fd, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        # The group is the server's only when stdio_client made the server a group
        # leader; otherwise it could be the node's own, so only the server is killed.
        if os.getpgid(0) == server:
            os.killpg(server, signal.SIGKILL)  # the server, its leftovers and this process
        else:
            # By pidfd: the server's pid may already be another process's.
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(server_fd, signal.SIGKILL)
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
