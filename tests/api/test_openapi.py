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


def _param(operation: dict, name: str) -> dict:
    return next(p for p in operation["parameters"] if p["name"] == name)


async def test_parameters_say_what_the_server_checks(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    retrieve = spec["paths"]["/v1/agents/{agent_id}"]["get"]
    assert _param(retrieve, "agent_id")["schema"]["pattern"] == f"^agent-{uuid}$"
    listing = spec["paths"]["/v1/blocks/"]["get"]
    assert _param(listing, "limit")["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert _param(listing, "order")["schema"]["enum"] == ["asc", "desc"]
    assert _param(listing, "after")["schema"]["pattern"] == f"^block-{uuid}$"
    agents = spec["paths"]["/v1/agents/"]["get"]
    assert _param(agents, "match_all_tags")["schema"] == {"type": "boolean"}
    messages = spec["paths"]["/v1/agents/{agent_id}/messages"]["get"]
    assert _param(messages, "include_err")["schema"] == {"type": "boolean"}
    search = spec["paths"]["/v1/agents/{agent_id}/archival-memory/search"]["get"]
    assert _param(search, "query")["required"] is True


async def test_bodies_and_media_types_are_as_served(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    paths = spec["paths"]
    assert paths["/v1/agents/"]["post"]["requestBody"]["required"] is True
    cancel = paths["/v1/agents/{agent_id}/messages/cancel"]["post"]
    assert cancel["requestBody"]["required"] is False
    patch = paths["/v1/blocks/{block_id}"]["patch"]["requestBody"]["content"]
    ref = patch["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "required" not in spec["components"]["schemas"][ref]  # only the fields that change
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert not any(path.startswith("/internal/") for path in paths)
    health = spec["components"]["schemas"]["Health"]
    assert set(health["required"]) == {"status", "version", "kelpie_trio_version"}
