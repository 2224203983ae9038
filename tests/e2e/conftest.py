from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import install_js_clients
from tests.e2e.scripted_provider import ScriptedProvider, scripted


@pytest.fixture(scope="session")
def js_clients() -> Path:
    """Letta's npm clients installed from the lock file, once a session (skips without node)."""
    return install_js_clients()


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    async with scripted() as fake:
        yield fake
