"""Watching a method from a test: when each call to it began, on trio's clock."""

from __future__ import annotations

from typing import Any

import trio


def call_times(owner: Any, name: str) -> list[float]:
    """Replace `owner.name` (an async method) by one that notes trio's time at each call,
    then awaits the original; returns the list it fills (its length: the calls)."""
    original = getattr(owner, name)
    times: list[float] = []

    async def noted(*args: Any, **kwargs: Any) -> Any:
        times.append(trio.current_time())
        return await original(*args, **kwargs)

    setattr(owner, name, noted)
    return times
