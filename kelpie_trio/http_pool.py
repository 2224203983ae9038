"""httpx clients for many concurrent calls: the web tools, and LLM providers behind a proxy
(llm/origin.py's `HttpxOrigin`; without one, providers and nodes speak through `LeanOrigin`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx

__all__ = ["CALLS_PER_CLIENT", "ClientPool"]

# Concurrent calls one httpx client carries. httpcore 1.0.9's pool walks all its connections
# for each connection on every request and release (`_assign_requests_to_connections`), and
# closes idle connections once it holds more than max_keepalive in all: at 200 concurrent calls
# one client burnt 16-25 ms of CPU per call in that bookkeeping (bench/RESULTS.md). Small pools,
# added as the load needs them, keep the bookkeeping constant per call.
CALLS_PER_CLIENT = 8


class _Shard:
    __slots__ = ("client", "in_flight")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.in_flight = 0


class ClientPool:
    """httpx clients of at most `CALLS_PER_CLIENT` connections each; a call takes the least
    busy one, or a new one when all are full. Clients are only closed with the pool."""

    def __init__(
        self,
        make_transport: Callable[[httpx.Limits, Any], httpx.AsyncBaseTransport] | None = None,
        **client_kwargs: Any,
    ) -> None:
        limits = httpx.Limits(
            max_connections=CALLS_PER_CLIENT, max_keepalive_connections=CALLS_PER_CLIENT
        )
        # One TLS context for all of them: httpx builds one per client otherwise, loading the
        # CA bundle each time (~25 ms of CPU).
        verify = httpx.create_ssl_context()
        self._kwargs = {"limits": limits, "verify": verify, **client_kwargs}
        # A transport of the caller's, made with these limits and TLS context for each
        # client (the web tools' checks every address it connects to).
        self._make_transport = make_transport
        self._shards: list[_Shard] = []

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.AsyncClient]:
        shard = min(self._shards, key=lambda s: s.in_flight, default=None)
        if shard is None or shard.in_flight >= CALLS_PER_CLIENT:
            kwargs = dict(self._kwargs)
            if self._make_transport is not None:
                kwargs["transport"] = self._make_transport(kwargs["limits"], kwargs["verify"])
            shard = _Shard(httpx.AsyncClient(**kwargs))
            self._shards.append(shard)
        shard.in_flight += 1
        try:
            yield shard.client
        finally:
            shard.in_flight -= 1

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()
