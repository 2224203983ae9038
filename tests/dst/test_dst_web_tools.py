"""fetch_webpage against the real agent actor in the simulator: a scripted web (SimWeb)
whose servers hang and reset connections, storage faults, node crashes and restarts.
Checked afterwards, faults off: each tool call has exactly one result in the history,
a fetch whose result is stored is never made again, a hung server ends at the tool's
time limit as a tool error (virtual time), and every turn is answered."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import trio

from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.agent_scenarios import concurrent_turns
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS
from kelpie_trio.sim.llm import send_message, tool_calls
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.sim.web import SimPage, SimWeb
from kelpie_trio.tools.web import WebSettings, WebTools
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
    send_anywhere,
)

SETTINGS = WebSettings(timeout=4.0)
FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.03), **dict.fromkeys(CRASH_FAULTS, 0.006)},
    op_rates={
        FaultType.TOOL_TIMEOUT: {"web.get": 0.15},
        FaultType.TOOL_FAIL: {"web.get": 0.15},
    },
)
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
HOSTS = {"kelp.example": ["93.184.216.34"]}
TURNS = 4


def _page(key: str) -> Any:
    # A page naming the fetch that served it: a stored result tells which fetch it was.
    return lambda index: SimPage(f"kelp page {key} (fetch #{index})", "text/plain")


PAGES = {f"http://kelp.example/{k}{s}": _page(f"{k}{s}") for k in range(2, 60) for s in "ab"}


class WebCluster(AgentCluster):
    """The agent harness with one scripted web behind every node's web tools."""

    def __init__(self, world: Any, *, web: SimWeb | None = None, **kw: Any) -> None:
        super().__init__(world, **kw)
        self.web = web or SimWeb(world, PAGES, hosts=HOSTS)

    def prepare_service(self, service: AgentService) -> None:
        service.web = WebTools(self.web, SETTINGS)


def simulate_web(
    seed: int, scenario: Any, faults: FaultConfig = FAULTS, **cluster: Any
) -> tuple[WebCluster, Any]:
    async def main(world: SimWorld) -> tuple[WebCluster, Any]:
        sim = WebCluster(world, **cluster)
        world.faults.enabled = False
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            nursery.cancel_scope.cancel()
        return sim, result

    return SimWorld(seed, faults).run(main)


def _reply(request: Any) -> Any:
    """Two fetches at once per step, then an answer; chosen by the request, so a step a
    crash replays fetches the same URLs (the same logical calls)."""
    step = len(request.messages)
    if request.messages[-1].role == "tool":
        return send_message(f"read ({step})", call_id=f"s{step}")
    return tool_calls(
        (f"a{step}", "fetch_webpage",
         {"url": f"http://kelp.example/{step}a", "request_heartbeat": True}),
        (f"b{step}", "fetch_webpage", {"url": f"http://kelp.example/{step}b"}),
    )  # fmt: skip


def test_dst_fetch_webpage_results_are_stored_once_under_faults_and_crashes() -> None:
    timeouts = Counter[str]()

    def one(seed: int) -> None:
        async def scenario(sim: WebCluster) -> Any:
            home = sim.service("n0")
            agent = await new_agent(home, agent_type="memgpt_v2_agent",
                                    tools=["fetch_webpage", "web_search"])  # fmt: skip
            sim.world.faults.enabled = True
            replies = await concurrent_turns(sim, agent, clients=2, turns=TURNS)
            sim.world.faults.enabled = False
            return replies, await history_of(live_service(sim), agent)

        sim, (replies, history) = simulate_web(
            seed, scenario, nodes=2, script=[_reply] * 300, config=TAKEOVER,
            resume_interval=2.0,
        )  # fmt: skip
        fetched: dict[str, list[int]] = defaultdict(list)
        for call in sim.web.calls:
            fetched[call.url].append(call.index)
        results = [m for m in history if m.role == "tool" and m.tool_name == "fetch_webpage"]
        assert results, "no fetch's result was stored"
        for message in results:
            if message.tool_status == "success":
                index = int(message.content.rsplit("#", 1)[1].rstrip(")"))
                url = sim.web.calls[index].url
                later = [i for i in fetched[url] if i > index]
                assert not later, f"{url}: stored the result of fetch #{index}, then ran {later}"
            else:  # the two faults of a web server, told as the tool's error
                assert ("took longer than 4 s" in message.content
                        or "connection was reset" in message.content), message.content  # fmt: skip
                timeouts["hung" if "took longer" in message.content else "reset"] += 1
        # One result per tool call, whatever the retries and crashes.
        per_call = Counter(m.tool_call_id for m in history if m.role == "tool")
        assert all(n == 1 for n in per_call.values()), per_call
        assert [m.seq for m in history] == list(range(len(history)))
        users = Counter(m.content for m in history
                        if m.role == "user" and not m.content.startswith("{"))  # fmt: skip
        assert set(users) == set(replies) and all(n == 1 for n in users.values())

    if across_seeds(run_seeds(one, 5), 5):
        assert timeouts["hung"] and timeouts["reset"], timeouts


def test_dst_a_node_crashing_between_two_fetches_runs_only_the_unfinished_one() -> None:
    """The step fetches two pages; the node crashes as the second fetch starts (the
    first's result stored): another node resumes the step and fetches the second only."""

    def one(seed: int) -> None:
        async def scenario(sim: WebCluster) -> Any:
            home = sim.service("n0")
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tools=["fetch_webpage"])
            crashed: list[str] = []

            def crash_at_b(url: str) -> None:
                if url.endswith("b") and not crashed:
                    crashed.append(url)
                    sim.crash("n0")

            sim.web.on_get = crash_at_b
            body = {"messages": [{"role": "user", "content": "go", "otid": "o1"}],
                    "max_steps": 4}  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                reply = await send_anywhere(sim, agent, body, first=0)
                nursery.cancel_scope.cancel()
            assert reply["stop_reason"]["stop_reason"] == "end_turn", reply["stop_reason"]
            return crashed, await history_of(live_service(sim), agent)

        sim, (crashed, history) = simulate_web(
            seed, scenario, nodes=2, script=[_reply] * 20, config=TAKEOVER,
            resume_interval=1.0,
        )  # fmt: skip
        assert crashed, "the crash point was never reached"
        urls = [c.url for c in sim.web.calls]
        assert urls == ["http://kelp.example/2a", crashed[0]], urls  # each fetched once
        results = [m for m in history if m.role == "tool" and m.tool_name == "fetch_webpage"]
        assert [m.content for m in results] == [
            "kelp page 2a (fetch #0)", "kelp page 2b (fetch #1)"
        ]  # fmt: skip

    run_seeds(one, 3)


def test_dst_a_hung_web_server_ends_at_the_time_limit_as_a_tool_error() -> None:
    hang = FaultConfig({}, op_rates={FaultType.TOOL_TIMEOUT: {"web.get": 1.0}})

    def one(seed: int) -> None:
        async def scenario(sim: WebCluster) -> Any:
            home = sim.service("n0")
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tools=["fetch_webpage"])
            sim.world.faults.enabled = True
            started = trio.current_time()
            body = {"messages": [{"role": "user", "content": "read it"}], "max_steps": 3}
            reply = await home.send_message(agent, body)
            return reply, trio.current_time() - started

        sim, (reply, took) = simulate_web(seed, scenario, faults=hang, script=[_reply] * 4)
        returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
        assert [r["status"] for r in returns] == ["error", "error", "success"], returns
        assert all("took longer than 4 s: gave up" in r["tool_return"] for r in returns[:2])
        assert reply["stop_reason"]["stop_reason"] == "end_turn", reply["stop_reason"]
        # The two hung fetches of the step run one after the other, each cut at 4 s.
        assert 8.0 <= took < 12.0, took
        assert sim.web.calls == []  # a hung server never served anything

    run_seeds(one, 2)


def test_dst_a_page_is_fetched_as_text_and_redirects_are_followed() -> None:
    html = ("<html><head><title>Kelp</title><script>var tracking = 1;</script></head><body>"
            "<article><h1>Giant kelp</h1><p>Giant kelp grows up to half a metre a day "
            "in cold, clear water along rocky coasts.</p></article></body></html>")  # fmt: skip

    def one(seed: int) -> None:
        async def scenario(sim: WebCluster) -> Any:
            home = sim.service("n0")
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tools=["fetch_webpage"])
            body = {"messages": [{"role": "user", "content": "read it"}], "max_steps": 3}
            return await home.send_message(agent, body)

        def world_web(world: Any) -> SimWeb:
            return SimWeb(world, {
                "http://kelp.example/2a": SimPage("", status=301, location="/kelp"),
                "http://kelp.example/kelp": SimPage(html),
                "http://kelp.example/2b": SimPage("", status=302, location="http://10.0.0.5/"),
            }, hosts=HOSTS)  # fmt: skip

        async def main(world: SimWorld) -> tuple[WebCluster, Any]:
            sim = WebCluster(world, web=world_web(world), script=[_reply] * 4)
            async with trio.open_nursery() as nursery:
                await sim.start(nursery)
                result = await scenario(sim)
                nursery.cancel_scope.cancel()
            return sim, result

        sim, reply = SimWorld(seed, FaultConfig({})).run(main)
        returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
        assert [r["status"] for r in returns] == ["success", "error", "success"], returns
        text = returns[0]["tool_return"]
        assert "Giant kelp grows up to half a metre a day" in text
        assert "tracking" not in text and "<p>" not in text
        assert "10.0.0.5" in returns[1]["tool_return"]
        assert "KELPIE_WEB_ALLOW_PRIVATE" in returns[1]["tool_return"]
        assert [c.url for c in sim.web.calls] == [
            "http://kelp.example/2a", "http://kelp.example/kelp", "http://kelp.example/2b"
        ]  # fmt: skip

    run_seeds(one, 1)
