"""SimNetwork: requests between simulated nodes, under partitions, loss and delay."""

from __future__ import annotations

import trio

from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.network import NetworkUnreachable, SimNetwork


async def echo(source: str, payload: object) -> object:
    return {"from": source, "echo": payload}


async def call(net: SimNetwork, src: str, dst: str, payload: object) -> object:
    try:
        return await net.request(src, dst, payload, timeout=2.0)
    except NetworkUnreachable:
        return "unreachable"


def test_request_reaches_the_peer_and_returns_its_reply() -> None:
    async def scenario(world: SimWorld) -> object:
        net = SimNetwork(world)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.serve, "b", echo)
            reply = await call(net, "a", "b", 1)
            nursery.cancel_scope.cancel()
        return reply

    assert SimWorld(0).run(scenario) == {"from": "a", "echo": 1}


def test_partition_cuts_a_pair_until_healed() -> None:
    async def scenario(world: SimWorld) -> list[object]:
        net = SimNetwork(world)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.serve, "b", echo)
            await nursery.start(net.serve, "c", echo)
            net.partition("a", "b")
            out = [await call(net, "a", "b", 1), await call(net, "a", "c", 2)]
            net.heal()
            out.append(await call(net, "a", "b", 3))
            net.partition("a", "b", duration=5)
            await trio.sleep(6)
            out.append(await call(net, "a", "b", 4))
            nursery.cancel_scope.cancel()
        return out

    out = SimWorld(0).run(scenario)
    assert out[0] == "unreachable"
    assert out[1] == {"from": "a", "echo": 2}
    assert out[2] == {"from": "a", "echo": 3}
    assert out[3] == {"from": "a", "echo": 4}  # a timed partition heals by itself


def test_a_stopped_node_does_not_answer() -> None:
    async def scenario(world: SimWorld) -> object:
        net = SimNetwork(world)
        async with trio.open_nursery() as node_b:
            await node_b.start(net.serve, "b", echo)
            node_b.cancel_scope.cancel()
        return await call(net, "a", "b", 1)

    assert SimWorld(0).run(scenario) == "unreachable"


def test_loss_and_delay_faults_make_some_requests_fail_but_never_hang() -> None:
    config = FaultConfig(
        {
            FaultType.NETWORK_PACKET_LOSS: 0.2,
            FaultType.NETWORK_DELAY: 0.2,
            FaultType.NETWORK_MESSAGE_REORDER: 0.3,
        }
    )

    async def scenario(world: SimWorld) -> tuple[list[object], list[int]]:
        net = SimNetwork(world)
        answers: list[object] = []
        handled: list[int] = []

        async def record(source: str, payload: object) -> object:
            handled.append(payload)  # type: ignore[arg-type]
            return payload

        async with trio.open_nursery() as nursery:
            await nursery.start(net.serve, "b", record)
            async with trio.open_nursery() as clients:
                for i in range(100):
                    clients.start_soon(lambda i=i: _append(answers, call(net, "a", "b", i)))
            nursery.cancel_scope.cancel()
        return answers, handled

    answers, handled = SimWorld(4, config).run(scenario)
    assert len(answers) == 100  # every request answered or failed: none hung
    lost = answers.count("unreachable")
    assert 0 < lost < 100
    assert handled != sorted(handled)  # reordered in flight


async def _append(out: list[object], awaitable) -> None:
    out.append(await awaitable)
