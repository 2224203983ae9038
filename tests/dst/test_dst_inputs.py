"""Sends that carry images and system messages, in the simulator, under storage faults, LLM
faults, actor panics and crashes of the node running the agent while the model writes.

Each turn sends a system message (an event) and a user message of text, a base64 image
(one of them larger than a store value, so it is chunked) and an image URL, with an otid,
retried until answered. At the end: each turn's messages are stored once, in the order
sent, the images byte for byte; and every request the model got after a turn started holds
that turn's event and its user message (text and images, in order) exactly once, where
they were sent.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import trio

from kelpie_trio.errors import Invalid, Relayed, ServiceError
from kelpie_trio.llm.catalog import ModelCatalog
from kelpie_trio.llm.config import CatalogConfig, LocalServer
from kelpie_trio.llm.types import ImagePart, LlmRequest, LlmResponse, TextPart
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.sim import FaultConfig, FaultType
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import text
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.limits import MAX_VALUE_BYTES
from tests.dst.agent_harness import AgentCluster, history_of, new_agent, simulate_cluster

FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.03), FaultType.LLM_FAILURE: 0.05,
     FaultType.AGENT_LOOP_PANIC: 0.03}
)  # fmt: skip
FAST_TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
TURNS = 3
URL = "https://example.com/t{}.png"


def image_data(rng: random.Random, turn: int) -> str:
    size = MAX_VALUE_BYTES + 20_000 if turn == 1 else 64  # turn 1's spans several chunks
    return base64.b64encode(rng.randbytes(size)).decode()


def body(turn: int, data: str) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": f"event {turn}", "otid": f"s{turn}"},
        {"role": "user", "otid": f"u{turn}", "content": [
            {"type": "text", "text": f"turn {turn}"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": data}},
            {"type": "image", "source": {"type": "url", "url": URL.format(turn)}},
        ]},
    ]}  # fmt: skip


class Crasher:
    """Crashes the node running the agent, now and then, while the model writes."""

    def __init__(self) -> None:
        self.sim: AgentCluster | None = None
        self.agent = ""
        self.crashes = 0
        self.rng: random.Random | None = None

    def model(self, request: LlmRequest) -> LlmResponse:
        sim = self.sim
        assert sim is not None
        if self.rng is None:
            self.rng = sim.world.rng("crashes")
        if self.crashes < 3 and self.rng.random() < 0.3:
            hosts = [n for n, svc in sim.services.items()
                     if svc.dispatcher is not None and self.agent in svc.dispatcher.active_agents
                     and not sim.nodes[n].crashed]  # fmt: skip
            if hosts:
                self.crashes += 1
                sim.crash(hosts[0])

                async def restart(name: str = hosts[0]) -> None:
                    await trio.sleep(0.5)
                    await sim.start_node(name)

                assert sim.world.system_nursery is not None
                sim.world.system_nursery.start_soon(restart)
        return text("Seen.")


async def answer(sim: AgentCluster, agent: str, sent: dict) -> Any:
    """Send until the server answers (the otid makes a retry join the first attempt)."""
    for attempt in range(100):
        with trio.move_on_after(30):  # the node that ran it crashed: ask again
            try:
                return await sim.service(f"n{attempt % 2}").send_message(agent, sent)
            except Relayed as refused:
                return refused
            except (StoreError, RuntimeFailure, ServiceError, KeyError):
                pass  # KeyError: the node is restarting
        await trio.sleep(1)
    raise AssertionError("no answer after 100 tries")


def run_inputs(seed: int, crasher: Crasher) -> tuple[list[Any], list[Any], list[LlmRequest]]:
    crasher.crashes, crasher.rng = 0, None

    async def scenario(sim: AgentCluster) -> Any:
        crasher.sim = sim
        rng = sim.world.rng("images")
        sim.world.faults.enabled = False
        crasher.agent = agent = await new_agent(sim.service("n0"))
        sim.world.faults.enabled = True
        sent, replies = [], []
        for turn in range(TURNS):
            data = image_data(rng, turn)
            sent.append(data)
            replies.append(await answer(sim, agent, body(turn, data)))
        sim.world.faults.enabled = False
        return sent, replies, await history_of(sim.service("n1"), agent)

    sent, replies, history = simulate_cluster(
        seed, scenario, FAULTS, nodes=2, script=[crasher.model] * 200, config=FAST_TAKEOVER
    )
    assert crasher.sim is not None
    return list(zip(sent, replies, strict=True)), history, crasher.sim.llm.requests


def check(turns: list[Any], history: list[Any], requests: list[LlmRequest]) -> None:
    assert [m.seq for m in history] == list(range(len(history))), "a gap or a duplicate"
    for turn, (data, reply) in enumerate(turns):
        assert isinstance(reply, dict), reply
        events = [m for m in history if m.role == "system" and m.content == f"event {turn}"]
        users = [m for m in history if m.role == "user" and m.otid == f"u{turn}"]
        assert len(events) == 1 and len(users) == 1, f"turn {turn} stored {len(users)} times"
        (event,), (user,) = events, users
        assert user.seq == event.seq + 1  # in the order sent
        assert user.content == f"turn {turn}"
        (_, image, url) = user.parts
        assert image.source.data == data and image.source.media_type == "image/png"
        assert url.source.url == URL.format(turn)
        expected = (TextPart(f"turn {turn}"), ImagePart(data=data, media_type="image/png"),
                    ImagePart(url=URL.format(turn)))  # fmt: skip
        marker = ("system", f"event {turn}")
        after = [r for r in requests if any((m.role, m.content) == marker for m in r.messages)]
        if reply["stop_reason"]["stop_reason"] == "end_turn":
            assert after, f"turn {turn}'s messages never reached the model"
        for request in after:
            sent = [(m.role, m.content, m.parts) for m in request.messages]
            at = sent.index(("system", f"event {turn}", ()))
            assert sent[at + 1] == ("user", f"turn {turn}", expected)
            assert sum(1 for s in sent if s[1] == f"turn {turn}") == 1
            assert sum(1 for s in sent if s[1] == f"event {turn}") == 1


def test_dst_images_and_system_messages_are_stored_once_and_reach_the_model() -> None:
    crasher = Crasher()
    crashed: list[int] = []

    def one(seed: int) -> None:
        turns, history, requests = run_inputs(seed, crasher)
        check(turns, history, requests)
        crashed.append(crasher.crashes)

    if across_seeds(run_seeds(one, 6), 6):
        assert sum(crashed) >= 3, crashed  # the crashes hit while the model wrote


def test_dst_an_override_model_outlives_crashes_of_its_run() -> None:
    """A send with override_model (a model the catalog lists, not the agent's) is cut by
    crashes while the model writes and resumed by its retries on either node: every request
    of that run names the override's model; the agent's next send names its own again."""
    catalog = ModelCatalog.from_config(
        CatalogConfig(servers=(LocalServer("http://local.test/v1", models=("big",)),))
    )
    crasher = Crasher()

    def one(seed: int) -> None:
        crasher.crashes, crasher.rng = 0, None

        async def scenario(sim: AgentCluster) -> Any:
            crasher.sim = sim
            sim.catalog = catalog  # a node started after a crash takes it too
            sim.llm.model = None  # the simulated provider serves both names here
            for service in sim.services.values():
                service.catalog = catalog
            sim.world.faults.enabled = False
            crasher.agent = agent = await new_agent(sim.service("n0"))
            sim.world.faults.enabled = True
            sent = {"messages": [{"role": "user", "content": "big", "otid": "big"}],
                    "override_model": "vllm/big"}  # fmt: skip
            first = await answer(sim, agent, sent)
            plain = {"messages": [{"role": "user", "content": "own", "otid": "own"}]}
            second = await answer(sim, agent, plain)
            sim.world.faults.enabled = False
            run = await sim.service("n1").get_run_record(first["usage"]["run_ids"][0])
            return first, second, run

        first, second, run = simulate_cluster(
            seed, scenario, FAULTS, nodes=2, script=[crasher.model] * 100, config=FAST_TAKEOVER
        )
        assert crasher.sim is not None
        asked = {}
        for request in crasher.sim.llm.requests:
            turn = [m.content for m in request.messages if m.role == "user"][-1]
            asked.setdefault(turn, set()).add(request.model)
        assert run.override_model == "vllm/big"
        if first["stop_reason"]["stop_reason"] == "end_turn":
            assert asked["big"] == {"big"}, asked
        if second["stop_reason"]["stop_reason"] == "end_turn":
            assert asked["own"] == {"agent"}, asked
        crashed.append(crasher.crashes)

    crashed: list[int] = []
    if across_seeds(run_seeds(one, 6), 6):
        assert sum(crashed) >= 2, crashed


SKILLS = [
    {"name": "release", "description": "Cut a release.\nSteps follow.", "location": "s/r/SKILL.md"},
    {"name": "release", "description": "twice", "location": "elsewhere"},  # kept once
]


def test_dst_client_skills_reach_the_model_for_their_request_only() -> None:
    """A send's client_skills (Letta's CLI sends its skills with every message) are listed
    in the system prompt of every step of that run, a run resumed after crashes and
    storage faults included (they are stored with the run), and in no other run's; the
    agent's own system text is not changed."""
    crasher = Crasher()

    def one(seed: int) -> None:
        crasher.crashes, crasher.rng = 0, None

        async def scenario(sim: AgentCluster) -> Any:
            crasher.sim = sim
            sim.world.faults.enabled = False
            crasher.agent = agent = await new_agent(sim.service("n0"))
            system = (await sim.service("n0").get_agent(agent)).agent.system
            sim.world.faults.enabled = True
            sent = {"messages": [{"role": "user", "content": "skilled", "otid": "skilled"}],
                    "client_skills": SKILLS}  # fmt: skip
            first = await answer(sim, agent, sent)
            plain = {"messages": [{"role": "user", "content": "plain", "otid": "plain"}]}
            second = await answer(sim, agent, plain)
            sim.world.faults.enabled = False
            after = (await sim.service("n1").get_agent(agent)).agent.system
            return first, second, system, after

        first, _second, system, after = simulate_cluster(
            seed, scenario, FAULTS, nodes=2, script=[crasher.model] * 100, config=FAST_TAKEOVER
        )
        assert crasher.sim is not None and after == system
        listed = "- release: Cut a release. (s/r/SKILL.md)"
        for request in crasher.sim.llm.requests:
            turn = [m.content for m in request.messages if m.role == "user"][-1]
            prompt = str(request.messages[0].content)
            assert (listed in prompt) == (turn == "skilled"), (turn, prompt[-200:])
            assert prompt.count("- release:") <= 1
        if first["stop_reason"]["stop_reason"] == "end_turn":
            crashed.append(crasher.crashes)

    crashed: list[int] = []
    if across_seeds(run_seeds(one, 6), 6):
        assert sum(crashed) >= 1, crashed


def test_client_skills_that_are_not_skills_are_refused() -> None:
    from kelpie_trio.service.approvals import client_skills

    assert client_skills(None) == []
    for bad in ("x", [1], [{"name": "a", "description": "b"}], [{"name": " ", "description": "",
                                                                 "location": ""}]):  # fmt: skip
        try:
            client_skills(bad)
        except Invalid:
            continue
        raise AssertionError(f"{bad!r} was taken")
