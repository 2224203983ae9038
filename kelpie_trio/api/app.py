"""The Quart-Trio application. Thin: parse the request, call the service, render JSON.

So far: health, metrics, and the internal route by which one node hands a
message to the node that owns the agent. The Letta resource routes are their
own issue.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio

from kelpie_trio import __version__
from kelpie_trio.nursery.dispatcher import Dispatcher
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.nursery.transport import serve_forwarded
from kelpie_trio.storage import Store

__all__ = ["create_app"]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def create_app(
    store: Store,
    dispatcher: Dispatcher | None = None,
    metrics: RuntimeMetrics | None = None,
    *,
    cluster_token: str | None = None,
) -> QuartTrio:
    app = QuartTrio("kelpie_trio")
    app.config["KELPIE_STORE"] = store

    # Letta's SDK calls /v1/health/ with the slash; serve both forms without a redirect.
    @app.get("/v1/health/")
    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        body = metrics.render() if metrics is not None else b""
        return Response(body, content_type=RuntimeMetrics.content_type)

    @app.post("/internal/v1/agents/<agent_id>/invoke")
    async def invoke_forwarded(agent_id: str) -> Response:
        """A message another node forwarded here, because this node holds the agent's lease."""
        if dispatcher is None:
            return _json({"detail": "this node runs no agents"}, 503)
        if cluster_token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {cluster_token}".encode()):
                return _json({"detail": "Unauthorized"}, 401)
        try:
            body = orjson.loads(await request.get_data())
            message = body["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"detail": "expected a JSON object with a 'message'"}, 422)
        wire = await serve_forwarded(dispatcher, {"agent_id": agent_id, "message": message})
        return _json(wire)

    return app
