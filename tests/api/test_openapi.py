"""/openapi.json: every route, with schemas generated from the models."""

from __future__ import annotations

from quart.testing import QuartClient


async def test_openapi_lists_every_route_with_its_methods(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path, method in [
        ("/v1/blocks/", "post"),
        ("/v1/blocks/{block_id}", "patch"),
        ("/v1/agents/", "get"),
        ("/v1/agents/{agent_id}/core-memory/blocks/{label}", "get"),
        ("/v1/health/", "get"),
    ]:
        assert method in paths[path], (path, method)
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_schemas_come_from_the_models(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    create = spec["components"]["schemas"]["CreateBlock"]
    assert set(create["required"]) == {"value", "label"}
    assert create["properties"]["limit"] == {"type": "integer", "default": 100000}
    block = spec["components"]["schemas"]["Block"]
    assert "created_at" not in block["properties"]  # internal, never rendered
    listing = spec["paths"]["/v1/blocks/"]["get"]["responses"]["200"]["content"]
    assert listing["application/json"]["schema"]["type"] == "array"
