"""Background runs in the simulator: numbered streams that resume on any node.

A streamed send with `background: true` numbers its events (`seq_id`); a client that
drops and resumes with `starting_after=<the last seq_id it saw>`, on any node, after
crashes and under storage faults, sees every event of the run exactly once, in order,
ending with its stop reason (service/run_stream.py).
"""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.agent.history import decode_messages
from kelpie_trio.agent.messages import Message
from kelpie_trio.errors import ServiceError
from kelpie_trio.service import AgentService
from kelpie_trio.service.run_positions import Cursor
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, send_message, text, tool_call, tool_calls
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.storage import keys
from tests.dst.agent_harness import (
    CLEAN,
    AgentCluster,
    new_agent,
    page,
    restart_crashed,
    simulate,
    simulate_cluster,
)

STEPS = [  # a thought and a call; two calls at once; one call; the answer
    tool_call(
        "memory_insert",
        {"label": "human", "new_str": "likes tea"},
        call_id="c1",
        reasoning="Worth keeping.",
    ),
    tool_calls(
        ("c2", "memory_insert", {"label": "human", "new_str": "lives by the sea"}),
        ("c3", "memory_insert", {"label": "human", "new_str": "has a dog"}),
    ),
    tool_call("memory_insert", {"label": "human", "new_str": "plays chess"}, call_id="c4"),
    text("Noted, all four."),
]


def by_progress(request: Any) -> Any:
    """STEPS as a function of how far the turn got (replies since the user's message),
    so a step asked again after a crash gets the same reply; other turns get a
    greeting."""
    depth, said = 0, ""
    for message in reversed(request.messages):
        if message.role == "user":
            said = str(message.content)
            break
        depth += message.role == "assistant"
    if "remember" not in said:
        return text("Hi.")
    return STEPS[min(depth, len(STEPS) - 1)]


async def read_all(events: Any) -> list[dict]:
    return [event async for event in events]


def text_of(event: dict) -> str | None:
    if event["message_type"] == "reasoning_message":
        return event["reasoning"]
    if event["message_type"] == "assistant_message":
        return event["content"]
    return None


def assemble(events: list[dict]) -> dict[tuple[int, int, str | None], Any]:
    """What a client makes of a stream: per message (its place, slot and id), the text
    its deltas add up to (appended by id, as Letta's clients do), or the event itself."""
    views: dict[tuple[int, int, str | None], Any] = {}
    for event in positioned(events):
        at = Cursor.of(event["seq_id"])
        key = (at.place, at.slot, event.get("id"))
        text = text_of(event)
        if key in views:
            assert text is not None and isinstance(views[key], str), event  # never twice
            views[key] += text
        else:
            views[key] = text if text is not None else event
    return views


def check_seen_once(seen: list[dict], whole: list[dict]) -> None:
    """`seen` (a client's events, over drops and resumes) is `whole` (the run's stream
    read from the store at the end): positions only grow, every message's text is there
    exactly once, and nothing else but the start of a reply that was never stored."""
    positions = [e["seq_id"] for e in positioned(seen)]
    assert positions == sorted(set(positions)), "positions only grow, none twice"
    views, stored = assemble(seen), assemble(whole)
    for key, shown in stored.items():
        assert views.get(key) == shown, (key, views.get(key), shown)
    ids = {key[2] for key in stored}
    extra = [key for key in views if key not in stored]
    assert all(key[2] not in ids for key in extra), extra  # a lost reply's start only


def check_asked_again_not_streamed(seen: list[dict], stored: list[Message], run_id: str) -> None:
    """Where the client saw the start of a reply that was never stored (its node crashed),
    the reply stored at that place was asked again: it must not have been streamed, so a
    stream never takes it for the rest of the lost one (the tags of two ids may be equal)."""
    mine = [m for m in stored if m.run_id == run_id]
    first = min(m.seq for m in mine)
    by_seq = {m.seq: m for m in mine}
    stored_ids = {m.id for m in mine}
    for place, _, message_id in assemble(seen):
        again = by_seq.get(first + place)
        if message_id is not None and message_id not in stored_ids and again is not None:
            assert again.streamed is False, (place, message_id, again.id, again.streamed)


def positioned(events: list[dict]) -> list[dict]:
    """What a client keeps of a stream: the events at positions (not pings, not the
    notice that this node gave up on a stream)."""
    return [e for e in events if e.get("seq_id") is not None and e["message_type"] != "ping"]


def test_background_stream_numbers_the_runs_stored_messages_then_its_ending() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        body = {"input": "remember", "background": True}
        live = await read_all(await service.open_stream(agent, body))
        run_id = live[0]["run_id"]
        stored = await read_all(await service.retrieve_run_stream(run_id, {}))
        listed = await service.run_messages(run_id, page())
        return live, stored, listed

    live, stored, listed = simulate(40, scenario, script=STEPS)
    assert live[0]["message_type"] == "ping" and live[0]["seq_id"] is None  # names the run
    seen = positioned(live)
    assert seen == stored  # the same numbering live and from the store
    positions = [e["seq_id"] for e in seen]
    assert positions == sorted(set(positions))
    assert [e["message_type"] for e in seen[-2:]] == ["stop_reason", "usage_statistics"]
    assert seen[-2]["stop_reason"] == "end_turn"
    assert [(e["id"], e["message_type"]) for e in seen[:-2]] == [
        (m["id"], m["message_type"]) for m in listed
    ]


def test_resuming_from_any_position_gives_exactly_what_follows() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        body = {"input": "remember", "background": True}
        full = positioned(await read_all(await service.open_stream(agent, body)))
        run_id = full[0]["run_id"]
        resumed = {}
        for cut in [0, *(e["seq_id"] for e in full), full[-1]["seq_id"] + 1000]:
            got = await read_all(await service.retrieve_run_stream(run_id, {"starting_after": cut}))
            resumed[cut] = positioned(got)
        return full, resumed

    full, resumed = simulate(41, scenario, script=STEPS)
    assert resumed[0] == full
    for i, event in enumerate(full):
        assert resumed[event["seq_id"]] == full[i + 1 :]
    assert resumed[full[-1]["seq_id"] + 1000] == []


def test_a_stream_of_a_run_not_in_the_background_is_refused_as_letta_does() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        reply = await service.send_message(agent, {"input": "hi"})
        refusals = []
        for run_id, body in [(reply["messages"][0]["run_id"], {}),
                             ("run-00000000-0000-4000-8000-000000000000", {}),
                             (reply["messages"][0]["run_id"], {"batch_size": 0})]:  # fmt: skip
            try:
                await service.retrieve_run_stream(run_id, body)
            except ServiceError as error:
                refusals.append((error.status, str(error)))
        return refusals

    refusals = simulate(42, scenario, script=[text("hello")])
    assert refusals[0] == (
        400,
        "INVALID_ARGUMENT: Run was not created in background mode, so it cannot be retrieved.",
    )
    assert refusals[1][0] == 404
    assert refusals[2][0] == 422


def test_dst_a_dropped_stream_resumes_on_another_node_after_a_crash_under_faults() -> None:
    """The client streams a background run on the agent's node, drops after a few events;
    that node crashes (and comes back later); the client resumes from its last seq_id on
    the other node, again and again when a read fails, until the ending. What it saw,
    put together, is the run's stream: every message once, in order, then the stop
    reason."""
    faults = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.08))

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            rng = sim.world.rng("client")
            home = sim.service("n0")
            agent = await new_agent(home)
            await home.send_message(agent, {"input": "hello"})  # it lives on n0
            sim.llm.latency = (0.5, 1.0)  # a turn long enough to crash in
            sim.world.faults.enabled = True
            body = {"messages": [{"role": "user", "content": "remember", "otid": "o-1"}],
                    "background": True, "stream_tokens": True}  # fmt: skip
            seen: list[dict] = []
            keep = rng.randint(1, 5)

            async def first_read(service: AgentService) -> None:
                events = await service.open_stream(agent, body)
                async for event in events:
                    seen.append(event)
                    if len(positioned(seen)) >= keep:
                        break  # the client's connection drops
                await events.aclose()

            for _ in range(50):  # refused under faults: the client sends again (same otid)
                try:
                    await sim.on_node("n0", first_read, sim.service("n0"))
                    break
                except CLEAN:
                    await trio.sleep(0.5)
            run_id = next(e["run_id"] for e in seen if e.get("run_id"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                await trio.sleep(rng.uniform(0.0, 2.0))
                sim.crash("n0")

                async def resume(service: AgentService) -> None:
                    last = max((e["seq_id"] for e in positioned(seen)), default=0)
                    body = {"starting_after": last, "batch_size": rng.choice([1, 3, 100])}
                    drop = rng.randint(1, 6) if rng.random() < 0.5 else None
                    events = await service.retrieve_run_stream(run_id, body)
                    async for event in events:
                        seen.append(event)
                        if event["message_type"] != "ping" and drop is not None:
                            drop -= 1
                            if drop == 0:
                                break  # dropped again
                    await events.aclose()

                for attempt in range(200):
                    name = sim.names[(attempt + 1) % 2]
                    try:
                        await sim.on_node(name, resume, sim.service(name))
                    except CLEAN:
                        await trio.sleep(0.5)
                        continue
                    if (
                        positioned(seen)
                        and positioned(seen)[-1]["message_type"] == "usage_statistics"
                    ):
                        break
                    await trio.sleep(0.5)  # a stream cut short by its node: resume again
                nursery.cancel_scope.cancel()
            sim.world.faults.enabled = False
            whole = positioned(
                await read_all(await sim.service("n1").retrieve_run_stream(run_id, {}))
            )
            listed = await sim.service("n1").run_messages(run_id, page())
            engine = sim.world.engine
            begin, end = keys.prefix_range(keys.MESSAGES.pack((agent,)))
            stored = decode_messages(engine.get_range(begin, end, 0, False, engine.version))
            return seen, whole, listed, stored, run_id

        seen, whole, listed, stored, run_id = simulate_cluster(
            seed, scenario, faults, nodes=2, script=[by_progress] * 50, resume_interval=1.0
        )
        check_seen_once(seen, whole)
        check_asked_again_not_streamed(seen, stored, run_id)
        assert [(e["id"], e["message_type"]) for e in whole[:-2]] == [
            (m["id"], m["message_type"]) for m in listed
        ]
        assert whole[-2]["message_type"] == "stop_reason"
        assert whole[-2]["stop_reason"] == "end_turn"

    # Seed 522, found by the deep run: the reply asked again after the crash had an id
    # whose tag was the lost reply's (service/run_positions.py `_may_be_of`). Seed 24: a
    # reply asked again while the client watched (it must not stream).
    for seed in (24, 522):
        one(seed)
    run_seeds(one, 6)


def test_token_deltas_resume_with_the_rest_of_the_text_from_any_position() -> None:
    """Deltas carry positions inside their message; a resume from one gives the rest of
    the message's text (from the store), then what follows: the text once, exactly."""
    thought = "Greet her warmly and briefly, then ask about the garden."

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        body = {"input": "hi", "stream_tokens": True, "background": True}
        live = positioned(await read_all(await service.open_stream(agent, body)))
        run_id = live[0]["run_id"]
        resumed = []
        for cut in live:
            got = await service.retrieve_run_stream(run_id, {"starting_after": cut["seq_id"]})
            resumed.append(await read_all(got))
        whole = positioned(await read_all(await service.retrieve_run_stream(run_id, {})))
        return live, resumed, whole

    script = [send_message("Hello, Ada.", reasoning=thought)]
    live, resumed, whole = simulate(43, scenario, script=script)
    deltas = [e for e in live if e["message_type"] == "reasoning_message"]
    assert len(deltas) > 2 and "".join(e["reasoning"] for e in deltas) == thought
    check_seen_once(live, whole)
    for i, rest in enumerate(resumed):
        check_seen_once(live[: i + 1] + rest, whole)


def test_dst_a_background_stream_without_tokens_shows_whole_messages() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        body = {"input": "hi", "background": True}
        return positioned(await read_all(await service.open_stream(agent, body)))

    events = simulate(45, scenario, script=[send_message("Hello, Ada.", reasoning="Be kind.")])
    shown = [(e.get("id"), e["message_type"]) for e in events]
    assert len(shown) == len(set(shown))
    [thought] = [e for e in events if e["message_type"] == "reasoning_message"]
    assert thought["reasoning"] == "Be kind."


def test_a_step_with_outside_tools_shows_its_results_in_place_order() -> None:
    """Calls that run outside the store (archival memory) store their results as each
    comes; a memory tool's result lands with the step's last commit, at a place below
    one stored before it. A live reader must not have moved past that place."""
    script = [
        tool_calls(("c1", "archival_memory_insert", {"content": "The cat is Miso."}),
                   ("c2", "memory_insert", {"label": "human", "new_str": "has a cat"}),
                   ("c3", "archival_memory_insert", {"content": "The dog is Rex."})),
        text("Noted."),
    ]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, tools=["archival_memory_insert"])
        body = {"input": "remember my pets", "background": True}
        live = positioned(await read_all(await service.open_stream(agent, body)))
        stored = await read_all(await service.retrieve_run_stream(live[0]["run_id"], {}))
        return live, stored

    live, stored = simulate(44, scenario, script=script)
    returns = [e["tool_call_id"] for e in stored if e["message_type"] == "tool_return_message"]
    assert returns == ["c1", "c2", "c3"]
    assert live == stored


def test_dst_token_streams_that_break_midway_still_resume_exactly() -> None:
    """LLM streams break midway (the reply is never stored: its start was shown and
    stays), storage faults come and go, and the client drops and resumes at random: what
    it put together is every stored message's text once, then the ending."""
    faults = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.05), FaultType.LLM_FAILURE: 0.1})
    stops: set[str] = set()

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            rng = world.rng("client")
            world.faults.enabled = False
            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            world.faults.enabled = True
            body = {"messages": [{"role": "user", "content": "hi", "otid": "o-1"}],
                    "background": True, "stream_tokens": True}  # fmt: skip
            seen: list[dict] = []
            run_id = None
            for _ in range(100):
                last = max((e["seq_id"] for e in positioned(seen)), default=0)
                try:
                    if run_id is None:
                        events = await service.open_stream(agent, body)
                    else:
                        events = await service.retrieve_run_stream(run_id, {"starting_after": last})
                except CLEAN:
                    await trio.sleep(0.5)
                    continue
                keep = rng.randint(1, 8)
                async for event in events:
                    seen.append(event)
                    run_id = run_id or event.get("run_id")
                    keep -= event["message_type"] != "ping"
                    if keep == 0:
                        break  # dropped
                await events.aclose()
                if positioned(seen) and positioned(seen)[-1]["message_type"] == "usage_statistics":
                    break
            world.faults.enabled = False
            assert run_id is not None
            return seen, positioned(await read_all(await service.retrieve_run_stream(run_id, {})))

        script = [send_message(f"Hello {i}, Ada.", reasoning=f"Thought {i}: be brief and kind.")
                  for i in range(20)]  # fmt: skip
        seen, whole = simulate(seed, scenario, faults, script=script)
        check_seen_once(seen, whole)
        assert positioned(seen)[-1]["message_type"] == "usage_statistics"
        stops.add(whole[-2]["stop_reason"])

    if across_seeds(run_seeds(one, 12), 12):
        assert stops == {"end_turn", "llm_api_error"}  # both happened across the seeds
