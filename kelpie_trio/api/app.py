"""The Quart-Trio application. Thin: parse the request, call the service, render JSON.

Only the health route lives here so far; the Letta resource routes are their own issue.
"""

from __future__ import annotations

from typing import Any

from quart_trio import QuartTrio

from kelpie_trio import __version__
from kelpie_trio.storage import Store

__all__ = ["create_app"]


def create_app(store: Store) -> QuartTrio:
    app = QuartTrio("kelpie_trio")
    app.config["KELPIE_STORE"] = store

    # Letta's SDK calls /v1/health/ with the slash; serve both forms without a redirect.
    @app.get("/v1/health/")
    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
