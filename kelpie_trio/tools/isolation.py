"""Whether this host can isolate custom tools, and what the node does when it cannot.

Asked once at start-up by running a probe tool through the real sandbox (namespaces,
uid 65534, PID 1, no network): the answer is what a tool call would get, not a guess
from kernel settings. Where it fails (no user namespaces in a container, not Linux,
`KELPIE_TOOL_ISOLATION=off`), the operator's `KELPIE_TOOL_SANDBOX_FALLBACK` decides:
"refuse" (the default) answers every custom tool call with an error saying why;
"unisolated" runs them as before this boundary existed, as the server's user. Either
way the node logs it at start-up and /v1/health/ shows it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from kelpie_trio.tools.envs import ToolEnvs
from kelpie_trio.tools.sandbox import MAX_OUTPUT_BYTES, ToolResult, ToolSandbox, default_python

__all__ = ["SandboxStatus", "ToolSettings", "prepare", "probe", "refused"]

Fallback = Literal["refuse", "unisolated"]

_PROBE = """
import os

def probe() -> dict:
    return {"uid": os.getuid(), "pid": os.getpid()}
"""
_PROBE_TIMEOUT = 20.0  # a loaded host at start-up; the probe itself takes milliseconds


@attrs.frozen(kw_only=True)
class ToolSettings:
    """The operator's settings for custom tools (KELPIE_TOOL_* variables)."""

    timeout: float = 30.0
    cpu_seconds: int = 30
    memory_mb: int = 512
    max_processes: int = 64
    max_open_files: int = 256
    scratch_mb: int = 64
    max_output_bytes: int = MAX_OUTPUT_BYTES
    network: bool = False
    isolation: Literal["auto", "off"] = "auto"
    fallback: Fallback = "refuse"
    python: str | None = None  # default: the system's Python
    pip: Literal["install", "refuse"] = "install"  # tools' pip requirements: cached venvs

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ToolSettings:
        values: dict[str, Any] = {}
        numbers = {
            "KELPIE_TOOL_TIMEOUT": ("timeout", float),
            "KELPIE_TOOL_CPU_SECONDS": ("cpu_seconds", int),
            "KELPIE_TOOL_MEMORY_MB": ("memory_mb", int),
            "KELPIE_TOOL_MAX_PROCESSES": ("max_processes", int),
            "KELPIE_TOOL_MAX_OPEN_FILES": ("max_open_files", int),
            "KELPIE_TOOL_SCRATCH_MB": ("scratch_mb", int),
            "KELPIE_TOOL_MAX_OUTPUT_BYTES": ("max_output_bytes", int),
        }
        for name, (field, kind) in numbers.items():
            if env.get(name):
                values[field] = kind(env[name])
        if env.get("KELPIE_TOOL_NETWORK"):
            values["network"] = env["KELPIE_TOOL_NETWORK"].lower() in ("1", "true", "yes", "on")
        if env.get("KELPIE_TOOL_ISOLATION"):
            values["isolation"] = env["KELPIE_TOOL_ISOLATION"]
        if env.get("KELPIE_TOOL_SANDBOX_FALLBACK"):
            values["fallback"] = env["KELPIE_TOOL_SANDBOX_FALLBACK"]
        if env.get("KELPIE_TOOL_PYTHON"):
            values["python"] = env["KELPIE_TOOL_PYTHON"]
        if env.get("KELPIE_TOOL_PIP"):
            values["pip"] = env["KELPIE_TOOL_PIP"]
        settings = cls(**values)
        if settings.isolation not in ("auto", "off"):
            raise ValueError(
                f"KELPIE_TOOL_ISOLATION must be auto or off, not {settings.isolation!r}"
            )
        if settings.fallback not in ("refuse", "unisolated"):
            raise ValueError(
                "KELPIE_TOOL_SANDBOX_FALLBACK must be refuse or unisolated, "
                f"not {settings.fallback!r}"
            )
        if settings.pip not in ("install", "refuse"):
            raise ValueError(f"KELPIE_TOOL_PIP must be install or refuse, not {settings.pip!r}")
        settings.sandbox()  # the limits' own checks, at start-up rather than at a call
        return settings

    def sandbox(self, hidden: tuple[str, ...] = (), envs_root: Path | None = None) -> ToolSandbox:
        python = self.python or default_python()
        envs = None
        if envs_root is not None and self.pip == "install":
            envs = ToolEnvs(envs_root, python)
        return ToolSandbox(
            timeout=self.timeout,
            cpu_seconds=self.cpu_seconds,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
            max_open_files=self.max_open_files,
            scratch_mb=self.scratch_mb,
            max_output_bytes=self.max_output_bytes,
            network=self.network,
            hidden=hidden,
            python=python,
            envs=envs,
        )


@attrs.frozen
class SandboxStatus:
    """How this node runs custom tools, for the start-up log and /v1/health/."""

    custom_tools: Literal["isolated", "unisolated", "refused"]
    reason: str | None = None  # why namespaces are unavailable, when they are
    network: bool = False
    seccomp: bool = False

    def details(self) -> dict[str, Any]:
        return {
            "custom_tools": self.custom_tools,
            "isolation": "namespaces" if self.custom_tools == "isolated" else "none",
            "network": self.network if self.custom_tools == "isolated" else None,
            "seccomp": self.seccomp if self.custom_tools == "isolated" else None,
            "reason": self.reason,
        }

    def message(self) -> str:
        if self.custom_tools == "isolated":
            net = "with network" if self.network else "no network"
            sc = "seccomp" if self.seccomp else "no seccomp filter on this architecture"
            return f"custom tools run isolated (user/mount/PID/net/IPC/UTS namespaces, {net}, {sc})"
        if self.custom_tools == "unisolated":
            return (
                f"WARNING: custom tools run UNISOLATED, as the server's user "
                f"(KELPIE_TOOL_SANDBOX_FALLBACK=unisolated): {self.reason}"
            )
        return (
            f"custom tools are refused: {self.reason}; set "
            "KELPIE_TOOL_SANDBOX_FALLBACK=unisolated to run them without isolation"
        )


async def probe(sandbox: ToolSandbox) -> str | None:
    """None when this host isolates tools as `sandbox` would; else why not."""
    if not sys.platform.startswith("linux"):
        return f"namespaces are a Linux feature; this host is {sys.platform}"
    trial = attrs.evolve(sandbox, isolated=True, timeout=max(sandbox.timeout, _PROBE_TIMEOUT))
    result = await trial.run(_PROBE, "probe", {})
    if result.status == "success" and result.func_return == {"uid": 65534, "pid": 1}:
        return None
    if result.status == "success":
        return f"the probe tool ran but not isolated: {result.func_return!r}"
    return result.error or "the probe tool failed"


async def prepare(
    settings: ToolSettings, hidden: tuple[str, ...] = (), envs_root: Path | None = None
) -> tuple[ToolSandbox | None, SandboxStatus]:
    """The sandbox this node runs custom tools in (None: refuse them), and why."""
    sandbox = settings.sandbox(hidden, envs_root)
    if settings.isolation == "off":
        reason: str | None = "isolation is turned off (KELPIE_TOOL_ISOLATION=off)"
    else:
        reason = await probe(sandbox)
    if reason is None:
        from kelpie_trio.tools._jail import seccomp_supported

        return sandbox, SandboxStatus(
            "isolated", network=sandbox.network, seccomp=sandbox.seccomp and seccomp_supported()
        )
    if settings.fallback == "unisolated":
        return attrs.evolve(sandbox, isolated=False), SandboxStatus("unisolated", reason)
    return None, SandboxStatus("refused", reason)


def refused(status: SandboxStatus) -> ToolResult:
    """The result of a custom tool call on a node that refuses them."""
    return ToolResult(
        "error",
        error=(
            f"custom tools are refused on this server: {status.reason}; the operator may set "
            "KELPIE_TOOL_SANDBOX_FALLBACK=unisolated to run them without isolation"
        ),
    )
