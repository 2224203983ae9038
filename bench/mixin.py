"""What a scenario mixin (agents_messaging.py, approvals.py, ...) uses of bench/scenarios.py's
Runner, declared once for type checkers: the mixins are only ever Runner's bases."""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from bench.http1 import Connection

__all__ = ["RunnerPart"]

# After a scenario's last unit of work the server may still be finishing (the indexer
# embedding chunks, runs being stored): `settle` waits until it spends under _QUIET_MS in
# _QUIET_S, or _SETTLE_MAX_S whatever it does.
_QUIET_S = 0.5
_QUIET_MS = 20.0  # psutil counts 10 ms ticks: at most one
_SETTLE_MAX_S = 30.0


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

    async def _settle(self, server: Any) -> float | None:
        """Seconds until the server went quiet (see _QUIET_MS); None without its process
        to watch."""
        if server is None:
            return None
        started = time.perf_counter()
        last = server.usage()
        while time.perf_counter() - started < _SETTLE_MAX_S:
            await trio.sleep(_QUIET_S)
            now = server.usage()
            if (now.cpu - last.cpu) * 1000 < _QUIET_MS:
                break
            last = now
        return round(time.perf_counter() - started, 2)
