"""The builtin web tools through a real node and letta-client: an agent created with
tools=["web_search", "fetch_webpage"] (as Letta's CLI makes them) reads a page of a local
server when the operator allows private addresses, and a web search without an Exa key
is a tool error that says what to set."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from kelpie_trio.tools.web import WebSettings
from tests.llm.fake_providers import FakeProvider, openai_completion, serving
from tests.tools.test_web import KELP, LocalServer
from tests.tools.test_web import serving as web_serving


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, web: WebSettings
) -> AsyncIterator[tuple[str, FakeProvider]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1, web=web)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield dispatcher.address, fake
        finally:
            stop.set()


async def test_an_agent_with_the_web_tools_reads_a_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = {"/kelp": (200, {"Content-Type": "text/html; charset=utf-8"}, KELP)}
    with trio.fail_after(60):
        async with (
            web_serving(routes) as page,
            node(tmp_path, monkeypatch, WebSettings(allow_private=True)) as (url, fake),
        ):
            letta = AsyncLetta(base_url=url, max_retries=0)
            agent = await letta.agents.create(
                model="openai/gpt-4o-mini", tools=["web_search", "fetch_webpage"]
            )
            tools = {t.name: t for t in agent.tools}
            assert {"web_search", "fetch_webpage"} <= set(tools)
            assert tools["fetch_webpage"].tool_type == "letta_builtin"

            call = ("call_1", "fetch_webpage", {"url": f"{page.url}/kelp"})
            fake.script(openai_completion(tool_calls=[call]), openai_completion("Read it."))
            reply = await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "read the kelp page"}]
            )
            [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert returned.status == "success", returned.tool_return
            assert "Giant kelp grows up to half a metre a day" in returned.tool_return
            assert "tracking" not in returned.tool_return
            assert page.requests == ["/kelp"]
            # The model saw the page's text as the tool's result.
            sent = fake.received[-1].json["messages"]
            assert any(
                m["role"] == "tool" and "Giant kelp grows" in str(m["content"]) for m in sent
            )

            call = ("call_2", "web_search", {"query": "giant kelp"})
            fake.script(openai_completion(tool_calls=[call]), openai_completion("No search."))
            reply = await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "search for kelp"}]
            )
            [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert returned.status == "error"
            assert "web search is not configured" in returned.tool_return
            assert "EXA_API_KEY" in returned.tool_return


async def test_without_the_allow_setting_a_local_page_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: LocalServer
    with trio.fail_after(60):
        async with (
            web_serving({}) as server,
            node(tmp_path, monkeypatch, WebSettings()) as (url, fake),
        ):
            letta = AsyncLetta(base_url=url, max_retries=0)
            agent = await letta.agents.create(model="openai/gpt-4o-mini", tools=["fetch_webpage"])
            call = ("call_1", "fetch_webpage", {"url": f"{server.url}/kelp"})
            fake.script(openai_completion(tool_calls=[call]), openai_completion("Refused."))
            reply = await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "read it"}]
            )
            [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert returned.status == "error"
            assert "not public" in returned.tool_return
            assert "KELPIE_WEB_ALLOW_PRIVATE" in returned.tool_return
            assert reply.stop_reason.stop_reason == "end_turn"
    assert server.requests == []
