"""conversation_search and archival_memory_search used by agents in a simulated conversation.

The real actor, dispatcher, service, store and search layer, with a scripted
SimLlmClient: the model asks the search tools, and the tool returns hold what
the index ranked, the agent's own messages and passages only.
"""

from __future__ import annotations

from typing import Any

import orjson

from kelpie_trio.service import AgentService
from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.llm import SimLlmClient, text, tool_call
from tests.dst.agent_harness import new_agent, simulate

# Attached by name: new agents no longer get them by default (as in Letta 0.16.8).
ARCHIVAL = ["archival_memory_insert", "archival_memory_search"]


def _tool_return(reply: dict) -> Any:
    [result] = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert result["status"] == "success", result
    return orjson.loads(result["tool_return"])


def _send(text_: str) -> dict:
    return {"messages": [{"role": "user", "content": text_}]}


def test_dst_agent_finds_its_own_earlier_messages_with_conversation_search() -> None:
    script = [
        text("Noted: your sister lives in Lisbon."),
        text("Enjoy the new bicycle."),
        text("Noted."),  # the other agent's turn
        tool_call("conversation_search", {"query": "sister Lisbon", "limit": 3}, call_id="c1"),
        text("She lives in Lisbon."),
    ]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        other = await new_agent(service)
        await service.send_message(agent, _send("My sister Mara moved to Lisbon in March."))
        await service.send_message(agent, _send("I bought a new bicycle today."))
        await service.send_message(other, _send("Secret: my sister also lives in Lisbon."))
        return await service.send_message(agent, _send("Where does she live again?"))

    reply = simulate(3, scenario, script=script)
    hits = _tool_return(reply)
    contents = [h["content"] for h in hits]
    assert set(contents[:2]) == {
        "My sister Mara moved to Lisbon in March.",
        "Noted: your sister lives in Lisbon.",
    }
    assert not any("bicycle" in c or "Secret" in c for c in contents)  # relevant, and its own
    assert {h["role"] for h in hits} <= {"user", "assistant"}
    assert reply["stop_reason"]["stop_reason"] == "end_turn"


def test_dst_agent_searches_archival_memory_right_after_inserting() -> None:
    script = [
        tool_call("archival_memory_insert", {"content": "Mara's cat is called Miso."},
                  call_id="c1"),
        tool_call("archival_memory_search", {"query": "what is the cat's name"}, call_id="c2"),
        text("Miso."),
    ]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, tools=ARCHIVAL)
        other = await new_agent(service, tools=ARCHIVAL)
        await service.create_passages(other, {"text": "The other cat is called Pixel."})
        return await service.send_message(agent, _send("Remember Mara's cat, then recall it."))

    reply = simulate(4, scenario, script=script)
    returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    found = orjson.loads(returns[1]["tool_return"])
    # The insert of the step before is found at once (read-your-writes), and only it.
    assert [r["content"] for r in found] == ["Mara's cat is called Miso."]
    assert set(found[0]) == {"timestamp", "content", "tags"}


def test_dst_archival_memory_search_honours_the_tools_filters() -> None:
    script = [
        tool_call("archival_memory_search", {"query": "cat", "tags": ["pets"]}, call_id="c1"),
        tool_call("archival_memory_search", {"query": "cat", "tags": "pets"}, call_id="c2"),
        text("Done."),
    ]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, tools=ARCHIVAL)
        await service.create_passages(agent, {"text": "The cat is Miso.", "tags": ["pets"]})
        await service.create_passages(agent, {"text": "The cat food brand is Acme."})
        return await service.send_message(agent, _send("Which cat?"))

    reply = simulate(5, scenario, script=script)
    first, second = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert [r["content"] for r in orjson.loads(first["tool_return"])] == ["The cat is Miso."]
    assert second["status"] == "error" and "list of strings" in second["tool_return"]
