"""Tools with pip requirements run in a cached venv per requirement set, installed from
the index pip is configured to reach; never in the server's environment.

The first test installs a small wheel (tabulate) through pip: about a second here."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import trio

from kelpie_trio.tools.envs import ToolEnvs
from kelpie_trio.tools.sandbox import ToolResult, ToolSandbox, default_python

USES_TABULATE = """
import tabulate

def tool() -> str:
    return tabulate.tabulate([[1, 2]], tablefmt="plain")
"""


def sandbox(root: Path) -> ToolSandbox:
    return ToolSandbox(timeout=10.0, envs=ToolEnvs(root, default_python()))


async def test_requirements_are_installed_once_into_a_cached_venv(tmp_path: Path) -> None:
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("tabulate")  # not the server's: the test means it
    tools = sandbox(tmp_path / "envs")
    first = await tools.run(USES_TABULATE, "tool", {}, pip_requirements=[{"name": "tabulate"}])
    assert first == ToolResult("success", func_return="1  2")
    [made] = await trio.Path(tmp_path / "envs").iterdir()
    assert (await (made / "ready").read_text()) == "tabulate\n"
    # The same set again: the same venv, nothing installed anew.
    again = await tools.run(USES_TABULATE, "tool", {}, pip_requirements=[{"name": "tabulate"}])
    assert again == first
    assert list(await trio.Path(tmp_path / "envs").iterdir()) == [made]
    # And still not in the server's environment.
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("tabulate")


async def test_a_requirement_that_cannot_be_installed_is_refused(tmp_path: Path) -> None:
    result = await sandbox(tmp_path / "envs").run(
        "def tool() -> int:\n    return 1\n",
        "tool",
        {},
        pip_requirements=[{"name": "kelpie-surely-not-a-package", "version": "1.0"}],
    )
    assert result.status == "error"
    assert result.error.startswith(
        "the tool's pip requirements cannot be provided: could not install "
        "kelpie-surely-not-a-package==1.0: "
    )
    assert list(await trio.Path(tmp_path / "envs").iterdir()) == []  # no half env kept


@pytest.mark.parametrize(
    "requirement",
    [{"name": "--index-url=http://evil.example/simple"}, {"name": "six", "version": "1; rm -rf"}],
)
async def test_a_requirement_that_is_not_a_package_never_reaches_pip(
    tmp_path: Path, requirement: dict[str, str]
) -> None:
    result = await sandbox(tmp_path / "envs").run(
        "def tool() -> int:\n    return 1\n", "tool", {}, pip_requirements=[requirement]
    )
    assert result.status == "error"
    assert result.error.startswith("the tool's pip requirements cannot be provided: pip ")
    assert not await trio.Path(tmp_path / "envs").exists()
