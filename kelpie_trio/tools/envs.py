"""Cached Python environments for tools that declare pip requirements.

One venv per requirement set (and interpreter), under `root`, made the first time a
call needs it and reused after: `python -m venv --without-pip` from the tools' Python,
then the server's own pip, pointed at that venv (`pip --python`), installs the pinned
requirements from whatever index pip is configured to reach (pip.conf, PIP_* variables:
an offline mirror, a wheelhouse or PyPI), wheels only, so no package's build code runs
in the server. Nothing is ever installed into the server's environment. A set that
cannot be installed (unknown package, no wheel, no index) is refused with pip's last
words, and not cached: the next call tries again.

A venv is made in a temporary directory beside its final place and renamed there when
complete, so a crash mid-install leaves no half environment in use. The sandbox binds
the venv (read-only) into the tool's view; the rest of `root` stays out of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
import trio

__all__ = ["EnvError", "ToolEnvs"]

# Names and versions as PEP 508/440 spell them; anything else (an option, a URL, a path)
# never reaches pip's command line.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!*_-]*")
# What pip may see of the server's environment: where to look and how to get there.
_PIP_ENV = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE",
                      "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
                      "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"})  # fmt: skip
_KEEP_OUTPUT = 600  # characters of pip's output quoted in a refusal


class EnvError(Exception):
    """The requirements cannot be provided; the message says why."""


@attrs.define(eq=False)
class ToolEnvs:
    root: Path
    python: str  # the interpreter each venv is made from
    install_timeout: float = 300.0
    _locks: dict[str, trio.Lock] = attrs.Factory(dict)

    def specs(self, requirements: list[dict[str, str | None]]) -> list[str]:
        specs = []
        for requirement in requirements:
            name, version = requirement["name"] or "", requirement.get("version")
            if not _NAME.fullmatch(name):
                raise EnvError(f"pip requirement {name!r} is not a package name")
            if version is not None:
                version = version.removeprefix("==").strip()
                if not _VERSION.fullmatch(version):
                    raise EnvError(f"pip requirement {name!r} has a malformed version {version!r}")
            specs.append(f"{name}=={version}" if version else name)
        return sorted(set(specs), key=str.lower)

    async def python_for(self, requirements: list[dict[str, str | None]]) -> str:
        """The Python of the venv holding `requirements`, made if need be."""
        specs = self.specs(requirements)
        key = hashlib.sha256("\n".join([self.python, *specs]).encode()).hexdigest()[:24]
        final = self.root / key
        python = final / "bin" / "python"
        if await trio.Path(final / "ready").exists():
            return str(python)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:  # one install per set at a time; later callers reuse it
            if not await trio.Path(final / "ready").exists():
                await self._make(final, specs)
        return str(python)

    async def _make(self, final: Path, specs: list[str]) -> None:
        await trio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        work = Path(await trio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix=".making-", dir=self.root)))  # fmt: skip
        try:
            await self._run([self.python, "-m", "venv", "--without-pip", str(work)], specs)
            await self._run(
                [sys.executable, "-m", "pip", "--python", str(work / "bin" / "python"),
                 "install", "--only-binary=:all:", "--no-input", "--disable-pip-version-check",
                 "--no-warn-script-location", "--quiet", *specs],
                specs,
            )  # fmt: skip
            await trio.Path(work / "ready").write_text("\n".join(specs) + "\n")
            # mkdtemp made it private; the tool reads it as the sandbox's own user.
            await trio.Path(work).chmod(0o755)
            await trio.to_thread.run_sync(os.rename, work, final)
        finally:
            if await trio.Path(work).exists():
                await trio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))

    async def _run(self, command: list[str], specs: list[str]) -> None:
        shown = ", ".join(specs)
        env = {
            k: v for k, v in os.environ.items() if k in _PIP_ENV or k.startswith(("PIP_", "XDG_"))
        }
        try:
            with trio.fail_after(self.install_timeout):
                done = await trio.run_process(
                    command, capture_stdout=True, stderr=subprocess.STDOUT, check=False, env=env
                )
        except trio.TooSlowError:
            raise EnvError(
                f"installing {shown} took longer than {self.install_timeout:g} s"
            ) from None
        except OSError as e:
            raise EnvError(f"could not install {shown}: {e}") from None
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace").strip()[-_KEEP_OUTPUT:]
            raise EnvError(f"could not install {shown}: {output}")
