"""What a scenario mixin (agents_messaging.py, approvals.py, ...) uses of bench/scenarios.py's
Runner, declared once for type checkers: the mixins are only ever Runner's bases."""

from __future__ import annotations

import json
from typing import Any

from bench.http1 import Connection

__all__ = ["RunnerPart"]


class RunnerPart:
    options: Any
    progress: Any
    samples: Any
    _provider: Any
    _server: Any
    _data_dir: Any
    _url: Any
    _create: Any
    _load: Any
    _measured: Any
    _floor: Any
    _finish: Any
    _start_profiler: Any
    _stop_profiler: Any

    async def _create_each(self, url: str, bodies: list[dict[str, Any]], what: str) -> list[str]:
        """Create one agent per body (`POST /v1/agents/`), in order; their ids."""
        advance = self.progress(what, len(bodies))
        conn = Connection(url, headers=self.options.headers)
        made = []
        try:
            for body in bodies:
                reply = await conn.request("POST", "/v1/agents/", json.dumps(body).encode())
                if reply.status not in (200, 201):
                    raise RuntimeError(f"{what} failed: {reply.status} {reply.body!r}")
                made.append(json.loads(reply.body)["id"])
                advance()
        finally:
            await conn.aclose()
        return made
