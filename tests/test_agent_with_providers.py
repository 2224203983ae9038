"""A real node whose agents talk to OpenAI-format and Anthropic-format providers over loopback
HTTP (fakes scripted per test): the agent edits its memory through a tool call, then answers."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import httpx
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.api.test_agentfile import LETTA_FILE
from tests.llm.fake_providers import (
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_stream,
    serving,
)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_agent_edits_its_memory_through_a_real_provider(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            edit = ("call_1", "memory_insert", {"label": "human", "new_str": "Likes tea."})
            if provider == "openai":
                monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
                monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
                model = "openai/gpt-4o-mini"
                fake.script(openai_completion(tool_calls=[edit]), openai_completion("Noted!"))
            else:
                monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
                monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url + "/v1")
                model = "anthropic/claude-sonnet-4-5-20250929"
                fake.script(anthropic_message(tool_uses=[edit]), anthropic_message("Noted!"))
            stop = trio.Event()
            config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
            dispatcher = await nursery.start(
                functools.partial(run_node, config, shutdown=stop, handle_signals=False)
            )
            async with httpx.AsyncClient(base_url=dispatcher.address, timeout=30) as client:
                created = await client.post(
                    "/v1/agents/",
                    json={"model": model, "memory_blocks": [{"label": "human", "value": "Ada"}]},
                )
                assert created.status_code == 200, created.text
                agent = created.json()["id"]
                reply = (
                    await client.post(
                        f"/v1/agents/{agent}/messages",
                        json={"messages": [{"role": "user", "content": "I like tea"}]},
                    )
                ).json()
                block = (await client.get(f"/v1/agents/{agent}/core-memory/blocks/human")).json()
            stop.set()
    kinds = [m["message_type"] for m in reply["messages"]]
    assert kinds == ["user_message", "tool_call_message", "tool_return_message",
                     "assistant_message"]  # fmt: skip
    assert reply["messages"][-1]["content"] == "Noted!"
    assert block["value"] == "Ada\nLikes tea."
    assert len(fake.received) == 2  # one request per step, over real HTTP


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_the_sdk_streams_tokens_and_cancels_through_a_real_provider(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """letta-client's async client: a token stream relayed from the provider's own
    stream, then an async run whose slow provider call is cancelled mid-flight."""
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            if provider == "openai":
                monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
                monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
                model = "openai/gpt-4o-mini"
                fake.script(openai_stream(["Hel", "lo, ", "Ada", "!"]),
                            openai_completion("too late").slow(30))  # fmt: skip
            else:
                monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
                monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url + "/v1")
                model = "anthropic/claude-sonnet-4-5-20250929"
                fake.script(anthropic_stream(["Hel", "lo, ", "Ada", "!"]),
                            anthropic_message("too late").slow(30))  # fmt: skip
            stop = trio.Event()
            config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
            dispatcher = await nursery.start(
                functools.partial(run_node, config, shutdown=stop, handle_signals=False)
            )
            letta = AsyncLetta(base_url=dispatcher.address, max_retries=0)
            agent = await letta.agents.create(model=model)
            stream = await letta.agents.messages.create(
                agent.id, input="hi", streaming=True, stream_tokens=True
            )
            events = [event async for event in stream]
            started = await letta.agents.messages.create_async(agent.id, input="again")
            while len(fake.received) < 2:  # noqa: ASYNC110 - the slow call is in flight
                await trio.sleep(0.01)
            cancelled = await letta.agents.messages.cancel(agent.id)
            run = await letta.runs.retrieve(started.id)
            while run.status == "running":  # a client polls its run
                await trio.sleep(0.01)
                run = await letta.runs.retrieve(started.id)
            listed = [m async for m in letta.runs.messages.list(started.id)]
            await letta.close()
            stop.set()
    answer = [e for e in events if e.message_type == "assistant_message"]
    assert [e.content for e in answer] == ["Hel", "lo, ", "Ada", "!"]  # token by token
    assert len({e.id for e in answer}) == 1
    assert [e.message_type for e in events][-2:] == ["stop_reason", "usage_statistics"]
    assert fake.received[0].json["stream"] is True  # the provider was asked to stream
    assert cancelled == {started.id: "cancelled"}
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    assert [m.message_type for m in listed] == ["user_message"]


async def _node(nursery: trio.Nursery, tmp_path: Path, stop: trio.Event) -> str:
    config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
    dispatcher = await nursery.start(
        functools.partial(run_node, config, shutdown=stop, handle_signals=False)
    )
    return dispatcher.address


async def test_an_agent_file_written_by_letta_answers_through_the_proxy_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Letta server on an OpenAI-compatible proxy names its models `openai-proxy/...`; the
    imported agent's turns reach the proxy configured here under the provider's model name."""
    letta_file = copy.deepcopy(LETTA_FILE)
    letta_file["agents"][0]["llm_config"] = {
        "model": "gpt-4o-mini",
        "model_endpoint_type": "openai",
        "model_endpoint": "http://letta-host-proxy:4000/v1",
        "context_window": 32000,
        "handle": "openai-proxy/gpt-4o-mini",
        "provider_name": "openai",
    }
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
            fake.script(openai_completion(tool_calls=[("call_1", "send_message",
                                                       {"message": "Hello again!"})]))  # fmt: skip
            stop = trio.Event()
            address = await _node(nursery, tmp_path, stop)
            async with httpx.AsyncClient(base_url=address, timeout=30) as client:
                imported = await client.post(
                    "/v1/agents/import",
                    files={
                        "file": ("agent.af", json.dumps(letta_file).encode(), "application/json")
                    },
                )
                assert imported.status_code == 200, imported.text
                (agent,) = imported.json()["agent_ids"]
                reply = (
                    await client.post(
                        f"/v1/agents/{agent}/messages",
                        json={"messages": [{"role": "user", "content": "hi again"}]},
                    )
                ).json()
            stop.set()
    said = [m["content"] for m in reply["messages"] if m["message_type"] == "assistant_message"]
    assert said == ["Hello again!"]
    assert reply["stop_reason"]["stop_reason"] == "end_turn"
    (sent,) = fake.received
    assert sent.json["model"] == "gpt-4o-mini" and fake.refused == []


async def test_a_model_discovered_on_a_second_openai_compatible_endpoint_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI and a local Ollama at once: the Ollama model, listed by the server at start and
    offered under `ollama/`, gets its turn asked with Ollama's own name for it."""
    with trio.fail_after(60):
        async with serving() as openai, serving() as ollama, trio.open_nursery() as nursery:
            ollama.serve_only(openai=["llama3.2:latest"])
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("OPENAI_BASE_URL", openai.url + "/v1")
            monkeypatch.setenv("KELPIE_LLM_ENDPOINTS", f"ollama={ollama.url}")
            ollama.script(openai_completion("Hi from Ollama"))
            stop = trio.Event()
            address = await _node(nursery, tmp_path, stop)
            async with httpx.AsyncClient(base_url=address, timeout=30) as client:
                handles = [m["handle"] for m in (await client.get("/v1/models/")).json()]
                created = await client.post("/v1/agents/", json={"model": "ollama/llama3.2:latest"})
                assert created.status_code == 200, created.text
                reply = (
                    await client.post(
                        f"/v1/agents/{created.json()['id']}/messages",
                        json={"messages": [{"role": "user", "content": "hi"}]},
                    )
                ).json()
            stop.set()
    assert "ollama/llama3.2:latest" in handles and "openai/gpt-4o-mini" in handles
    assert reply["messages"][-1]["content"] == "Hi from Ollama"
    assert [r.json["model"] for r in ollama.received] == ["llama3.2:latest"]
    assert openai.received == [] and (openai.listed, ollama.listed) == (1, 1)
