"""MCP tools against the real agent actor in the simulator: SimMcpClient behind the
node's McpSessions (one per node, in the node's nursery, so a crashed node's sessions
end with it), with MCP servers that hang and crash (at connect and mid-call), storage
faults and node crashes with restarts. Checked afterwards, faults off: every stored
MCP result came from a call that was not made again after it (a call runs at least
once, never again once its result is stored), each tool call has one result, every
send is stored once, and no session is left open by a crashed node."""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from typing import Any

import trio

from kelpie_trio.errors import ServiceError
from kelpie_trio.mcp import McpSessions, McpSettings
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.agent_scenarios import concurrent_turns
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS
from kelpie_trio.sim.llm import send_message, text, tool_calls
from kelpie_trio.sim.mcp import SimMcpClient, SimMcpTool
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
    send_anywhere,
)

FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.03), **dict.fromkeys(CRASH_FAULTS, 0.006)},
    op_rates={
        FaultType.TOOL_TIMEOUT: {"mcp.call": 0.15, "mcp.connect": 0.1},
        FaultType.TOOL_FAIL: {"mcp.call": 0.2, "mcp.connect": 0.1},
    },
)
SETTINGS = McpSettings(connect_timeout=2.0, list_timeout=2.0, call_timeout=3.0,
                       idle_timeout=20.0, backoff_base=0.5, backoff_max=4.0)  # fmt: skip
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
TOOLS = {
    "lookup": SimMcpTool(
        "Look a key up.",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
        lambda args: f"value of {args.get('key')}",
    )
}
TURNS = 5


class McpCluster(AgentCluster):
    """The agent harness with each node's MCP sessions, started in the node's nursery."""

    def __init__(self, world: Any, **kw: Any) -> None:
        super().__init__(world, **kw)
        self.mcp = SimMcpClient(world, TOOLS)
        self.sessions: list[McpSessions] = []

    async def start_node(self, name: str) -> AgentService:
        service = await super().start_node(name)
        service.mcp = McpSessions(self.mcp, SETTINGS)
        self.sessions.append(service.mcp)
        # A new incarnation may have crashed already (its nursery closed to new tasks).
        with contextlib.suppress(RuntimeError):
            await service.background.start(service.mcp.run)
        return service


def simulate_mcp(
    seed: int, scenario: Any, faults: FaultConfig = FAULTS, **cluster: Any
) -> tuple[McpCluster, Any]:
    """simulate_cluster (agent_harness.py) with McpCluster; faults start off. The world
    is at `sim.world` (its trace hash: `sim.world.hexdigest()`)."""

    async def main(world: SimWorld) -> tuple[McpCluster, Any]:
        sim = McpCluster(world, **cluster)
        world.faults.enabled = False
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            nursery.cancel_scope.cancel()
        return sim, result

    return SimWorld(seed, faults).run(main)


def _reply(request: Any) -> Any:
    """Two lookups at once per turn (a crash between their results leaves one stored and
    one pending), then an answer; chosen by the request, so a step that a crash replays
    asks with the same keys (the same logical calls)."""
    step = len(request.messages)
    if request.messages[-1].role == "tool":
        return send_message(f"found ({step})", call_id=f"s{step}")
    return tool_calls(
        (f"a{step}", "lookup", {"key": f"k{step}a", "request_heartbeat": True}),
        (f"b{step}", "lookup", {"key": f"k{step}b"}),
    )


def test_dst_mcp_tool_calls_never_repeat_once_their_result_is_stored() -> None:
    def one(seed: int) -> None:
        async def scenario(sim: McpCluster) -> Any:
            home = sim.service("n0")
            server = await home.create_mcp_server({"server_name": "kb", "config": {
                "mcp_server_type": "stdio", "command": "kb-server", "args": []}})  # fmt: skip
            [tool] = await home.list_mcp_tools(server.id)
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            sim.world.faults.enabled = True
            replies = await concurrent_turns(sim, agent, clients=3, turns=TURNS)
            sim.world.faults.enabled = False
            await trio.sleep(SETTINGS.idle_timeout + 1)  # idle sessions close
            return replies, await history_of(live_service(sim), agent)

        sim, (replies, history) = simulate_mcp(
            seed, scenario, nodes=2, script=[_reply] * 300, config=TAKEOVER,
            resume_interval=2.0,
        )  # fmt: skip
        calls = sim.mcp.calls
        by_key: dict[str, list[int]] = defaultdict(list)
        for call in calls:
            by_key[call.arguments["key"]].append(call.index)
        results = [m for m in history if m.role == "tool" and "(call #" in (m.content or "")]
        for message in results:
            index = int(message.content.rsplit("#", 1)[1].rstrip(")"))
            key = calls[index].arguments["key"]
            later = [i for i in by_key[key] if i > index]
            assert not later, f"{key}: stored the result of call #{index}, then ran {later}"
        # One result per tool call, whatever the retries.
        per_call = Counter(m.tool_call_id for m in history if m.role == "tool")
        assert all(n == 1 for n in per_call.values()), per_call
        assert [m.seq for m in history] == list(range(len(history)))
        users = Counter(m.content for m in history
                        if m.role == "user" and not m.content.startswith("{"))  # fmt: skip
        assert set(users) == set(replies) and all(n == 1 for n in users.values())
        assert results, "no MCP call's result was stored"
        assert sim.mcp.open == 0, "a session outlived its node or its idle time"

    run_seeds(one, 6)


def test_dst_a_node_crashing_between_two_mcp_results_runs_only_the_unfinished_one() -> None:
    """The step calls two MCP tools; the node crashes as the second starts (the first's
    result stored): another node resumes the step and runs the second only."""

    def one(seed: int) -> None:
        async def scenario(sim: McpCluster) -> Any:
            home = sim.service("n0")
            server = await home.create_mcp_server({"server_name": "kb", "config": {
                "mcp_server_type": "stdio", "command": "kb-server", "args": []}})  # fmt: skip
            [tool] = await home.list_mcp_tools(server.id)
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            crashed: list[str] = []

            def crash_at_b(_server: Any, _name: str, args: dict[str, Any]) -> None:
                if args["key"].endswith("b") and not crashed:
                    crashed.append(args["key"])
                    sim.crash("n0")

            sim.mcp.on_call = crash_at_b
            body = {"messages": [{"role": "user", "content": "go", "otid": "o1"}],
                    "max_steps": 4}  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                reply = await send_anywhere(sim, agent, body, first=0)
                nursery.cancel_scope.cancel()
            assert reply["stop_reason"]["stop_reason"] == "end_turn", reply["stop_reason"]
            return crashed, await history_of(live_service(sim), agent)

        sim, (crashed, history) = simulate_mcp(
            seed, scenario, nodes=2, script=[_reply] * 20, config=TAKEOVER,
            resume_interval=1.0,
        )  # fmt: skip
        assert crashed, "the crash point was never reached"
        keys = [c.arguments["key"] for c in sim.mcp.calls]
        [a_key] = {k for k in keys if k.endswith("a")}
        assert keys.count(a_key) == 1, keys  # stored before the crash: never again
        assert keys.count(crashed[0]) == 1, keys  # cut short before it ran: ran once, after
        results = [m for m in history if m.role == "tool"]
        assert len({m.tool_call_id for m in results}) == len(results)

    run_seeds(one, 3)


def test_dst_tool_rules_apply_to_mcp_tools() -> None:
    """exit_loop on an MCP tool ends the turn after the step that calls it (stop reason
    tool_rule): no heartbeat, no further LLM call."""

    def one(seed: int) -> None:
        async def scenario(sim: McpCluster) -> Any:
            home = sim.service("n0")
            server = await home.create_mcp_server({"server_name": "kb", "config": {
                "mcp_server_type": "stdio", "command": "kb-server", "args": []}})  # fmt: skip
            [tool] = await home.list_mcp_tools(server.id)
            rules = [{"type": "exit_loop", "tool_name": "lookup"}]
            agent = await new_agent(home, tool_ids=[tool.id], tool_rules=rules,
                                    include_base_tool_rules=False)  # fmt: skip
            body = {"messages": [{"role": "user", "content": "go"}], "max_steps": 4}
            return await home.send_message(agent, body)

        sim, reply = simulate_mcp(seed, scenario, script=[_reply] * 4)
        assert reply["stop_reason"]["stop_reason"] == "tool_rule", reply["stop_reason"]
        returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
        assert [r["status"] for r in returns] == ["success", "success"]
        assert [c.arguments["key"] for c in sim.mcp.calls] == ["k2a", "k2b"]

    run_seeds(one, 2)


def test_dst_an_mcp_tool_that_needs_approval_runs_only_once_approved() -> None:
    """A tool from an MCP server marked as needing approval is not called: the turn parks
    with an approval request; a denied call never reaches the server, an approved one
    reaches it once, and the turn goes on (storage faults throughout)."""
    faults = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.03))

    def one(seed: int) -> None:
        async def scenario(sim: McpCluster) -> Any:
            home = sim.service("n0")
            server = await home.create_mcp_server({"server_name": "kb", "config": {
                "mcp_server_type": "stdio", "command": "kb-server", "args": []}})  # fmt: skip
            [tool] = await home.list_mcp_tools(server.id)
            agent = await new_agent(home, tool_ids=[tool.id])
            await home.set_tool_approval(agent, "lookup", True)
            sim.world.faults.enabled = True
            seen = []
            for i, approve in enumerate((False, True)):
                body = {"messages": [{"role": "user", "content": f"go {i}", "otid": f"g{i}"}]}
                parked = await _until_answered(home, agent, body)
                [request] = [m for m in parked["messages"]
                             if m["message_type"] == "approval_request_message"]  # fmt: skip
                calls_before = len(sim.mcp.calls)
                answer = {"messages": [{"type": "approval", "otid": f"a{i}", "approvals": [
                    {"type": "approval", "tool_call_id": request["tool_call"]["tool_call_id"],
                     "approve": approve, "reason": "no"}]}]}  # fmt: skip
                done = await _until_answered(home, agent, answer)
                seen.append((parked, calls_before, done, len(sim.mcp.calls)))
            sim.world.faults.enabled = False
            return seen

        _, seen = simulate_mcp(seed, scenario, faults, script=[_one_lookup] * 20)
        (parked, before, denied, after_deny), (_, before2, approved, after_approve) = seen
        assert parked["stop_reason"]["stop_reason"] == "requires_approval"
        assert before == 0 and after_deny == 0  # parked and denied: the server saw nothing
        returns = [m for m in denied["messages"] if m["message_type"] == "tool_return_message"]
        assert [r["status"] for r in returns] == ["error"]
        assert before2 == 0 and after_approve == 1  # approved: called once, faults or not
        returns = [m for m in approved["messages"] if m["message_type"] == "tool_return_message"]
        assert [r["status"] for r in returns] == ["success"]
        assert approved["stop_reason"]["stop_reason"] == "end_turn"

    run_seeds(one, 6)


def _one_lookup(request: Any) -> Any:
    step = len(request.messages)
    if request.messages[-1].role == "tool":
        return text(f"found ({step})")
    return tool_calls((f"a{step}", "lookup", {"key": f"k{step}"}))


async def _until_answered(service: AgentService, agent: str, body: dict) -> dict:
    """A client retrying a send (the otid makes a retry join its first attempt)."""
    for _ in range(50):
        try:
            return await service.send_message(agent, body)
        except ServiceError as error:
            if error.status < 500:
                raise
        except StoreError:  # a store fault: the client sends again
            pass
        await trio.sleep(0.5)
    raise AssertionError("no answer after 50 tries")


def test_dst_mcp_servers_and_their_tools_stay_consistent_under_storage_faults() -> None:
    """Servers created, refreshed (while the server's tool list changes) and deleted at
    once, under storage faults (unknown commit results included) and MCP faults: a
    request either happens whole or is refused; afterwards every external_mcp tool has
    its server and mapping, every mapping its tool, every server its name and index
    entries, and each tool listed is held by exactly one server (tool names are unique;
    every server here lists the same tools, so a second server's sync is refused whole
    with a ToolNameClash, a 409 naming the first)."""
    from kelpie_trio.service.mcp_servers import (
        MCP_SERVER_INDEX,
        MCP_SERVER_NAMES,
        MCP_SERVERS,
        MCP_TOOLS,
        ToolNameClash,
    )
    from kelpie_trio.service.tools import TOOLS
    from kelpie_trio.storage import StoreError
    from kelpie_trio.storage.base import Transaction

    # No crashes here: the node is the API's, and every request must end answered.
    faults = FAULTS.with_rates(dict.fromkeys(STORAGE_FAULTS, 0.08)).without(CRASH_FAULTS)
    refusals: Counter[str] = Counter()
    extra = SimMcpTool("Extra.", {"type": "object", "properties": {}}, lambda args: "x")

    def one(seed: int) -> None:
        async def scenario(sim: McpCluster) -> Any:
            home = sim.service("n0")
            sim.world.faults.enabled = True
            refused: Counter[str] = Counter()

            async def attempt(fn: Any, *args: Any) -> None:
                try:
                    await fn(*args)
                except (ServiceError, StoreError) as error:
                    refused[type(error).__name__] += 1

            async def create(i: int) -> None:
                body = {"server_name": f"s{i % 3}", "config": {
                    "mcp_server_type": "stdio", "command": "kb", "args": []}}  # fmt: skip
                await attempt(home.create_mcp_server, body)

            async def churn(c: int) -> None:
                for i in range(20):
                    await trio.sleep(0.2)
                    if (i + c) % 2:
                        sim.mcp.tools.pop("extra", None)
                    else:
                        sim.mcp.tools["extra"] = extra
                    await create(i + c)
                    servers = await _servers(home)
                    for n, server in enumerate(servers):
                        if (i + n + c) % 7 == 0:
                            await attempt(home.delete_mcp_server, server.id)
                        else:
                            await attempt(home.refresh_mcp_server, server.id)

            async with trio.open_nursery() as nursery:
                for c in range(3):
                    nursery.start_soon(churn, c)
            sim.world.faults.enabled = False
            await trio.sleep(2)  # commits in flight land or fail by now
            for server in await _servers(home):  # a last sync, faults off
                try:  # one server holds the tools; the others' syncs are refused whole
                    await home.refresh_mcp_server(server.id)
                except ToolNameClash:
                    refused["last ToolNameClash"] += 1
            listed = set(sim.mcp.tools)

            async def check(tr: Transaction) -> None:
                servers = {MCP_SERVERS.unpack(k)[0] for k, _ in
                           await tr.get_prefix(MCP_SERVERS.key())}  # fmt: skip
                index = {MCP_SERVER_INDEX.unpack(k)[1] for k, _ in
                         await tr.get_prefix(MCP_SERVER_INDEX.key())}  # fmt: skip
                names = {v.decode() for _, v in await tr.get_prefix(MCP_SERVER_NAMES.key())}
                assert servers == index == names, (servers, index, names)
                mapped = [MCP_TOOLS.unpack(k) for k, _ in await tr.get_prefix(MCP_TOOLS.key())]
                assert {s for s, _ in mapped} <= servers
                held: list[str] = []  # tool names are unique: one server holds each
                for server_id in servers:
                    tools = await home._server_tools(tr, server_id)
                    assert all(sync_server(t) == server_id for t in tools)
                    held += [t.name for t in tools]
                assert sorted(held) == (sorted(listed) if servers else []), held
                stored = [convert_tool(v) for _, v in await tr.get_prefix(TOOLS.key())]
                mcp_tools = {t.id for t in stored if t.tool_type == "external_mcp"}
                assert mcp_tools == {t for _, t in mapped}

            await home.store.transact(check)
            return refused

        _, refused = simulate_mcp(seed, scenario, faults)
        refusals.update(refused)

    if run_seeds(one, 4) > 1:
        assert refusals, "no request was refused: the faults never reached the service"
        assert refusals["ToolNameClash"], "no second server ever listed a taken name"


async def _servers(service: AgentService) -> list[Any]:
    return await service.list_mcp_servers()


def sync_server(tool: Any) -> str | None:
    from kelpie_trio.mcp.sync import server_of

    return server_of(tool)


def convert_tool(raw: bytes) -> Any:
    from kelpie_trio.models import convert
    from kelpie_trio.models.tools import Tool

    return convert.decode_record(raw, Tool)


def test_dst_mcp_the_same_seed_replays_the_same_run() -> None:
    """Hangs, crashes, timeouts and backoff of MCP sessions are on the virtual clock and
    the seed: one seed, one trace hash and the same MCP calls; another seed differs."""

    async def scenario(sim: McpCluster) -> Any:
        home = sim.service("n0")
        server = await home.create_mcp_server({"server_name": "kb", "config": {
            "mcp_server_type": "stdio", "command": "kb-server", "args": []}})  # fmt: skip
        [tool] = await home.list_mcp_tools(server.id)
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        sim.world.faults.enabled = True
        for i in range(3):
            body = {"messages": [{"role": "user", "content": f"t{i}"}], "max_steps": 4}
            await home.send_message(agent, body)
        return None

    faults = FAULTS.without(CRASH_FAULTS)  # one node: it must live to answer

    def run(seed: int) -> tuple[str, list[Any]]:
        sim, _ = simulate_mcp(seed, scenario, faults, script=[_reply] * 20)
        return sim.world.hexdigest(), [(c.name, c.arguments, c.at) for c in sim.mcp.calls]

    first = run(11)
    assert run(11) == first
    assert run(12)[0] != first[0]
