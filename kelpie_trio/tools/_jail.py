"""Namespaces around one tool call: the boundary the runner steps into before the tool runs.

_runner.py imports this file (standard library only, like the runner) and calls
`enter(spec)` after reading its request. `enter` returns in a process that:

- is PID 1 of a new PID namespace, so when it exits the kernel kills every process
  the tool started (a `setsid`, a double fork: nothing outlives the call);
- has a mount namespace whose root is a tmpfs holding only read-only binds of the
  system's /usr (and the /bin, /lib... beside it), the tool's Python (its prefix and
  base prefix), a few files of /etc (the loader cache, time zone, TLS roots, name
  resolution; a passwd and group of our own), /dev/null and the random devices, a
  /proc of its own PID namespace, and a writable /tmp of bounded size (tmpfs);
  the host's root is detached, so no path (nor /proc/<pid>/root) leads back to it;
- has no network (a network namespace with no interfaces) unless `spec["network"]`;
  IPC and UTS namespaces of its own;
- runs as uid/gid 65534 in a user namespace nested inside the one that built the
  mounts, with no capabilities, PR_SET_NO_NEW_PRIVS, and (on x86_64) a seccomp
  filter refusing ptrace, mount, namespace, keyring, BPF, module and similar calls.

The parent left outside (the process the server started) waits for PID 1 and then
writes a trailer to the result channel saying how it ended, with its CPU time, so
the server can tell which limit ended a call that wrote no result.

Works unprivileged wherever the kernel allows user namespaces; as root it is the same
code path. Any step that fails raises `JailError` naming the step.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import platform
import signal
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SANDBOX_UID = 65534
SANDBOX_GID = 65534

# The system's own trees, bound read-only (symlinks such as /bin -> usr/bin are copied).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
# /etc files a Python program commonly needs; never shadow, never the host's passwd.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "localtime",
    "timezone",
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "mime.types",
)
ETC_DIRS = ("ssl", "ca-certificates", "pki")
DEVICES = ("null", "zero", "full", "random", "urandom")
PASSWD = "root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:65534:65534:tool:/tmp:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nsandbox:x:65534:\n"


class JailError(Exception):
    """A step of building the boundary failed; the message names it."""


_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _check(result, step):
    if result != 0:
        err = ctypes.get_errno()
        raise JailError(f"{step}: {os.strerror(err)} (errno {errno.errorcode.get(err, err)})")


def _b(path):
    return None if path is None else os.fsencode(path)


def mount(source, target, fstype, flags, data=None):
    _check(
        _c().mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount {fstype or source} on {target}",
    )


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def enter(spec, result_fd):
    """Build the boundary; return in PID 1 of the new namespaces, as the sandbox user.

    Three processes: this one stays in the host's namespaces and writes the new user
    namespace's id maps (a root server maps uid 65534 as well as 0, so the tool is not
    kernel uid 0, which RLIMIT_NPROC would exempt); its child makes the namespaces and
    waits, outside the new PID namespace, for PID 1, its own child. Neither of the
    first two ever returns from here.
    """
    uid, gid = os.geteuid(), os.getegid()
    # Paths to bind are worked out before the fork, in this interpreter (the tool's).
    binds = _python_paths()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child:
        os.close(ready_w)
        os.close(go_r)
        _map_from_outside(child, uid, gid, ready_r, go_w, result_fd)  # never returns
    os.close(ready_r)
    os.close(go_w)
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not spec.get("network"):
        flags |= CLONE_NEWNET
    try:
        _check(_c().unshare(flags), "unshare (are user namespaces available?)")
    except JailError as e:
        _report_setup_failure(result_fd, e)
        os._exit(71)
    os.write(ready_w, b"1")
    mapped = os.read(go_r, 1)  # b"2": uid 65534 is mapped too; b"1": only 0; b"": failed
    if not mapped:
        os._exit(71)
    os.close(ready_w)
    os.close(go_r)
    pid = os.fork()
    if pid:
        _wait_outside(pid, result_fd)  # never returns
    try:
        # Whichever way the processes outside die (the server kills their group), PID 1
        # follows; the lifeline covers the instant before this line.
        _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _build_root(spec["root"], binds, spec["scratch_bytes"], spec.get("hide", ()))
        host = b"sandbox"
        _check(_c().sethostname(host, len(host)), "sethostname")
        _become_sandbox_user(SANDBOX_UID if mapped == b"2" else 0)
        _check(_c().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        if spec.get("seccomp", True):
            install_seccomp()
    except BaseException as e:
        _report_setup_failure(result_fd, e)
        os._exit(71)


def _map_from_outside(child, uid, gid, ready_r, go_w, result_fd):
    """In the host's namespaces: map the child's new user namespace, then wait for it."""
    if os.read(ready_r, 1):
        proc = f"/proc/{child}"
        try:
            _write(f"{proc}/setgroups", "deny")
            mapped = b"1"
            if uid == 0:
                try:  # root may map a second, unprivileged id for the tool to become
                    _write(f"{proc}/uid_map", f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1")
                    _write(f"{proc}/gid_map", f"0 0 1\n{SANDBOX_GID} {SANDBOX_GID} 1")
                    mapped = b"2"
                except OSError:
                    pass
            if mapped == b"1":
                _write(f"{proc}/uid_map", f"0 {uid} 1")
                _write(f"{proc}/gid_map", f"0 {gid} 1")
            os.write(go_w, mapped)
        except OSError as e:
            _report_setup_failure(result_fd, JailError(f"map user ids: {e}"))
    os.close(go_w)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = 0
            break
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 70)


def _report_setup_failure(result_fd, e):
    message = str(e) if isinstance(e, JailError) else f"{type(e).__name__}: {e}"
    record = {"status": "error", "error": f"sandbox setup failed: {message}", "limit": None}
    with contextlib.suppress(OSError):
        os.write(result_fd, b"R" + json.dumps(record).encode() + b"\n")


def _wait_outside(pid, result_fd):
    """The outside parent: wait for PID 1 and say how it ended."""
    status = None
    usage = None
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    trailer = {"signal": None, "code": None, "cpu_seconds": None}
    if status is not None:
        if os.WIFSIGNALED(status):
            trailer["signal"] = os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            trailer["code"] = os.WEXITSTATUS(status)
        trailer["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    with contextlib.suppress(OSError):
        os.write(result_fd, b"X" + json.dumps(trailer).encode() + b"\n")
    os._exit(0)


def _python_paths():
    import sys

    paths = set()
    for path in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        if path:
            paths.add(os.path.realpath(path))
            paths.add(os.path.abspath(path))
    exe = os.path.realpath(sys.executable)
    paths.add(os.path.dirname(exe))
    paths.add(os.path.dirname(os.path.abspath(sys.executable)))
    # Ancestors first; paths inside another path in the set (or in a system tree) need no bind.
    kept = []
    for path in sorted(paths, key=len):
        if path == "/" or not os.path.isdir(path):
            continue
        inside = tuple(kept) + SYSTEM_PATHS
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in inside):
            continue
        kept.append(path)
    return kept


def _inside(root, path):
    return os.path.join(root, path.lstrip("/"))


def _mount_flags_of(path):
    """The flags the kernel locks on a bind made in a user namespace; a remount keeps them."""
    st = os.statvfs(path)
    flags = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if st.f_flag & st_flag:
            flags |= ms_flag
    return flags


def _bind_ro(source, target):
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _mount_flags_of(target))


def _mkdirs(path):
    os.makedirs(path, mode=0o755, exist_ok=True)


def _touch(path):
    _mkdirs(os.path.dirname(path))
    with open(path, "a"):
        pass


def _build_root(root, binds, scratch_bytes, hide):
    # Nothing done here may reach the host's mount table.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    # Scratch first: a Python kept under the host's /tmp is then bound on top of it.
    tmp = _inside(root, "/tmp")
    _mkdirs(tmp)
    mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_bytes},mode=1777")
    for path in SYSTEM_PATHS:
        target = _inside(root, path)
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            _mkdirs(target)
            _bind_ro(path, target)
    for path in binds:
        target = _inside(root, path)
        _mkdirs(target)
        _bind_ro(path, target)
    etc = _inside(root, "/etc")
    _mkdirs(etc)
    _write(os.path.join(etc, "passwd"), PASSWD)
    _write(os.path.join(etc, "group"), GROUP)
    _write(os.path.join(etc, "hostname"), "sandbox\n")
    for name in ETC_FILES:
        source = os.path.join("/etc", name)
        if os.path.isfile(source):  # follows links; a dangling one is skipped
            _touch(os.path.join(etc, name))
            _bind_ro(source, os.path.join(etc, name))
    for name in ETC_DIRS:
        source = os.path.join("/etc", name)
        if os.path.isdir(source):
            _mkdirs(os.path.join(etc, name))
            _bind_ro(source, os.path.join(etc, name))
    dev = _inside(root, "/dev")
    _mkdirs(dev)
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _touch(os.path.join(dev, name))
            mount(f"/dev/{name}", os.path.join(dev, name), None, MS_BIND)
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    for n, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{n}", os.path.join(dev, name))
    os.symlink("/tmp", os.path.join(dev, "shm"))  # POSIX shm and semaphores land in /tmp
    _mkdirs(_inside(root, "/proc"))
    mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _hide(root, hide, binds)
    os.chdir(root)
    _check(_c().syscall(155 if platform.machine() == "x86_64" else 41, b".", b"."), "pivot_root")
    # The host's root now sits under ours; detaching it leaves no path back.
    _check(_c().umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def _hide(root, hide, binds):
    """Paths the server keeps private (its data directory, its store) that fall inside a
    bound tree are covered: an empty read-only tmpfs over a directory, /dev/null over a file."""
    trees = [os.path.realpath(p) for p in binds] + [p for p in SYSTEM_PATHS if os.path.isdir(p)]
    for path in hide:
        real = os.path.realpath(path)
        if not any(real == t or real.startswith(t.rstrip("/") + "/") for t in trees):
            continue
        target = _inside(root, real)
        if os.path.isdir(real):
            mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")
        elif os.path.exists(real):
            mount("/dev/null", target, None, MS_BIND)


def _become_sandbox_user(outer_uid):
    """Step into a user namespace nested in the one that owns our mounts, as uid 65534:
    from there no mount can be changed and no capability is held. `outer_uid` is the id
    it maps to in the namespace around (65534 where a root server mapped it, else 0)."""
    if outer_uid != 0:
        # A user namespace may only map the ids of the process that writes its maps.
        os.setresgid(outer_uid, outer_uid, outer_uid)
        os.setresuid(outer_uid, outer_uid, outer_uid)
        # Changing uid made us undumpable, which would hand /proc/self to root.
        _check(_c().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "PR_SET_DUMPABLE")
    _check(_c().unshare(CLONE_NEWUSER), "unshare a nested user namespace")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{SANDBOX_UID} {outer_uid} 1")
    _write("/proc/self/gid_map", f"{SANDBOX_GID} {outer_uid} 1")
    # A new user namespace starts with a full bounding set: empty it while we may.
    for cap in range(64):
        if _c().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    os.setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    _drop_capabilities()


def _drop_capabilities():
    # A new user namespace grants every capability within it, whatever the uid; and
    # 65534 -> 65534 is no change of uid that would clear them.
    _c().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two empty {effective, permitted, inheritable} sets
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    _check(_c().capset(hbuf, dbuf), "drop capabilities")


# x86_64 syscall numbers refused by the filter.
_DENIED_X86_64 = {
    101: "ptrace",
    310: "process_vm_readv",
    311: "process_vm_writev",
    312: "kcmp",
    438: "pidfd_getfd",
    165: "mount",
    166: "umount2",
    155: "pivot_root",
    161: "chroot",
    272: "unshare",
    308: "setns",
    428: "open_tree",
    429: "move_mount",
    430: "fsopen",
    431: "fsconfig",
    432: "fsmount",
    433: "fspick",
    442: "mount_setattr",
    248: "add_key",
    249: "request_key",
    250: "keyctl",
    321: "bpf",
    298: "perf_event_open",
    323: "userfaultfd",
    246: "kexec_load",
    320: "kexec_file_load",
    175: "init_module",
    313: "finit_module",
    176: "delete_module",
    169: "reboot",
    167: "swapon",
    168: "swapoff",
    163: "acct",
    303: "name_to_handle_at",
    304: "open_by_handle_at",
    103: "syslog",
    425: "io_uring_setup",
    426: "io_uring_enter",
    427: "io_uring_register",
}
_X86_64_CLONE = 56
_X86_64_CLONE3 = 435
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_NS_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)


def seccomp_supported():
    return platform.machine() == "x86_64"


def _filter():
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (_BPF_JGE_K, 0, 1, _X32_BIT),  # the x32 ABI's numbers would slip past the table
        (_BPF_RET_K, 0, 0, eperm),
    ]
    for nr in sorted(_DENIED_X86_64):
        prog += [(_BPF_JEQ_K, 0, 1, nr), (_BPF_RET_K, 0, 0, eperm)]
    # clone3 hides its flags in memory; ENOSYS makes glibc fall back to clone.
    prog += [(_BPF_JEQ_K, 0, 1, _X86_64_CLONE3), (_BPF_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # clone may start threads and processes, not namespaces.
    prog += [
        (_BPF_JEQ_K, 0, 3, _X86_64_CLONE),
        (_BPF_LD_W_ABS, 0, 0, 16),  # low half of args[0], the flags
        (_BPF_JSET_K, 0, 1, _NS_FLAGS),
        (_BPF_RET_K, 0, 0, eperm),
        (_BPF_RET_K, 0, 0, _RET_ALLOW),
    ]
    return prog


def install_seccomp():
    if not seccomp_supported():
        return
    prog = _filter()
    raw = b"".join(struct.pack("HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    libc = _c()
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    try:
        _check(
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0),
            "seccomp",
        )
    finally:
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
