"""Agent files through the app's test client: export shape, round trips, tools, bad files."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from quart.testing import QuartClient
from werkzeug.datastructures import FileStorage

from kelpie_trio.api.app import create_app
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.storage import MemoryStore
from kelpie_trio.tools.base import BASE_TOOLS_BY_NAME, base_tool_id

OPENAPI = Path("/work/shared/letta/openapi-letta-0.16.8.json")

REQUIRED = {"agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers"}
FILE_ID = re.compile(r"^(agent|block|tool)-\d+$")


def source(name: str, doc: str = "Greet someone.") -> str:
    return (
        f"def {name}(who: str) -> str:\n"
        f'    """{doc}\n\n'
        "    Args:\n"
        "        who (str): Whom to greet.\n"
        '    """\n'
        "    return who\n"
    )


def upload(content: str | bytes | dict) -> dict[str, FileStorage]:
    """The multipart `file` field, as letta-client sends it."""
    raw = json.dumps(content).encode() if isinstance(content, dict) else content
    raw = raw.encode() if isinstance(raw, str) else raw
    return {"file": FileStorage(io.BytesIO(raw), filename="agent.af", name="file")}


@pytest.fixture
async def app_and_store(nursery: trio.Nursery) -> AsyncIterator[tuple[QuartClient, MemoryStore]]:
    store = MemoryStore()
    await nursery.start(store.run)
    catalog = ModelCatalog.from_config(CatalogConfig(openai_api_key="sk-test"))
    async with create_app(store, catalog=catalog).test_app() as test_app:
        yield test_app.test_client(), store


@pytest.fixture
def client(app_and_store: tuple[QuartClient, MemoryStore]) -> QuartClient:
    return app_and_store[0]


async def ok(response: Any) -> Any:
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def make_agent(client: QuartClient, **fields: Any) -> dict:
    await ok(await client.put("/v1/tools/", json={"source_code": source("greet")}))
    body = {
        "name": "ada",
        "system": "You are Ada.",
        "model": "openai/gpt-4o-mini",
        "memory_blocks": [
            {"label": "persona", "value": "curious", "limit": 5000},
            {"label": "human", "value": "Name: Grace", "description": "the user"},
        ],
        "tools": ["greet"],
        "tags": ["math", "history"],
        "metadata": {"team": "x"},
        **fields,
    }
    return await ok(await client.post("/v1/agents/", json=body))


async def export(client: QuartClient, agent_id: str) -> dict:
    response = await client.get(f"/v1/agents/{agent_id}/export")
    assert response.status_code == 200, await response.get_data()
    return json.loads(await response.get_data())


async def import_file(client: QuartClient, content: Any, **form: str) -> list[str]:
    response = await client.post("/v1/agents/import", files=upload(content), form=form or None)
    return (await ok(response))["agent_ids"]


async def agent(client: QuartClient, agent_id: str) -> dict:
    return await ok(await client.get(f"/v1/agents/{agent_id}"))


# -- export -------------------------------------------------------------------------------


async def test_export_is_an_agent_file_with_file_local_ids(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    assert exported.keys() >= REQUIRED | {"metadata", "created_at", "skills"}
    assert [exported[k] for k in ("groups", "files", "sources", "mcp_servers", "skills")] == [
        [],
        [],
        [],
        [],
        [],
    ]
    assert exported["metadata"]["revision_id"]
    (entry,) = exported["agents"]
    assert entry["id"] == "agent-0" and entry["name"] == "ada"
    # A new agent's history is empty; its window holds the system prompt, first, as Letta's.
    assert [m["role"] for m in entry["messages"]] == ["system"]
    assert entry["in_context_message_ids"] == ["message-0"]
    assert entry["passages"] == [] and exported["archives"] == []
    # Every reference is file-local and points into the file.
    blocks = {b["id"]: b for b in exported["blocks"]}
    tools = {t["id"]: t for t in exported["tools"]}
    assert all(FILE_ID.match(i) for i in [*blocks, *tools, *entry["block_ids"], *entry["tool_ids"]])
    assert [blocks[b]["label"] for b in entry["block_ids"]] == ["persona", "human"]
    assert {tools[t]["name"] for t in entry["tool_ids"]} == {t["name"] for t in made["tools"]}
    assert "greet" in {t["name"] for t in tools.values()}
    # Letta's order: lists sorted by label and name, ids numbered in the agent's order.
    assert [b["label"] for b in exported["blocks"]] == ["human", "persona"]
    assert entry["block_ids"] == ["block-0", "block-1"]
    # No server id leaks into the file.
    text = json.dumps(exported)
    server_ids = [made["id"], *(b["id"] for b in made["blocks"]), *(t["id"] for t in made["tools"])]
    assert not any(i in text for i in server_ids)


async def test_export_carries_the_agent_settings(client: QuartClient) -> None:
    made = await make_agent(client, description="d", timezone="Europe/Paris")
    (entry,) = (await export(client, made["id"]))["agents"]
    for field in ("system", "agent_type", "description", "metadata", "tags", "model",
                  "llm_config", "model_settings", "timezone"):  # fmt: skip
        assert entry[field] == made[field], field
    assert entry["include_base_tools"] is False  # tool_ids already lists the base tools


@pytest.fixture(scope="module")
def letta_schemas() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.skip("the reference OpenAPI document is not here")
    return json.loads(OPENAPI.read_text())["components"]["schemas"]


async def test_export_validates_against_letta_published_schema(
    client: QuartClient, letta_schemas: dict[str, Any]
) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    agent_file = {"$ref": "#/components/schemas/AgentFileSchema"}
    assert conform(exported, agent_file, letta_schemas) == []
    # (The check itself finds what it should.)
    exported["tools"][0]["created_at"] = "x"
    exported["blocks"][0]["limit"] = "many"
    del exported["agents"][0]["id"]
    assert len(conform(exported, agent_file, letta_schemas)) == 3


async def test_export_of_unknown_or_malformed_ids(client: QuartClient) -> None:
    unknown = "agent-00000000-0000-4000-8000-000000000000"
    assert (await client.get(f"/v1/agents/{unknown}/export")).status_code == 404
    assert (await client.get("/v1/agents/nope/export")).status_code == 422


async def test_the_legacy_export_format_is_refused(client: QuartClient) -> None:
    made = await make_agent(client)
    response = await client.get(f"/v1/agents/{made['id']}/export?use_legacy_format=true")
    assert response.status_code == 422
    assert "legacy" in (await response.get_json())["detail"][0]["msg"]


# -- round trips --------------------------------------------------------------------------


async def test_round_trip_makes_a_new_agent_equal_but_for_ids(client: QuartClient) -> None:
    made = await make_agent(client)
    (new_id,) = await import_file(client, await export(client, made["id"]))
    copy = await agent(client, new_id)
    assert copy["id"] != made["id"]
    for field in ("name", "system", "agent_type", "tags", "metadata", "model", "llm_config",
                  "model_settings", "embedding", "timezone"):  # fmt: skip
        assert copy[field] == made[field], field
    assert [(b["label"], b["value"], b["limit"]) for b in copy["blocks"]] == [
        (b["label"], b["value"], b["limit"]) for b in made["blocks"]
    ]
    assert not {b["id"] for b in copy["blocks"]} & {b["id"] for b in made["blocks"]}
    assert [t["name"] for t in copy["tools"]] == [t["name"] for t in made["tools"]]
    # The same tool by name: the custom tool is the one already here, the base tools are ours.
    assert [t["id"] for t in copy["tools"]] == [t["id"] for t in made["tools"]]
    assert copy["blocks"][1]["description"] == "the user"


async def test_a_copy_exports_the_same_file(client: QuartClient) -> None:
    made = await make_agent(client)
    first = await export(client, made["id"])
    (new_id,) = await import_file(client, first)
    second = await export(client, new_id)
    # The file's time and its system prompt's (compiled at export) are the export's.
    for file in (first, second):
        file.pop("created_at")
        file["agents"][0]["messages"][0].pop("created_at")
    assert second == first


async def test_importing_twice_gives_two_agents_with_their_own_blocks(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    (a,) = await import_file(client, exported)
    (b,) = await import_file(client, exported)
    assert a != b
    first, second = await agent(client, a), await agent(client, b)
    assert not {x["id"] for x in first["blocks"]} & {x["id"] for x in second["blocks"]}
    await client.patch(f"/v1/agents/{a}/core-memory/blocks/human", json={"value": "changed"})
    assert (await agent(client, b))["blocks"][1]["value"] == "Name: Grace"
    names = [x["name"] for x in await ok(await client.get("/v1/agents/?name=ada"))]
    assert names == ["ada", "ada", "ada"]


async def test_a_shared_block_stays_shared_within_the_file(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    exported["agents"].append({**exported["agents"][0], "id": "agent-1", "name": "twin"})
    first, second = await import_file(client, exported)
    a, b = await agent(client, first), await agent(client, second)
    assert [x["id"] for x in a["blocks"]] == [x["id"] for x in b["blocks"]]
    holders = await ok(await client.get(f"/v1/blocks/{a['blocks'][0]['id']}/agents"))
    assert {h["id"] for h in holders} == {first, second}


async def test_name_and_model_can_be_overridden(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    (renamed,) = await import_file(client, exported, name="grace", model="sim/agent")
    copy = await agent(client, renamed)
    assert copy["name"] == "grace" and copy["model"] == "sim/agent"
    assert copy["llm_config"]["handle"] == "sim/agent"
    assert copy["llm_config"]["context_window"] == made["llm_config"]["context_window"]
    (old_style,) = await import_file(client, exported, override_name="lovelace")
    assert (await agent(client, old_style))["name"] == "lovelace"
    (suffixed,) = await import_file(client, exported, append_copy_suffix="true")
    assert (await agent(client, suffixed))["name"] == "ada_copy"


async def test_embedding_can_be_set_on_import(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    (new_id,) = await import_file(client, exported, embedding="openai/text-embedding-3-small")
    copy = await agent(client, new_id)
    assert copy["embedding"] == "openai/text-embedding-3-small"
    assert copy["embedding_config"]["embedding_model"] == "text-embedding-3-small"


async def test_the_file_may_be_the_json_body_with_options_in_the_query(
    client: QuartClient,
) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    ids = (await ok(await client.post("/v1/agents/import?name=curl", json=exported)))["agent_ids"]
    assert (await agent(client, ids[0]))["name"] == "curl"


async def test_the_file_may_be_a_text_form_field(client: QuartClient) -> None:
    made = await make_agent(client)
    text = json.dumps(await export(client, made["id"]))
    response = await client.post("/v1/agents/import", form={"file": text, "name": "text"})
    (new_id,) = (await ok(response))["agent_ids"]
    assert (await agent(client, new_id))["name"] == "text"


# -- tools --------------------------------------------------------------------------------


async def changed_greet(client: QuartClient, made: dict) -> dict:
    """The agent's file, with greet's source changed (a newer version from elsewhere)."""
    exported = await export(client, made["id"])
    tool = next(t for t in exported["tools"] if t["name"] == "greet")
    tool["source_code"] = source("greet", "Greet someone warmly.")
    tool["json_schema"] = None
    tool["description"] = None
    return exported


async def test_existing_tools_are_overwritten_by_default(client: QuartClient) -> None:
    made = await make_agent(client)
    before = next(t for t in made["tools"] if t["name"] == "greet")
    await import_file(client, await changed_greet(client, made))
    after = await ok(await client.get(f"/v1/tools/{before['id']}"))
    assert after["id"] == before["id"] and "warmly" in after["source_code"]
    assert after["description"] == "Greet someone warmly."


async def test_existing_tools_are_kept_when_not_overriding(client: QuartClient) -> None:
    made = await make_agent(client)
    before = next(t for t in made["tools"] if t["name"] == "greet")
    exported = await changed_greet(client, made)
    (new_id,) = await import_file(client, exported, override_existing_tools="false")
    after = await ok(await client.get(f"/v1/tools/{before['id']}"))
    assert after == before
    assert before["id"] in [t["id"] for t in (await agent(client, new_id))["tools"]]


async def test_a_new_custom_tool_is_created(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    tool = next(t for t in exported["tools"] if t["name"] == "greet")
    tool.update(name="wave", source_code=source("wave"), json_schema=None)
    (new_id,) = await import_file(client, exported)
    (wave,) = await ok(await client.get("/v1/tools/?name=wave"))
    assert wave["id"] in [t["id"] for t in (await agent(client, new_id))["tools"]]
    assert wave["tool_type"] == "custom"


async def test_base_tools_map_by_name_and_are_never_overwritten(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    tool = next(t for t in exported["tools"] if t["name"] == "conversation_search")
    tool.update(tool_type="custom", source_code=source("conversation_search"), json_schema=None)
    (new_id,) = await import_file(client, exported)
    base = BASE_TOOLS_BY_NAME["conversation_search"]
    assert base.id in [t["id"] for t in (await agent(client, new_id))["tools"]]
    served = await ok(await client.get(f"/v1/tools/{base.id}"))
    assert served["source_code"] == base.source_code


async def test_tools_of_kinds_not_run_here_are_left_out(client: QuartClient) -> None:
    made = await make_agent(client)
    exported = await export(client, made["id"])
    exported["tools"].append({"id": "tool-99", "name": "remote", "tool_type": "external_mcp"})
    exported["agents"][0]["tool_ids"].append("tool-99")
    (new_id,) = await import_file(client, exported)
    names = [t["name"] for t in (await agent(client, new_id))["tools"]]
    assert "remote" not in names and "greet" in names


# -- a file written by Letta --------------------------------------------------------------

LETTA_FILE: dict[str, Any] = {
    "agents": [
        {
            "name": "letta-made",
            "memory_blocks": [],
            "tools": [],
            "tool_ids": ["tool-0", "tool-1", "tool-2"],
            "source_ids": [],
            "block_ids": ["block-0", "block-1"],
            "tool_rules": [
                {"tool_name": "send_message", "type": "exit_loop", "prompt_template": None}
            ],
            "tags": ["imported"],
            "system": "You are a Letta agent.",
            "agent_type": "memgpt_v2_agent",
            "llm_config": {
                "model": "gpt-4o-mini",
                "model_endpoint_type": "openai",
                "model_endpoint": "https://api.openai.com/v1",
                "context_window": 32000,
                "handle": "openai/gpt-4o-mini",
                "temperature": 0.7,
            },
            "embedding_config": {
                "embedding_endpoint_type": "openai",
                "embedding_model": "text-embedding-3-small",
                "embedding_dim": 1536,
                "handle": "openai/text-embedding-3-small",
            },
            "include_base_tools": False,
            "include_multi_agent_tools": False,
            "include_base_tool_rules": False,
            "description": "made by Letta",
            "metadata": None,
            "model": None,
            "embedding": None,
            "enable_reasoner": False,
            "tool_exec_environment_variables": {},
            "message_buffer_autoclear": False,
            "enable_sleeptime": False,
            "timezone": "UTC",
            "id": "agent-0",
            "in_context_message_ids": ["message-0", "message-1"],
            "messages": [
                {"type": "message", "role": "system", "content": [{"type": "text",
                 "text": "You are a Letta agent."}], "id": "message-0", "agent_id": "agent-0",
                 "created_at": "2026-01-01T00:00:00Z"},
                {"type": "message", "role": "user", "content": [{"type": "text",
                 "text": "hello"}], "id": "message-1", "agent_id": "agent-0",
                 "created_at": "2026-01-01T00:00:01Z"},
            ],
            "files_agents": [],
            "group_ids": [],
        }
    ],
    "groups": [],
    "blocks": [
        {"value": "I am helpful.", "limit": 5000, "label": "persona", "is_template": False,
         "read_only": False, "metadata": {}, "id": "block-0"},
        {"value": "Unknown.", "limit": 5000, "label": "human", "is_template": False,
         "read_only": False, "metadata": {}, "id": "block-1", "description": "the human"},
    ],
    "files": [],
    "sources": [],
    "tools": [
        {"id": "tool-0", "tool_type": "letta_core", "name": "send_message",
         "description": "Sends a message.", "source_type": "python", "tags": ["letta_core"],
         "source_code": None, "json_schema": {"name": "send_message"}},
        {"id": "tool-1", "tool_type": "letta_builtin", "name": "web_search", "tags": []},
        {"id": "tool-2", "tool_type": "custom", "name": "roll", "source_type": "python",
         "description": "Roll a die.", "tags": ["fun"],
         "source_code": "def roll(sides: int) -> int:\n    \"\"\"Roll a die.\n\n    Args:\n"
                        "        sides (int): How many sides.\n    \"\"\"\n    return sides\n",
         "json_schema": {"name": "roll", "description": "Roll a die.", "parameters": {
             "type": "object", "properties": {"sides": {"type": "integer",
             "description": "How many sides."}}, "required": ["sides"]}},
         "return_char_limit": 6000, "metadata_": {"origin": "letta"}},
    ],
    "mcp_servers": [],
    "metadata": {"revision_id": "d5103ee17ed5"},
    "created_at": "2026-01-01T00:00:02Z",
}  # fmt: skip


async def test_a_file_exported_by_letta_imports(client: QuartClient) -> None:
    (new_id,) = await import_file(client, LETTA_FILE)
    made = await agent(client, new_id)
    assert made["name"] == "letta-made" and made["agent_type"] == "memgpt_v2_agent"
    assert made["model"] == "openai/gpt-4o-mini"
    assert made["llm_config"]["context_window"] == 32000
    assert made["embedding"] == "openai/text-embedding-3-small"
    assert [(b["label"], b["value"]) for b in made["blocks"]] == [
        ("persona", "I am helpful."),
        ("human", "Unknown."),
    ]
    # send_message and web_search are base tools here (the builtin web_search with our id
    # and schema), roll is new.
    assert [t["name"] for t in made["tools"]] == ["send_message", "web_search", "roll"]
    web_search = made["tools"][1]
    assert web_search["tool_type"] == "letta_builtin"
    assert web_search["id"] == base_tool_id("web_search")
    roll = made["tools"][2]
    assert roll["return_char_limit"] == 6000 and roll["metadata_"] == {"origin": "letta"}
    assert made["tool_rules"] == LETTA_FILE["agents"][0]["tool_rules"]


async def test_a_letta_file_naming_a_model_not_here_needs_the_model_option(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store).test_app() as test_app:  # no OpenAI: only the simulated model
        client = test_app.test_client()
        refused = await client.post("/v1/agents/import", files=upload(LETTA_FILE))
        assert refused.status_code == 422
        (problem,) = (await refused.get_json())["detail"]
        assert problem["loc"] == ["body", "file", "agents", 0, "model"]
        assert "openai/gpt-4o-mini" in problem["msg"] and "`model`" in problem["msg"]
        assert await ok(await client.get("/v1/agents/")) == []
        (new_id,) = await import_file(
            client, LETTA_FILE, model="sim/agent", embedding="sim/embedding"
        )
        assert (await agent(client, new_id))["model"] == "sim/agent"


# -- bad files ----------------------------------------------------------------------------


def without(key: str) -> dict:
    return {k: v for k, v in LETTA_FILE.items() if k != key}


def changed(path: list[str | int], value: Any) -> dict:
    copy = json.loads(json.dumps(LETTA_FILE))
    where = copy
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    return copy


BAD_FILES: list[tuple[str, Any, list[str | int], str]] = [
    ("not JSON", b"{not json", ["body", "file"], "not JSON"),
    ("a JSON array", b"[1, 2]", ["body", "file"], "JSON object"),
    ("no tools list", without("tools"), ["body", "file", "tools"], "missing"),
    ("agents not a list", changed(["agents"], {"a": 1}), ["body", "file", "agents"], "list"),
    ("a block without a value", changed(["blocks", 0, "value"], None),
     ["body", "file", "blocks", 0, "value"], "str"),
    ("an unknown block id", changed(["agents", 0, "block_ids", 1], "block-7"),
     ["body", "file", "agents", 0, "block_ids", 1], "block-7"),
    ("an unknown tool id", changed(["agents", 0, "tool_ids", 0], "tool-7"),
     ["body", "file", "agents", 0, "tool_ids", 0], "tool-7"),
    ("two blocks with one id", changed(["blocks", 1, "id"], "block-0"),
     ["body", "file", "blocks"], "block-0"),
    ("two blocks with one label", changed(["blocks", 1, "label"], "persona"),
     ["body", "file", "agents", 0, "block_ids"], "persona"),
    ("an unknown message in context", changed(["agents", 0, "in_context_message_ids", 0], "m"),
     ["body", "file", "agents", 0, "in_context_message_ids", 0], "'m'"),
    ("an unknown model", changed(["agents", 0, "llm_config", "handle"], "openai/gpt-0"),
     ["body", "file", "agents", 0, "model"], "gpt-0"),
    ("an unknown agent type", changed(["agents", 0, "agent_type"], "robot"),
     ["body", "file", "agents", 0, "agent_type"], "robot"),
    ("a tool that does not parse", changed(["tools", 2, "source_code"], "def roll(:"),
     ["body", "file", "tools", 2, "source_code"], ""),
    ("a TypeScript tool", changed(["tools", 2, "source_type"], "typescript"),
     ["body", "file", "tools", 2, "source_type"], "Python"),
    ("a value over its limit", changed(["blocks", 0, "limit"], 3),
     ["body", "file", "blocks", 0, "value"], "limit"),
    ("a legacy v1 file", {"name": "old", "core_memory": [], "llm_config": {}, "version": "0.6"},
     ["body", "file"], "v1"),
    ("a malformed tool rule", changed(["agents", 0, "tool_rules"], [{"type": "exit_loop"}]),
     ["body", "file", "agents", 0, "tool_rules", 0, "tool_name"], "required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "loc", "says"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
async def test_a_bad_file_is_a_422_naming_the_problem_and_writes_nothing(
    app_and_store: tuple[QuartClient, MemoryStore], content: Any, loc: list, says: str
) -> None:
    client, store = app_and_store
    await ok(await client.put("/v1/tools/", json={"source_code": source("greet")}))
    before = store.engine.snapshot()
    response = await client.post("/v1/agents/import", files=upload(content))
    assert response.status_code == 422, await response.get_data()
    detail = (await response.get_json())["detail"]
    assert any(d["loc"] == loc and says in d["msg"] + d["type"] for d in detail), detail
    assert store.engine.snapshot() == before


async def test_a_file_failing_late_writes_nothing_either(
    app_and_store: tuple[QuartClient, MemoryStore],
) -> None:
    """Refused inside the transaction (a tool name that is not here), after blocks were put."""
    client, store = app_and_store
    before = store.engine.snapshot()
    bad = changed(["agents", 0, "tools"], ["no_such_tool"])
    response = await client.post("/v1/agents/import", files=upload(bad))
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == [
        "body", "file", "agents", 0, "tools", 0,
    ]  # fmt: skip
    assert store.engine.snapshot() == before


async def test_a_file_too_large_for_one_transaction_is_a_413_and_writes_nothing(
    app_and_store: tuple[QuartClient, MemoryStore],
) -> None:
    client, store = app_and_store
    before = store.engine.snapshot()
    big = json.loads(json.dumps(LETTA_FILE))
    value = "x" * 1_000_000
    big["blocks"] = [
        {"id": f"block-{i}", "label": f"b{i}", "value": value, "limit": len(value)}
        for i in range(11)
    ]
    big["agents"][0]["block_ids"] = []
    response = await client.post("/v1/agents/import", files=upload(big))
    assert response.status_code == 413
    assert "too large" in (await response.get_json())["detail"]
    assert store.engine.snapshot() == before


async def test_a_missing_file_field_and_bad_options_are_422(client: QuartClient) -> None:
    response = await client.post("/v1/agents/import", form={"name": "x"})
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "file"]
    response = await client.post(
        "/v1/agents/import", files=upload(LETTA_FILE), form={"override_existing_tools": "maybe"}
    )
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "override_existing_tools"]
    response = await client.post(
        "/v1/agents/import", files=upload(LETTA_FILE), form={"model": "x/y"}
    )
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "model"]


async def test_import_is_not_taken_for_an_agent_id(client: QuartClient) -> None:
    spec = await ok(await client.get("/openapi.json"))
    assert "post" in spec["paths"]["/v1/agents/import"]
    assert "get" in spec["paths"]["/v1/agents/{agent_id}/export"]
    assert (await client.post("/v1/agents/import", json=LETTA_FILE)).status_code == 200


# -- a small JSON Schema check, enough for Letta's published schemas ----------------------


def conform(value: Any, schema: dict, schemas: dict, path: str = "$") -> list[str]:
    """Where `value` breaks `schema` (refs into `schemas`): type, required, enum, extra keys."""
    if "$ref" in schema:
        return conform(value, schemas[schema["$ref"].rsplit("/", 1)[-1]], schemas, path)
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            options = [conform(value, s, schemas, path) for s in schema[combiner]]
            if any(not o for o in options):
                return []
            return [f"{path}: matches none of {combiner}: {min(options, key=len)}"]
    problems: list[str] = []
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "array": list, "object": dict, "null": type(None)}  # fmt: skip
    kind = schema.get("type")
    is_number = kind in ("integer", "number")
    if kind is not None and (
        not isinstance(value, kinds[kind]) or (is_number and isinstance(value, bool))
    ):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: {value!r} is not {schema['const']!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += conform(item, schema["items"], schemas, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += conform(item, properties[key], schemas, f"{path}.{key}")
            elif extra is False:
                problems.append(f"{path}: unexpected key {key}")
            elif isinstance(extra, dict):
                problems += conform(item, extra, schemas, f"{path}.{key}")
    return problems


# -- history ------------------------------------------------------------------------------

LETTA_HISTORY = Path(__file__).parents[1] / "data" / "letta_agent_files"


async def test_a_letta_files_history_round_trips_in_letta_shapes(
    client: QuartClient, letta_schemas: dict[str, Any]
) -> None:
    given = json.loads((LETTA_HISTORY / "basic_agent_with_messages_v2.af").read_text())
    (new_id,) = await import_file(client, given)
    exported = await export(client, new_id)
    assert conform(exported, {"$ref": "#/components/schemas/AgentFileSchema"}, letta_schemas) == []
    mine, theirs = exported["agents"][0], given["agents"][0]
    # The window: the system prompt (compiled here from the same blocks) and the six after it.
    assert len(mine["in_context_message_ids"]) == len(theirs["in_context_message_ids"])
    assert mine["messages"][0]["role"] == "system"

    def kept(m: dict) -> tuple:
        """What both servers keep of a message (ids and times aside)."""
        texts = [p["text"] for p in m["content"] if p.get("type") == "text"]
        calls = [(c["id"], c["function"]["name"], c["function"]["arguments"])
                 for c in m.get("tool_calls") or []]  # fmt: skip
        call_id = m.get("tool_call_id") if m["role"] == "tool" else None
        return m["role"], texts, calls, call_id, m["created_at"][:19]

    assert [kept(m) for m in mine["messages"][1:]] == [kept(m) for m in theirs["messages"][1:]]


async def test_an_imported_history_is_written_in_the_window_the_file_gives(
    client: QuartClient,
) -> None:
    made = await make_agent(client)
    file = await export(client, made["id"])
    entry = file["agents"][0]
    entry["messages"] += [
        {"id": f"message-{i}", "role": "user", "content": f"line {i}",
         "created_at": f"2026-01-01T00:00:0{i}Z"}
        for i in range(1, 5)
    ]  # fmt: skip
    entry["in_context_message_ids"] = ["message-0", "message-3", "message-4"]
    (new_id,) = await import_file(client, file)
    listed = await ok(await client.get(f"/v1/agents/{new_id}/messages?order=asc"))
    assert [m["content"] for m in listed] == [f"line {i}" for i in range(1, 5)]
    again = (await export(client, new_id))["agents"][0]
    window = {m["id"]: m for m in again["messages"]}
    shown = [window[i]["content"][0]["text"] for i in again["in_context_message_ids"][1:]]
    assert shown == ["line 3", "line 4"]
    # A file whose window names a message it does not hold, or holds one id twice, is a 422.
    entry["in_context_message_ids"] = ["message-9"]
    response = await client.post("/v1/agents/import", files=upload(file))
    assert response.status_code == 422
    entry["in_context_message_ids"] = []
    entry["messages"].append(dict(entry["messages"][-1]))
    response = await client.post("/v1/agents/import", files=upload(file))
    assert response.status_code == 422
