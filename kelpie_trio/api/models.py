"""/v1/models/: the chat and embedding models this server offers (simulated ones say so)."""

from __future__ import annotations

from quart import Blueprint, Response

from kelpie_trio.api.common import json_response, service
from kelpie_trio.api.spec import documented

models = Blueprint("models", __name__)


@models.get("/v1/models/")
@models.get("/v1/models")
@documented("List chat models (simulated ones say so)")
async def list_models() -> Response:
    return json_response(service().catalog.list_models())


@models.get("/v1/models/embedding")
@models.get("/v1/models/embedding/")
@documented("List embedding models")
async def list_embedding_models() -> Response:
    return json_response(service().catalog.list_embedding_models())
