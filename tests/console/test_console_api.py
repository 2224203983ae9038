"""The web console as the server serves it: the page and its files, open without the
password and holding no data, and the runtime route its runtime view reads."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from quart.testing import QuartClient

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.llms import llm_factory
from kelpie_trio.api.app import create_app
from kelpie_trio.env import RealEnv
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.nursery.transport import HttpTransport
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore

CONSOLE = Path(__file__).parents[2] / "kelpie_trio" / "console"
PASSWORD = "hunter2"
AUTH = {"authorization": f"Bearer {PASSWORD}"}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


async def _node(
    nursery: trio.Nursery,
    password: str | None,
    *,
    config: RuntimeConfig | None = None,
    wrap: Callable[[Any], Any] = lambda actor: actor,
) -> AsyncIterator[QuartClient]:
    """The whole app with its agent runtime: one node, the offline sim model, metrics."""
    env = RealEnv()
    store = MemoryStore(env)
    await nursery.start(store.run)
    service = AgentService(store, env)
    service.background = nursery  # a transferred session goes on in the background
    llm_for = llm_factory(env)
    metrics = RuntimeMetrics()
    dispatcher = Dispatcher(
        node_id="node-console",
        address="http://127.0.0.1:9",  # one node: never forwards
        env=env,
        store=store,
        factory=lambda ctx: wrap(AgentActor(ctx, service, llm_for)),
        transport=HttpTransport(),
        config=config,
        observer=metrics,
    )
    await nursery.start(dispatcher.run)
    app = create_app(store, dispatcher, metrics, service=service, password=password)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture
async def open_node(nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    async for client in _node(nursery, None):
        yield client


@pytest.fixture
async def guarded_node(nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    async for client in _node(nursery, PASSWORD):
        yield client


def _console_files() -> list[str]:
    return sorted(p.name for p in CONSOLE.iterdir() if p.suffix in TYPES)


def _referenced(page: str, scripts: dict[str, str]) -> set[str]:
    """Every file the page and its modules load: /console/ links and relative imports."""
    names = set(re.findall(r'(?:src|href)="/console/([^"]+)"', page))
    for source in scripts.values():
        names |= set(re.findall(r'from "\./([^"]+)"', source))
    return names


@pytest.mark.parametrize("path", ["/", "/console/"])
async def test_the_page_is_served_at_the_root_and_under_console(
    open_node: QuartClient, path: str
) -> None:
    response = await open_node.get(path)
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    page = await response.get_data(as_text=True)
    assert '<script type="module" src="/console/app.js"></script>' in page
    # Only the console's own files may run in the page that holds the bearer token.
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_console_without_the_slash_redirects_to_the_page(open_node: QuartClient) -> None:
    response = await open_node.get("/console")
    assert response.status_code == 308
    assert response.headers["location"].endswith("/console/")


async def test_every_file_the_page_loads_is_served_with_its_content_type(
    open_node: QuartClient,
) -> None:
    page = await (await open_node.get("/")).get_data(as_text=True)
    scripts = {}
    for name in _console_files():
        response = await open_node.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert response.content_type == TYPES[Path(name).suffix], name
        if name.endswith(".js"):
            scripts[name] = await response.get_data(as_text=True)
    referenced = _referenced(page, scripts)
    assert {"app.js", "style.css", "api.js", "sse.js", "agent.js", "runtime.js"} <= referenced
    assert referenced <= set(_console_files()), referenced - set(_console_files())


async def test_no_file_loads_anything_from_another_host() -> None:
    # The console works offline: no CDN, no web font, no analytics. The one absolute URL
    # allowed is SVG's namespace, a name that is never fetched.
    for name in _console_files():
        text = (CONSOLE / name).read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]*", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
        assert not re.search(r"""["'(]//[a-z]""", text), name  # protocol-relative


@pytest.mark.parametrize(
    "path", ["/console/nope.js", "/console/__init__.py", "/console/.hidden.js", "/console/x"]
)
async def test_anything_else_under_console_is_a_json_404(open_node: QuartClient, path: str) -> None:
    response = await open_node.get(path)
    assert response.status_code == 404
    assert await response.get_json() == {"detail": "Not Found"}


def test_every_console_file_is_package_data() -> None:
    """A wheel carries the console: each of its files matches a package-data pattern."""
    pyproject = tomllib.loads((CONSOLE.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["kelpie_trio.console"]
    for path in CONSOLE.iterdir():
        if path.suffix == ".py" or path.name == "__pycache__":
            continue
        assert any(path.match(p) for p in patterns), path.name


async def test_with_a_password_the_console_loads_but_shows_nothing_without_it(
    guarded_node: QuartClient,
) -> None:
    created = await guarded_node.post(
        "/v1/agents/", json={"name": "confidential-agent", "model": "sim/agent"}, headers=AUTH
    )
    assert created.status_code == 200
    for path in ["/", "/console/", *(f"/console/{n}" for n in _console_files())]:
        response = await guarded_node.get(path)
        assert response.status_code == 200, path
        assert b"confidential-agent" not in await response.get_data(), path
    for path in ["/v1/agents/", "/v1/_kelpie/runtime", "/metrics"]:
        refused = await guarded_node.get(path)
        assert refused.status_code == 401, path
        assert await refused.get_json() == {"detail": "Unauthorized"}
        wrong = await guarded_node.get(path, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
        assert (await guarded_node.get(path, headers=AUTH)).status_code == 200, path


async def test_the_runtime_route_shows_the_actor_that_runs_an_agent(
    open_node: QuartClient,
) -> None:
    before = await (await open_node.get("/v1/_kelpie/runtime")).get_json()
    assert before["node_id"] == "node-console"
    assert before["actors"] == [] and before["leases"] == []
    assert [n["node_id"] for n in before["nodes"]] == ["node-console"]

    agent = await (
        await open_node.post("/v1/agents/", json={"name": "a", "model": "sim/agent"})
    ).get_json()
    sent = await open_node.post(
        f"/v1/agents/{agent['id']}/messages",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert sent.status_code == 200

    snap = await (await open_node.get("/v1/_kelpie/runtime")).get_json()
    [actor] = snap["actors"]
    assert actor["key"] == agent["id"]
    assert actor["epoch"] == 1 and actor["mailbox_depth"] == 0
    assert actor["expires_at"] > snap["now"]
    [lease] = snap["leases"]
    assert (lease["key"], lease["node_id"], lease["live"]) == (agent["id"], "node-console", True)
    [node] = snap["nodes"]
    assert node["this_node"] and node["live"] and node["leases"] == 1
    assert snap["counters"]["activations"] == 1
    assert snap["counters"]["active_actors"] == 1
    assert snap["leases_truncated"] is False


async def test_the_runtime_route_is_in_the_openapi_document_and_the_files_are_not(
    open_node: QuartClient,
) -> None:
    spec = await (await open_node.get("/openapi.json")).get_json()
    assert "get" in spec["paths"]["/v1/_kelpie/runtime"]
    schema = spec["paths"]["/v1/_kelpie/runtime"]["get"]["responses"]["200"]["content"]
    assert schema["application/json"]["schema"] == {"$ref": "#/components/schemas/RuntimeSnapshot"}
    snapshot = spec["components"]["schemas"]["RuntimeSnapshot"]["properties"]
    assert snapshot["events"]["items"] == {"$ref": "#/components/schemas/RuntimeEvent"}
    event = spec["components"]["schemas"]["RuntimeEvent"]["properties"]
    assert {"seq", "at", "kind", "key", "run_id", "peer", "iteration", "detail"} <= set(event)
    assert not [p for p in spec["paths"] if p == "/" or p.startswith("/console")]


async def _parked_session(client: QuartClient, agent_id: str) -> str:
    """Send until the sim model calls the tool that waits for approval (drawn with
    probability 0.4 a turn: 40 turns without it is a 1-in-10^9 event); its run id."""
    for _ in range(40):
        sent = await client.post(
            f"/v1/agents/{agent_id}/messages",
            json={"messages": [{"role": "user", "content": "note this"}]},
        )
        reply = await sent.get_json()
        if reply["stop_reason"]["stop_reason"] == "requires_approval":
            return reply["usage"]["run_ids"][0]
    raise AssertionError("no approval request in 40 turns")


async def test_the_runtime_route_lists_a_transfer_out_of_one_actor_and_into_another(
    open_node: QuartClient,
) -> None:
    careful = {
        "model": "sim/agent",
        "tools": ["archival_memory_insert"],
        "tool_rules": [{"type": "requires_approval", "tool_name": "archival_memory_insert"}],
    }
    source = await (await open_node.post("/v1/agents/", json={"name": "a", **careful})).get_json()
    target = await (await open_node.post("/v1/agents/", json={"name": "b", **careful})).get_json()
    session = await _parked_session(open_node, source["id"])
    before = await (await open_node.get("/v1/_kelpie/runtime")).get_json()
    assert before["events"] == [] and before["events_recorded"] == 0

    moved = await open_node.post(
        f"/v1/agents/{source['id']}/sessions/{session}/transfer",
        json={"target_agent_id": target["id"]},
    )
    assert moved.status_code == 200
    assert (await moved.get_json())["agent_id"] == target["id"]
    # The target takes the session over in the background: it waits there, parked.
    with trio.fail_after(10):
        while not (await (await open_node.get(f"/v1/agents/{target['id']}")).get_json())[
            "pending_approval"
        ]:
            await trio.testing.wait_all_tasks_blocked()

    snap = await (await open_node.get("/v1/_kelpie/runtime")).get_json()
    assert snap["events_recorded"] == 2
    into, out = snap["events"]  # newest first
    assert (out["seq"], out["kind"], out["key"], out["run_id"], out["peer"]) == (
        1, "transfer_out", source["id"], session, target["id"],
    )  # fmt: skip
    assert (into["seq"], into["kind"], into["key"], into["run_id"], into["peer"]) == (
        2, "transfer_in", target["id"], session, source["id"],
    )  # fmt: skip
    assert snap["now"] - 60 < out["at"] <= into["at"] <= snap["now"]


class _Failing:
    """An actor whose every message fails: the runtime restarts it each time."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def on_activate(self) -> None:
        await self.actor.on_activate()

    async def on_deactivate(self) -> None:
        await self.actor.on_deactivate()

    async def handle(self, message: Any) -> Any:
        raise RuntimeError("broken on purpose")


async def test_the_runtime_route_keeps_only_the_newest_events(nursery: trio.Nursery) -> None:
    config = RuntimeConfig(recent_events=4, restart_backoff=0.0)
    async for client in _node(nursery, None, config=config, wrap=_Failing):
        agent = await (
            await client.post("/v1/agents/", json={"name": "a", "model": "sim/agent"})
        ).get_json()
        for _ in range(3):  # three tries a message, each a restart
            failed = await client.post(
                f"/v1/agents/{agent['id']}/messages",
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            assert failed.status_code >= 500
        snap = await (await client.get("/v1/_kelpie/runtime")).get_json()
        assert snap["events_recorded"] == 9
        assert [e["seq"] for e in snap["events"]] == [9, 8, 7, 6]
        assert {(e["kind"], e["key"], e["detail"]) for e in snap["events"]} == {
            ("restart", agent["id"], "handler failed: RuntimeError")
        }
