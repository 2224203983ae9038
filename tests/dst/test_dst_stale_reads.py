"""A stale activation may read, but never write, and never answers wrongly (issue 23).

An actor's transactions that write nothing are not fenced (nursery/actor.py,
`ActorContext.transact`): reading the lease costs a round trip, and a transaction that
writes nothing commits nothing a takeover could conflict with. What such a transaction
reads is a consistent snapshot of the store at its read version, the same snapshot
whoever reads it, so an activation that another node has superseded (it does not know
yet: its node's clock runs slow, a partition) answers from the store as it stands, and
stops at its first write, which is fenced: the message goes to the new owner.

Here a takeover is played exactly: the agent's lease is rewritten as another live
node's, at the next epoch, while the first node's actor stays active and unaware. The
world's invariants check at every commit that no history is written by an activation
after its successor took the lease (SingleActivation, FencedWrites).
"""

from __future__ import annotations

import pytest

from kelpie_trio.errors import NotFound
from kelpie_trio.nursery.lease import Lease
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import AgentCluster, history_of, new_agent, simulate_cluster


def test_dst_a_stale_actor_reads_from_the_store_and_its_first_write_is_fenced() -> None:
    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> None:
            n0, n1 = sim.names
            agent = await new_agent(sim.service(n0), agent_type="memgpt_v2_agent")
            first = {"messages": [{"role": "user", "content": "first", "otid": "otid-1"}]}
            answer = await sim.send(n0, agent, first)
            on_n0 = sim.service(n0).dispatcher
            assert on_n0 is not None and on_n0.is_active(agent)
            stale = next(host for host in on_n0.actors if host.agent_id == agent)

            # n1 takes the agent over, as it would had it judged n0's heartbeat expired
            # by its own clock; n0's actor goes on, unaware.
            member = sim.service(n1).dispatcher.membership
            assert member is not None
            successor = Lease(agent, member.node_id, member.incarnation, stale.lease.epoch + 1)

            async def take_over(tr: Transaction) -> None:
                tr.set(keys.LEASES.pack((agent,)), successor.encode())

            await sim.nodes[n1].store.transact(take_over)

            # The same send again, through n0: the stale actor finds the finished run by
            # reading alone, and answers what the turn answered. It is still active: a
            # read told it nothing, and had nothing to tell.
            again = await sim.send(n0, agent, first)
            assert again == answer
            assert stale in on_n0.actors

            # A new message through n0: its first write (the run's start) is fenced, so
            # the stale actor stops and the message is routed to n1, which runs it.
            second = {"messages": [{"role": "user", "content": "second"}]}
            reply = await sim.send(n0, agent, second)
            assert reply["messages"]
            assert stale.finished.is_set() and not on_n0.is_active(agent)
            on_n1 = sim.service(n1).dispatcher
            assert on_n1 is not None and on_n1.is_active(agent)
            # The new owner's epoch is after the stale one's (it took the lease from the
            # successor's record, its own node's).
            owner = next(host for host in on_n1.actors if host.agent_id == agent)
            assert owner.lease.epoch > stale.lease.epoch

            history = await history_of(sim.service(n1), agent)
            said = [m.content for m in history if m.role == "user"]
            assert said == ["first", "second"]  # each turn once: none lost, none doubled

        simulate_cluster(seed, scenario, nodes=2, quiet_start=True)

    run_seeds(one, 5)


def test_dst_a_send_to_a_missing_agent_is_refused_and_writes_nothing() -> None:
    """A send skips its own existence check when the thread's actor is active on the
    node (service/messages.py): the run's start then refuses it. Either way a send to an
    agent that does not exist, or no longer does, is a 404 that writes nothing: no
    lease for an unknown id, no run; nor does it keep an activation of an unknown id in
    memory (an activation writes its lease only with its first write, so the check
    before activating is what keeps made-up ids from filling the node)."""

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> None:
            (n0,) = sim.names
            service = sim.service(n0)
            store = sim.nodes[n0].store
            body = {"messages": [{"role": "user", "content": "hello"}]}

            async def lease_of(agent: str) -> bytes | None:
                async def read(tr: Transaction) -> bytes | None:
                    return await tr.get(keys.LEASES.pack((agent,)))

                return await store.transact(read)

            with pytest.raises(NotFound):
                await sim.send(n0, "agent-nobody", body)
            assert await lease_of("agent-nobody") is None
            assert service.dispatcher is not None
            assert not service.dispatcher.is_active("agent-nobody")

            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            await sim.send(n0, agent, body)
            assert service.dispatcher is not None and service.dispatcher.is_active(agent)
            await service.delete_agent(agent)
            before = _agent_state(sim)
            with pytest.raises(NotFound):  # refused by the active actor's start
                await sim.send(n0, agent, body)
            assert _agent_state(sim) == before  # no run, no message, no lease change

        simulate_cluster(seed, scenario, nodes=1, quiet_start=True)

    run_seeds(one, 3)


def _agent_state(sim: AgentCluster) -> dict[bytes, bytes]:
    """What a send could write: runs, messages, leases (not heartbeats, markers, outbox)."""
    spaces = (keys.SESSIONS, keys.MESSAGES, keys.LEASES, keys.AGENTS)
    return {
        k: v
        for k, v in sim.world.engine.snapshot().items()
        if any(space.range().start <= k < space.range().stop for space in spaces)
    }
