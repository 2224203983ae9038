"""Whether the host can isolate tools, asked at start-up, and the operator's fallback."""

from __future__ import annotations

import pytest

from kelpie_trio.config import ServerConfig
from kelpie_trio.tools.isolation import ToolSettings, prepare, probe, refused


async def test_this_host_isolates_tools() -> None:
    sandbox, status = await prepare(ToolSettings(), hidden=("/data",))
    assert sandbox is not None and sandbox.isolated and sandbox.hidden == ("/data",)
    assert status.details() == {
        "custom_tools": "isolated",
        "isolation": "namespaces",
        "network": False,
        "seccomp": True,
        "reason": None,
    }
    assert status.message().startswith("custom tools run isolated")


async def test_without_namespaces_tools_are_refused_by_default() -> None:
    sandbox, status = await prepare(ToolSettings(isolation="off"))
    assert sandbox is None
    assert status.custom_tools == "refused"
    result = refused(status)
    assert result.status == "error"
    assert result.error == (
        "custom tools are refused on this server: isolation is turned off "
        "(KELPIE_TOOL_ISOLATION=off); the operator may set "
        "KELPIE_TOOL_SANDBOX_FALLBACK=unisolated to run them without isolation"
    )


async def test_the_operator_may_choose_unisolated_tools() -> None:
    sandbox, status = await prepare(ToolSettings(isolation="off", fallback="unisolated"))
    assert sandbox is not None and not sandbox.isolated
    assert status.custom_tools == "unisolated"
    assert status.message().startswith("WARNING: custom tools run UNISOLATED")


async def test_a_failing_probe_says_why() -> None:
    # A sandbox whose Python cannot start stands for a host where the jail cannot be built.
    reason = await probe(ToolSettings(python="/nonexistent/python3").sandbox())
    assert reason is not None
    assert reason.startswith("could not start the sandbox's Python '/nonexistent/python3'")
    _, status = await prepare(ToolSettings(python="/nonexistent/python3"))
    assert (status.custom_tools, status.reason) == ("refused", reason)


def test_settings_come_from_the_environment() -> None:
    config = ServerConfig.from_env(
        {
            "KELPIE_TOOL_TIMEOUT": "5",
            "KELPIE_TOOL_CPU_SECONDS": "3",
            "KELPIE_TOOL_MEMORY_MB": "128",
            "KELPIE_TOOL_MAX_PROCESSES": "8",
            "KELPIE_TOOL_MAX_OPEN_FILES": "32",
            "KELPIE_TOOL_SCRATCH_MB": "4",
            "KELPIE_TOOL_MAX_OUTPUT_BYTES": "1000",
            "KELPIE_TOOL_NETWORK": "on",
            "KELPIE_TOOL_ISOLATION": "off",
            "KELPIE_TOOL_SANDBOX_FALLBACK": "unisolated",
        }
    )
    assert config.tools == ToolSettings(
        timeout=5.0, cpu_seconds=3, memory_mb=128, max_processes=8, max_open_files=32,
        scratch_mb=4, max_output_bytes=1000, network=True, isolation="off",
        fallback="unisolated",
    )  # fmt: skip
    sandbox = config.tools.sandbox()
    assert (sandbox.timeout, sandbox.max_processes, sandbox.network) == (5.0, 8, True)
    assert ServerConfig.from_env({}).tools == ToolSettings()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("KELPIE_TOOL_SANDBOX_FALLBACK", "maybe", "must be refuse or unisolated"),
        ("KELPIE_TOOL_ISOLATION", "sometimes", "must be auto or off"),
        ("KELPIE_TOOL_MEMORY_MB", "0", "memory_mb must be a positive whole number"),
    ],
)
def test_bad_settings_stop_the_start(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ServerConfig.from_env({name: value})
