"""A lease nobody holds is taken by the activation's first write (nursery/lease.py).

Simulated with the real dispatcher, lease code and store: a cold message commits once
(its write and the lease together), a lease still held by an ended incarnation is taken
at once, and an activation whose agent another node took between its reads and its
first write writes nothing: its message goes to the new owner, and nothing acknowledged
is lost. Every scenario ends with `SimAgentEnv.check()` (SingleActivation,
LeaseUniqueness, FencingTokenMonotonic, NoAckedMessageLost, FencedWrites).
"""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.cluster import JournalActor, SimAgentEnv
from kelpie_trio.sim.seeds import run_seeds

# No heartbeat renewal inside a scenario's few milliseconds: a node's commits are its
# messages' (and its join's).
QUIET = RuntimeConfig(lease_ttl=60.0, renew_interval=20.0, idle_timeout=5.0)


def _commits(env: SimAgentEnv, name: str) -> int:
    return env.nodes[name].store.commits


def test_a_cold_message_commits_once_with_its_lease() -> None:
    async def main(world: SimWorld) -> list[int]:
        env = SimAgentEnv(world, nodes=1, config=QUIET)
        counts = []
        async with trio.open_nursery() as nursery:
            await env.start(nursery)
            for i in range(2):  # a fresh agent, then the same one after its release
                before = _commits(env, "node0")
                assert (await env.send("agent-a", f"m{i}", via="node0")).acked
                counts.append(_commits(env, "node0") - before)
                await trio.sleep(QUIET.idle_timeout * 2)  # idle: deactivated, released
            assert env.dispatchers["node0"].active_agents == []
            nursery.cancel_scope.cancel()
        await env.check()
        assert env.checker.activations == 2
        return counts

    assert SimWorld(0, "none").run(main) == [1, 1]


def test_a_lease_an_ended_incarnation_still_holds_is_taken_before_any_message() -> None:
    """Its holder crashed without releasing it: a commit of the old incarnation may still
    land (one in flight, say), so the new activation writes the lease in its first
    transaction, which such a late commit conflicts with, not at its first write."""

    async def main(world: SimWorld) -> int:
        env = SimAgentEnv(world, nodes=1, config=QUIET)
        async with trio.open_nursery() as nursery:
            await env.start(nursery)
            assert (await env.send("agent-a", "before", via="node0")).acked
            env.crash("node0")
            await env.start_node("node0")  # a new incarnation; the old lease is unreleased
            # Past the old incarnation's heartbeat, between two renewals of the new one.
            await trio.sleep(QUIET.lease_ttl + QUIET.renew_interval / 2)
            before = _commits(env, "node0")
            assert (await env.send("agent-a", "after", via="node0")).acked
            count = _commits(env, "node0") - before
            nursery.cancel_scope.cancel()
        await env.check()
        return count

    assert SimWorld(1, "none").run(main) == 2  # the lease, then the message


class _GatedActor(JournalActor):
    """A journal actor whose messages named `slow*` wait for the world's gate before
    they write."""

    gate: trio.Event

    async def handle(self, message: dict[str, Any]) -> int:
        if message["id"].startswith("slow"):
            await _GatedActor.gate.wait()
        return await super().handle(message)


def test_a_takeover_between_an_activations_reads_and_its_first_write_moves_its_message() -> None:
    def one(seed: int) -> None:
        async def main(world: SimWorld) -> tuple[SimAgentEnv, list[Any]]:
            _GatedActor.gate = trio.Event()
            env = SimAgentEnv(world, nodes=2, config=QUIET, actor=_GatedActor)
            async with trio.open_nursery() as nursery:
                await env.start(nursery)
                async with trio.open_nursery() as clients:
                    # node0 activates agent-a (nobody holds it: it is left to the first
                    # write) and waits before writing...
                    clients.start_soon(env.send, "agent-a", "slow", "node0")
                    await trio.sleep(0.1)
                    assert env.dispatchers["node0"].is_active("agent-a")
                    # ... while node1 activates it too, and writes first: the lease is its.
                    assert (await env.send("agent-a", "fast", via="node1")).acked
                    _GatedActor.gate.set()
                nursery.cancel_scope.cancel()
            await env.check()
            return env, await env.journal("agent-a")

        env, journal = SimWorld(seed, "none").run(main)
        assert all(o.acked for o in env.outcomes)
        # node0's activation wrote nothing: its message ran on node1, after node1's own.
        assert [(mid, node) for mid, _epoch, node in journal] == [
            ("fast", "node1.1"),
            ("slow", "node1.1"),
        ]
        assert env.checker.activations == 1
        assert env.checker.forwards == 1

    run_seeds(one, 5)


def test_an_activation_whose_first_message_wrote_nothing_takes_the_lease_before_answering() -> None:
    """A message already in the log is answered without a write (a retried one): the
    activation then writes its lease before it answers, so the answer was current (nobody
    wrote since its reads) and the agent's next message, through another node, comes
    here instead of starting a second activation there that this one would never hear of."""

    async def main(world: SimWorld) -> tuple[SimAgentEnv, list[Any]]:
        env = SimAgentEnv(world, nodes=2, config=QUIET)
        async with trio.open_nursery() as nursery:
            await env.start(nursery)
            assert (await env.send("agent-a", "m0", via="node0")).acked
            await trio.sleep(QUIET.idle_timeout * 2)  # idle on node0: released
            assert env.dispatchers["node0"].active_agents == []
            again = await env.send("agent-a", "m0", via="node1")  # answered from the log
            assert again.reply == 0
            assert (await env.send("agent-a", "m1", via="node0")).acked
            nursery.cancel_scope.cancel()
        await env.check()
        return env, await env.journal("agent-a")

    env, journal = SimWorld(2, "none").run(main)
    assert [(mid, node) for mid, _epoch, node in journal] == [
        ("m0", "node0.1"),
        ("m1", "node1.1"),  # node1 held the agent: node0 forwarded m1 there
    ]
    assert env.checker.forwards == 1
    assert env.checker.activations == 2
