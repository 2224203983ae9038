"""The file tools through the real agent actor in the simulator: an agent attached to a
folder of three files (at most two open) whose model opens a range of one file and greps
them every step, two clients sending turns through two nodes, under storage faults, node
crashes and restarts. Checked afterwards, faults off: every turn is answered, each tool
call has exactly one result in the history, every open_files and grep_files call that
succeeded says what the file holds, and the agent never ends with more than two files
open, each showing the window its last open asked for."""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import Page
from kelpie_trio.service.file_worker import FileSettings
from kelpie_trio.sim import FaultConfig, SimWorld
from kelpie_trio.sim.agent_scenarios import concurrent_turns
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS
from kelpie_trio.sim.llm import send_message, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import AgentCluster, history_of, live_service, new_agent

FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.03), **dict.fromkeys(CRASH_FAULTS, 0.006)})
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
FILES = {f"log{n}.txt": "".join(f"entry {n}.{i} tide kelp\n" for i in range(12)) for n in range(3)}


def _reply(request: Any) -> Any:
    """Open a range of one file and grep all of them, then answer; chosen by the request,
    so a step a crash replays makes the same calls."""
    step = len(request.messages)
    if request.messages[-1].role == "tool":
        return send_message(f"read ({step})", call_id=f"s{step}")
    # Each turn (its user message is "o<client>-<turn>") opens another of the three files.
    asked = next(m.content for m in reversed(request.messages) if m.role == "user")
    client, turn = (int(x) for x in str(asked).lstrip("o").split("-"))
    name = f"docs/log{(client + turn) % 3}.txt"
    return tool_calls(
        (f"o{step}", "open_files", {"file_requests": [
            {"file_name": name, "offset": step % 5, "length": 3}], "request_heartbeat": True}),
        (f"g{step}", "grep_files", {"pattern": f"entry {step % 3}\\.1 tide"}),
    )  # fmt: skip


def test_dst_file_tools_in_turns_under_faults_and_crashes() -> None:
    seen = Counter[str]()

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            home = sim.service("n0")
            folder = (await home.create_folder({"name": "docs"})).id
            for name, text in FILES.items():
                await home.upload_file(folder, name, "text/plain", text.encode())
            while await home.process_some_files(FileSettings()):
                pass
            agent = await new_agent(home, agent_type="memgpt_v2_agent", max_files_open=2)
            await home.attach_folder(agent, folder, True)
            sim.world.faults.enabled = True
            replies = await concurrent_turns(sim, agent, clients=2, turns=3)
            sim.world.faults.enabled = False
            service = live_service(sim)
            held, _ = await service.agent_files(agent, Page(limit=10))
            return replies, await history_of(service, agent), held

        async def main(world: SimWorld) -> Any:
            sim = AgentCluster(world, nodes=2, script=[_reply] * 300, config=TAKEOVER,
                               resume_interval=2.0)  # fmt: skip
            world.faults.enabled = False
            async with trio.open_nursery() as nursery:
                await sim.start(nursery)
                result = await scenario(sim)
                nursery.cancel_scope.cancel()
            return result

        replies, history, held = SimWorld(seed, FAULTS).run(main)
        assert len(replies) == 6 and all(r["stop_reason"] for r in replies.values())
        per_call = Counter(m.tool_call_id for m in history if m.role == "tool")
        assert per_call and all(n == 1 for n in per_call.values()), per_call
        for message in history:
            if message.role != "tool" or message.tool_status != "success":
                continue
            if message.tool_name == "open_files":
                assert message.content.startswith("* Opened docs/log"), message.content
                seen["opens"] += 1
            elif message.tool_name == "grep_files":
                assert "Found 1 total matches across 1 files" in message.content, message.content
                seen["greps"] += 1
        opened = [h for h, _ in held if h.is_open]
        assert len(opened) <= 2, [h.file_name for h in opened]
        for h in opened:
            assert h.view and h.view.startswith("[Viewing"), h.view

    run_seeds(one, 4)
    assert seen["opens"] and seen["greps"], seen
