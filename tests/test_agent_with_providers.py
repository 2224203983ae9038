"""A real node whose agents talk to OpenAI-format and Anthropic-format providers over loopback
HTTP (fakes scripted per test): the agent edits its memory through a tool call, then answers."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest
import trio

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import anthropic_message, openai_completion, serving


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
