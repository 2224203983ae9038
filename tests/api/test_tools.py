"""/v1/tools/ and an agent's tools through the app's test client."""

from __future__ import annotations

from quart.testing import QuartClient

from kelpie_trio.tools.base import BASE_TOOLS, base_tool_id

BASE_NAMES = [t.name for t in BASE_TOOLS]

ROLL = '''
def roll_dice(sides: int, times: int = 1) -> str:
    """Roll dice and report the total.

    Args:
        sides (int): Faces on each die.
        times (int): How many dice to roll.
    """
    return str(sides * times)
'''


def source(name: str, doc: str = "Does a thing.") -> str:
    return f'def {name}(text: str) -> str:\n    """{doc}"""\n    return text\n'


async def create(client: QuartClient, src: str = ROLL, **fields) -> dict:
    response = await client.post("/v1/tools/", json={"source_code": src, **fields})
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def create_agent(client: QuartClient, **fields) -> dict:
    response = await client.post("/v1/agents/", json=fields)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def names_of(client: QuartClient, path: str) -> list[str]:
    return [t["name"] for t in await (await client.get(path)).get_json()]


# -- creating tools ---------------------------------------------------------------


async def test_create_derives_name_and_schema_from_the_source(client: QuartClient) -> None:
    tool = await create(client, tags=["games"])
    assert tool["id"].startswith("tool-") and tool["name"] == "roll_dice"
    assert tool["tool_type"] == "custom" and tool["source_type"] == "python"
    assert tool["description"] == "Roll dice and report the total."
    assert tool["json_schema"] == {
        "name": "roll_dice",
        "description": "Roll dice and report the total.",
        "parameters": {
            "type": "object",
            "properties": {
                "sides": {"type": "integer", "description": "Faces on each die."},
                "times": {"type": "integer", "description": "How many dice to roll."},
            },
            "required": ["sides"],
        },
    }
    assert tool["tags"] == ["games"] and tool["return_char_limit"] == 50000
    assert tool["source_code"] == ROLL and "created_at" not in tool
    assert await (await client.get(f"/v1/tools/{tool['id']}")).get_json() == tool


async def test_a_given_description_wins_over_the_docstring(client: QuartClient) -> None:
    tool = await create(client, description="dice")
    assert tool["description"] == "dice"
    assert tool["json_schema"]["description"] == "Roll dice and report the total."


async def test_source_with_a_syntax_error_is_a_422_naming_the_line(client: QuartClient) -> None:
    response = await client.post("/v1/tools/", json={"source_code": "x = 1\ndef broken(:\n"})
    assert response.status_code == 422
    [detail] = (await response.get_json())["detail"]
    assert detail["loc"] == ["body", "source_code"]
    assert "syntax error at line 2" in detail["msg"]


async def test_source_without_a_function_is_a_422(client: QuartClient) -> None:
    response = await client.post("/v1/tools/", json={"source_code": "x = 1\n"})
    assert response.status_code == 422
    assert "no top-level function" in (await response.get_json())["detail"][0]["msg"]


async def test_an_unannotated_parameter_is_a_422_with_its_line(client: QuartClient) -> None:
    src = 'def f(\n    a: int,\n    b,\n) -> int:\n    """Adds."""\n    return a\n'
    response = await client.post("/v1/tools/", json={"source_code": src})
    assert response.status_code == 422
    msg = (await response.get_json())["detail"][0]["msg"]
    assert "'b'" in msg and "type annotation" in msg and "line 3" in msg


async def test_missing_source_and_bad_fields_are_422s(client: QuartClient) -> None:
    missing = await client.post("/v1/tools/", json={"description": "no source"})
    assert missing.status_code == 422
    assert (await missing.get_json())["detail"][0]["loc"] == ["body", "source_code"]
    limit = await client.post("/v1/tools/", json={"source_code": ROLL, "return_char_limit": 0})
    assert limit.status_code == 422
    typescript = await client.post(
        "/v1/tools/", json={"source_code": "function f() {}", "source_type": "typescript"}
    )
    assert typescript.status_code == 422
    assert await names_of(client, "/v1/tools/?limit=1000") == BASE_NAMES  # nothing written


async def test_a_second_tool_with_the_same_name_is_a_409(client: QuartClient) -> None:
    first = await create(client)
    response = await client.post("/v1/tools/", json={"source_code": ROLL + "\n# v2\n"})
    assert response.status_code == 409
    assert first["id"] in (await response.get_json())["detail"]
    assert response.headers["x-should-retry"] == "false"  # the SDK would retry a 409
    clash = await client.post("/v1/tools/", json={"source_code": source("send_message")})
    assert clash.status_code == 409
    assert "base tool" in (await clash.get_json())["detail"]


async def test_a_given_json_schema_is_kept_and_names_the_tool(client: QuartClient) -> None:
    schema = {"name": "roll_dice", "description": "custom", "parameters": {"type": "object"}}
    tool = await create(client, json_schema=schema)
    assert tool["json_schema"] == schema and tool["name"] == "roll_dice"
    response = await client.post(
        "/v1/tools/", json={"source_code": ROLL, "json_schema": {**schema, "name": "absent"}}
    )
    assert response.status_code == 422
    assert "no top-level function named 'absent'" in (await response.get_json())["detail"][0]["msg"]


async def test_args_json_schema_replaces_the_parameters(client: QuartClient) -> None:
    args = {"properties": {"sides": {"type": "integer"}}, "required": ["sides"]}
    tool = await create(client, args_json_schema=args)
    assert tool["args_json_schema"] == args
    assert tool["json_schema"]["parameters"] == {"type": "object", **args}


# -- upsert, modify, delete ------------------------------------------------------


async def test_upsert_creates_then_replaces_keeping_the_id(client: QuartClient) -> None:
    first = await client.put("/v1/tools/", json={"source_code": ROLL, "tags": ["v1"]})
    assert first.status_code == 200
    made = await first.get_json()
    new_source = ROLL.replace("Roll dice and report the total.", "Roll some dice.")
    second = await (
        await client.put("/v1/tools/", json={"source_code": new_source, "tags": ["v2"]})
    ).get_json()
    assert second["id"] == made["id"] and second["tags"] == ["v2"]
    assert second["description"] == "Roll some dice." and second["source_code"] == new_source
    assert await names_of(client, "/v1/tools/?name=roll_dice") == ["roll_dice"]


async def test_upsert_cannot_replace_a_base_tool(client: QuartClient) -> None:
    response = await client.put("/v1/tools/", json={"source_code": source("send_message")})
    assert response.status_code == 403
    assert "base tool" in (await response.get_json())["detail"]


async def test_patch_changes_only_the_fields_given(client: QuartClient) -> None:
    tool = await create(client, tags=["a"])
    response = await client.patch(
        f"/v1/tools/{tool['id']}",
        json={"tags": ["b"], "return_char_limit": 10, "metadata_": {"k": 1}},
    )
    assert response.status_code == 200
    updated = await response.get_json()
    assert updated["tags"] == ["b"] and updated["return_char_limit"] == 10
    assert updated["metadata_"] == {"k": 1}
    changed = ("tags", "return_char_limit", "metadata_")
    assert {k: v for k, v in updated.items() if k not in changed} == {
        k: v for k, v in tool.items() if k not in changed
    }


async def test_patching_the_source_rederives_the_schema_and_name(client: QuartClient) -> None:
    tool = await create(client)
    response = await client.patch(
        f"/v1/tools/{tool['id']}", json={"source_code": source("shout", "Says it loudly.")}
    )
    updated = await response.get_json()
    assert updated["id"] == tool["id"] and updated["name"] == "shout"
    assert updated["description"] == "Says it loudly."  # it was the docstring's, so it follows
    assert list(updated["json_schema"]["parameters"]["properties"]) == ["text"]
    assert await names_of(client, "/v1/tools/?name=shout") == ["shout"]
    assert await names_of(client, "/v1/tools/?name=roll_dice") == []
    bad = await client.patch(f"/v1/tools/{tool['id']}", json={"source_code": "def (:"})
    assert bad.status_code == 422
    assert (await (await client.get(f"/v1/tools/{tool['id']}")).get_json()) == updated


async def test_patching_to_a_taken_name_is_a_409(client: QuartClient) -> None:
    await create(client)
    other = await create(client, source("echo"))
    response = await client.patch(f"/v1/tools/{other['id']}", json={"source_code": ROLL})
    assert response.status_code == 409


async def test_delete_removes_the_tool_and_detaches_it(client: QuartClient) -> None:
    tool = await create(client)
    agent = await create_agent(client, tool_ids=[tool["id"]], include_base_tools=False)
    assert (await client.delete(f"/v1/tools/{tool['id']}")).status_code == 200
    assert (await client.get(f"/v1/tools/{tool['id']}")).status_code == 404
    assert (await (await client.get(f"/v1/agents/{agent['id']}")).get_json())["tools"] == []
    assert (await client.delete(f"/v1/tools/{tool['id']}")).status_code == 404
    again = await create(client)  # the name is free again
    assert again["id"] != tool["id"]


async def test_unknown_id_is_404_and_malformed_id_is_422(client: QuartClient) -> None:
    unknown = "tool-00000000-0000-4000-8000-000000000000"
    response = await client.get(f"/v1/tools/{unknown}")
    assert response.status_code == 404
    assert (await response.get_json())["detail"] == f"Tool with id '{unknown}' not found"
    assert (await client.get("/v1/tools/nonsense")).status_code == 422
    assert (await client.patch(f"/v1/tools/{unknown}", json={"tags": []})).status_code == 404


# -- base tools ------------------------------------------------------------------------


async def test_base_tools_are_listed_and_retrievable_without_being_created(
    client: QuartClient,
) -> None:
    listed = await (await client.get("/v1/tools/")).get_json()
    assert [t["name"] for t in listed] == BASE_NAMES
    assert {"send_message", "core_memory_append", "memory_rethink", "pause_heartbeats"} <= set(
        BASE_NAMES
    )
    send = next(t for t in listed if t["name"] == "send_message")
    assert send["id"] == base_tool_id("send_message") and send["tool_type"] == "letta_core"
    assert send["json_schema"]["parameters"]["required"] == ["message"]
    assert await (await client.get(f"/v1/tools/{send['id']}")).get_json() == send
    memory = next(t for t in listed if t["name"] == "memory_replace")
    assert memory["tool_type"] == "letta_sleeptime_core"  # as Letta 0.16.8 files it
    assert memory["json_schema"]["parameters"]["required"] == ["label", "old_string", "new_string"]
    # `agent_state` is the server's, never the model's.
    assert "agent_state" not in memory["json_schema"]["parameters"]["properties"]


async def test_base_tools_cannot_be_modified_or_deleted(client: QuartClient) -> None:
    send_id = base_tool_id("send_message")
    patch = await client.patch(f"/v1/tools/{send_id}", json={"description": "x"})
    assert patch.status_code == 403 and "base tool" in (await patch.get_json())["detail"]
    delete = await client.delete(f"/v1/tools/{send_id}")
    assert delete.status_code == 403
    assert (await (await client.get(f"/v1/tools/{send_id}")).get_json())["description"] != "x"


# -- listing ------------------------------------------------------------------------


async def test_list_filters_by_name_search_and_type(client: QuartClient) -> None:
    await create(client)
    await create(client, source("echo"))
    assert await names_of(client, "/v1/tools/?name=echo") == ["echo"]
    assert await names_of(client, "/v1/tools/?name=send_message") == ["send_message"]
    assert await names_of(client, "/v1/tools/?name=nothing") == []
    assert await names_of(client, "/v1/tools/?names=echo&names=roll_dice") == [
        "roll_dice",
        "echo",
    ]
    assert await names_of(client, "/v1/tools/?search=ARCHIVAL") == [
        "archival_memory_insert",
        "archival_memory_search",
    ]
    assert await names_of(client, "/v1/tools/?tool_types=custom") == ["roll_dice", "echo"]
    assert await names_of(client, "/v1/tools/?return_only_letta_tools=true") == BASE_NAMES
    assert await names_of(client, "/v1/tools/?exclude_tool_types=letta_core,letta_memory_core") == [
        "memory_insert",
        "memory_replace",
        "memory_rethink",
        "memory_finish_edits",
        "web_search",
        "fetch_webpage",
        "open_files",
        "grep_files",
        "semantic_search_files",
        "send_message_to_agent_and_wait_for_reply",
        "send_message_to_agent_async",
        "send_message_to_agents_matching_tags",
        "roll_dice",
        "echo",
    ]


async def test_pagination_walks_every_tool_once_both_ways(client: QuartClient) -> None:
    made = [(await create(client, source(f"tool_{i}")))["id"] for i in range(7)]
    everything = [t.id for t in BASE_TOOLS] + made
    for order, expected in (("asc", everything), ("desc", everything[::-1])):
        seen: list[str] = []
        cursor = ""
        while True:
            page = await (await client.get(f"/v1/tools/?limit=3&order={order}{cursor}")).get_json()
            if not page:
                break
            seen += [t["id"] for t in page]
            cursor = f"&after={page[-1]['id']}"
        assert seen == expected, order


async def test_before_cursor_and_filters_page_together(client: QuartClient) -> None:
    made = [(await create(client, source(f"tool_{i}")))["id"] for i in range(4)]
    first_custom = made[0]
    before = await (await client.get(f"/v1/tools/?before={first_custom}&limit=1000")).get_json()
    assert [t["id"] for t in before] == [t.id for t in BASE_TOOLS]
    after_base = await (
        await client.get(f"/v1/tools/?after={BASE_TOOLS[-1].id}&tool_types=custom&limit=2")
    ).get_json()
    assert [t["id"] for t in after_base] == made[:2]
    unknown = "tool-00000000-0000-4000-8000-000000000000"
    assert await (await client.get(f"/v1/tools/?after={unknown}")).get_json() == []


# -- an agent's tools -------------------------------------------------------------------


async def test_new_agents_get_the_base_tools_for_their_type(client: QuartClient) -> None:
    agent = await create_agent(client)  # letta_v1_agent
    # Letta 0.16.8 leaves the archival tools out of new agents; they stay attachable.
    assert [t["name"] for t in agent["tools"]] == [
        "conversation_search",
        "memory_insert",
        "memory_replace",
    ]
    memgpt = await create_agent(client, agent_type="memgpt_agent")
    assert [t["name"] for t in memgpt["tools"]] == [
        "send_message",
        "conversation_search",
        "core_memory_append",
        "core_memory_replace",
        "memory",
        "memory_apply_patch",
    ]
    v2 = await create_agent(client, agent_type="memgpt_v2_agent")
    assert [t["name"] for t in v2["tools"]] == [
        "send_message",
        "conversation_search",
        "memory_insert",
        "memory_replace",
    ]
    sleeptime = await create_agent(client, agent_type="sleeptime_agent")
    assert [t["name"] for t in sleeptime["tools"]] == [
        "memory_insert",
        "memory_replace",
        "memory_rethink",
        "memory_finish_edits",
    ]
    workflow = await create_agent(client, agent_type="workflow_agent")
    assert workflow["tools"] == [] and workflow["message_buffer_autoclear"] is True
    archival = await create_agent(client, tools=["archival_memory_insert"])
    assert "archival_memory_insert" in [t["name"] for t in archival["tools"]]
    bare = await create_agent(client, include_base_tools=False)
    assert bare["tools"] == []


async def test_agents_take_tools_by_name_and_by_id(client: QuartClient) -> None:
    roll = await create(client)
    echo = await create(client, source("echo"))
    agent = await create_agent(
        client,
        include_base_tools=False,
        tools=["roll_dice", "send_message"],
        tool_ids=[echo["id"], roll["id"]],
    )
    assert [t["name"] for t in agent["tools"]] == ["roll_dice", "send_message", "echo"]
    assert agent["tools"][0] == roll  # the full Tool records
    got = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert got["tools"] == agent["tools"]


async def test_unknown_tools_refuse_the_agent_and_write_nothing(client: QuartClient) -> None:
    # Letta's status and words: clients (Letta's CLI) match "Tools not found by name"
    # on a 400 to add the missing base tools, or to retry without them.
    by_name = await client.post(
        "/v1/agents/", json={"tools": ["send_message", "nope", "nada", "x" * 20_000]}
    )
    assert by_name.status_code == 400
    detail = (await by_name.get_json())["detail"]
    assert detail.startswith("Tools not found by name: 'nope', 'nada', 'xxx")
    assert "send_message" not in detail
    missing_id = "tool-00000000-0000-4000-8000-000000000000"
    by_id = await client.post("/v1/agents/", json={"tool_ids": [missing_id]})
    assert by_id.status_code == 400
    assert (await by_id.get_json())["detail"].startswith(f"Tools not found by id: '{missing_id}'")
    assert await (await client.get("/v1/agents/")).get_json() == []


async def test_attach_and_detach_tools(client: QuartClient) -> None:
    roll = await create(client)
    agent = await create_agent(client, include_base_tools=False)
    path = f"/v1/agents/{agent['id']}/tools"
    attached = await (await client.patch(f"{path}/attach/{roll['id']}")).get_json()
    assert [t["name"] for t in attached["tools"]] == ["roll_dice"]
    send_id = base_tool_id("send_message")
    await client.patch(f"{path}/attach/{send_id}")
    await client.patch(f"{path}/attach/{roll['id']}")  # twice is once
    assert await names_of(client, path) == ["roll_dice", "send_message"]
    assert await names_of(client, f"{path}?limit=1&after={roll['id']}") == ["send_message"]
    detached = await (await client.patch(f"{path}/detach/{roll['id']}")).get_json()
    assert [t["name"] for t in detached["tools"]] == ["send_message"]
    assert (await client.patch(f"{path}/detach/{roll['id']}")).status_code == 200
    unknown = "tool-00000000-0000-4000-8000-000000000000"
    assert (await client.patch(f"{path}/attach/{unknown}")).status_code == 404
    assert (await client.patch(f"{path}/attach/nonsense")).status_code == 422


async def test_patching_an_agent_replaces_its_tool_ids(client: QuartClient) -> None:
    roll = await create(client)
    agent = await create_agent(client)
    response = await client.patch(f"/v1/agents/{agent['id']}", json={"tool_ids": [roll["id"]]})
    assert [t["name"] for t in (await response.get_json())["tools"]] == ["roll_dice"]
    assert await names_of(client, f"/v1/agents/{agent['id']}/tools") == ["roll_dice"]


async def test_a_modified_tool_is_seen_by_its_agents(client: QuartClient) -> None:
    roll = await create(client)
    agent = await create_agent(client, tool_ids=[roll["id"]], include_base_tools=False)
    await client.patch(f"/v1/tools/{roll['id']}", json={"description": "new words"})
    got = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert got["tools"][0]["description"] == "new words"


async def test_a_chosen_description_survives_a_new_source(client: QuartClient) -> None:
    tool = await create(client, description="my words")
    response = await client.patch(f"/v1/tools/{tool['id']}", json={"source_code": source("echo")})
    assert (await response.get_json())["description"] == "my words"


async def test_search_ranks_tools_by_the_query_words_they_hold(client: QuartClient) -> None:
    await create(client)  # roll_dice
    response = await client.post("/v1/tools/search", json={"query": "archival memory search"})
    assert response.status_code == 200
    hits = await response.get_json()
    assert hits[0]["tool"]["name"] == "archival_memory_search"
    assert hits[0]["combined_score"] == 3.0 and hits[0]["fts_rank"] == 1
    scores = [h["combined_score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0
    dice = await (await client.post("/v1/tools/search", json={"query": "dice"})).get_json()
    assert [h["tool"]["name"] for h in dice] == ["roll_dice"]
    custom_only = await (
        await client.post("/v1/tools/search", json={"tool_types": ["custom"], "limit": 5})
    ).get_json()
    assert [h["tool"]["name"] for h in custom_only] == ["roll_dice"]
    bad = await client.post("/v1/tools/search", json={"search_mode": "telepathy"})
    assert bad.status_code == 422


async def test_the_web_tools_are_builtin_base_tools_attached_by_name(client: QuartClient) -> None:
    assert await names_of(client, "/v1/tools/?tool_types=letta_builtin") == [
        "web_search",
        "fetch_webpage",
    ]
    upserted = await (await client.post("/v1/tools/add-base-tools")).get_json()
    assert {"web_search", "fetch_webpage"} <= {t["name"] for t in upserted}
    plain = await create_agent(client)  # given to no agent by default
    assert not {"web_search", "fetch_webpage"} & {t["name"] for t in plain["tools"]}
    agent = await create_agent(client, tools=["web_search", "fetch_webpage"])
    tools = {t["name"]: t for t in agent["tools"]}
    assert (
        tools["web_search"]["tool_type"] == tools["fetch_webpage"]["tool_type"] == ("letta_builtin")
    )
    assert tools["fetch_webpage"]["json_schema"]["parameters"]["required"] == ["url"]
