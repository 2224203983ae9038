"""letta-client drives conversations on a real server (the offline sim model): an agent's
threads, each with its own history, its memory shared."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta


def _texts(messages) -> list[str]:
    return [m.content for m in messages if m.message_type == "user_message"]


def _send(
    letta: Letta, conversation_id: str, text: str, otid: str | None = None, **options
) -> list:
    """A send as this SDK makes it: it reads every reply as a stream (Letta's default)."""
    message = {"role": "user", "content": text, **({"otid": otid} if otid else {})}
    events = list(
        letta.conversations.messages.create(conversation_id, messages=[message], **options)
    )
    errors = [e for e in events if getattr(e, "message_type", None) == "error_message"]
    assert not errors, errors  # a failed turn says why
    return events


def test_sdk_conversations_keep_their_own_histories(letta: Letta) -> None:
    agent = letta.agents.create(name="threads", memory_blocks=[{"label": "human", "value": "Ada"}])
    first = letta.conversations.create(agent_id=agent.id, summary="about tea")
    second = letta.conversations.create(agent_id=agent.id)
    assert first.agent_id == agent.id and first.id.startswith("conv-")
    assert _send(letta, first.id, "tea?")[-2].stop_reason == "end_turn"
    events = _send(letta, second.id, "coffee?")
    kinds = [getattr(e, "message_type", None) for e in events]
    assert "assistant_message" in kinds and kinds[-2:] == ["stop_reason", "usage_statistics"]
    assert _texts(letta.conversations.messages.list(first.id, order="asc")) == ["tea?"]
    assert _texts(letta.conversations.messages.list(second.id, order="asc")) == ["coffee?"]
    # The default one is untouched; an agent's messages with no conversation named are all
    # of its conversations', newest first (as Letta, and as letta-evals reads a trajectory).
    assert list(letta.agents.messages.list(agent.id, conversation_id="default")) == []
    assert _texts(letta.agents.messages.list(agent.id)) == ["coffee?", "tea?"]
    _send(letta, "default", "default?", agent_id=agent.id)
    assert _texts(letta.agents.messages.list(agent.id, conversation_id="default")) == ["default?"]
    everything = list(letta.agents.messages.list(agent.id, order="asc"))
    assert _texts(everything) == ["tea?", "coffee?", "default?"]
    page = list(letta.agents.messages.list(agent.id, order="asc", after=everything[0].id))
    assert [m.id for m in page] == [m.id for m in everything[1:]]  # paged across threads
    assert _texts(letta.conversations.messages.list("default", agent_id=agent.id)) == ["default?"]
    listed = [c.id for c in letta.conversations.list(agent_id=agent.id)]
    assert listed == [second.id, first.id]  # newest first
    got = letta.conversations.retrieve(first.id)
    assert got.summary == "about tea" and len(got.in_context_message_ids) >= 2
    assert letta.conversations.retrieve(first.id).last_message_at is not None
    assert letta.conversations.update(first.id, summary="tea").summary == "tea"
    runs = [r for r in letta.runs.list(agent_id=agent.id)]
    assert {r.conversation_id for r in runs} == {first.id, second.id, None}
    in_first = list(letta.runs.list(agent_id=agent.id, conversation_id=first.id))
    assert [r.conversation_id for r in in_first] == [first.id]


def test_sdk_a_refused_send_leaves_last_message_at_and_an_accepted_one_sets_it(
    letta: Letta,
) -> None:
    agent = letta.agents.create(name="timed")
    conversation = letta.conversations.create(agent_id=agent.id)
    assert letta.conversations.retrieve(conversation.id).last_message_at is None
    with pytest.raises(letta_client.UnprocessableEntityError):
        list(letta.conversations.messages.create(
            conversation.id, messages=[{"role": "user", "content": "hi"}],
            max_steps=0,
        ))  # fmt: skip
    assert letta.conversations.retrieve(conversation.id).last_message_at is None
    _send(letta, conversation.id, "hello")
    first = letta.conversations.retrieve(conversation.id).last_message_at
    assert first is not None
    _send(letta, conversation.id, "again")
    assert letta.conversations.retrieve(conversation.id).last_message_at > first


def test_sdk_forks_deletes_and_refuses_clearly(letta: Letta) -> None:
    agent = letta.agents.create(name="forker")
    source = letta.conversations.create(agent_id=agent.id)
    _send(letta, source.id, "one")
    fork = letta.conversations.fork(source.id)
    assert fork.id != source.id and fork.agent_id == agent.id
    assert _texts(letta.conversations.messages.list(fork.id, order="asc")) == ["one"]
    _send(letta, fork.id, "two")
    assert _texts(letta.conversations.messages.list(source.id, order="asc")) == ["one"]
    with pytest.raises(letta_client.ConflictError):  # nothing runs in it
        letta.conversations.cancel(source.id)
    assert "<memory_blocks>" in letta.conversations.recompile(source.id)
    letta.conversations.delete(source.id)
    with pytest.raises(letta_client.NotFoundError):
        letta.conversations.retrieve(source.id)
    with pytest.raises(letta_client.NotFoundError):
        _send(letta, source.id, "hi")
    with pytest.raises(letta_client.BadRequestError, match="label 'nobody' not found"):
        letta.conversations.create(
            agent_id=agent.id, extra_body={"isolated_block_labels": ["nobody"]}
        )
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.conversations.create(agent_id=agent.id, model="nobody/none")
    with pytest.raises(letta_client.NotFoundError):
        letta.conversations.create(agent_id="agent-00000000-0000-4000-8000-000000000000")
    with pytest.raises(letta_client.NotFoundError, match="agent_id"):  # default needs it
        _send(letta, "default", "hi")
    letta.agents.delete(agent.id)
    with pytest.raises(letta_client.NotFoundError):
        letta.conversations.retrieve(fork.id)


def test_sdk_resumes_a_conversations_background_stream(letta: Letta) -> None:
    """Letta's CLI sends with `background: true` and, when its stream drops, asks the
    conversation for it again by the otid of its message: it gets the run's events after
    the position it names."""
    agent = letta.agents.create(name="resumer")
    conversation = letta.conversations.create(agent_id=agent.id)
    first = _send(letta, conversation.id, "one", background=True, otid="otid-one")
    positions = [e.seq_id for e in first if getattr(e, "seq_id", None) is not None]
    assert positions == sorted(positions) and first[-2].stop_reason == "end_turn"
    user = next(e for e in first if getattr(e, "message_type", None) == "user_message")
    again = list(
        letta.conversations.messages.stream(
            conversation.id, otid="otid-one", starting_after=user.seq_id
        )
    )
    kinds = [getattr(e, "message_type", None) for e in again]
    assert "user_message" not in kinds  # it was before the position asked for
    assert "assistant_message" in kinds and again[-2].stop_reason == "end_turn"
    by_run = list(
        letta.conversations.messages.stream(
            conversation.id, run_id=again[-1].run_ids[0], starting_after=0
        )
    )
    assert [getattr(e, "message_type", None) for e in by_run][-2:] == [
        "stop_reason",
        "usage_statistics",
    ]
    with pytest.raises(letta_client.BadRequestError, match="No active runs"):
        list(letta.conversations.messages.stream(conversation.id))
    with pytest.raises(letta_client.NotFoundError):
        list(letta.conversations.messages.stream(conversation.id, otid="never-sent"))


def test_sdk_compacts_one_conversation_and_reads_its_context(letta: Letta) -> None:
    """Compaction and the context overview are per thread: compacting a conversation
    moves its context on and leaves the agent's default conversation as it was."""
    agent = letta.agents.create(name="compactor")
    conversation = letta.conversations.create(agent_id=agent.id)
    for text in ("one", "two", "three"):
        _send(letta, conversation.id, text)
    _send(letta, "default", "own", agent_id=agent.id)
    overview = f"/v1/agents/{agent.id}/context?conversation_id={conversation.id}"
    before = letta.get(overview, cast_to=object)
    compacted = letta.conversations.messages.compact(conversation.id)
    assert compacted.summary and compacted.num_messages_after < compacted.num_messages_before
    after = letta.get(overview, cast_to=object)
    assert after["num_messages"] < before["num_messages"]
    assert after["summary_memory"] and compacted.summary in after["summary_memory"]
    own = letta.get(f"/v1/agents/{agent.id}/context", cast_to=object)
    assert not own["summary_memory"]  # the default conversation was not compacted
    shown = letta.conversations.retrieve(conversation.id).in_context_message_ids
    assert len(shown) < len(list(letta.conversations.messages.list(conversation.id)))
    with pytest.raises(letta_client.NotFoundError):
        letta.conversations.messages.compact("conv-00000000-0000-4000-8000-000000000000")


def test_sdk_a_conversation_sees_its_own_copy_of_an_isolated_block(letta: Letta) -> None:
    blocks = [{"label": "human", "value": "Name: Ada"}, {"label": "persona", "value": "calm"}]
    agent = letta.agents.create(name="isolating", memory_blocks=blocks)
    own = letta.conversations.create(
        agent_id=agent.id, extra_body={"isolated_block_labels": ["human"]}
    )
    shared = letta.conversations.create(agent_id=agent.id)
    [copy_id] = own.isolated_block_ids
    assert copy_id not in {b.id for b in letta.agents.blocks.list(agent.id)}
    letta.blocks.update(copy_id, value="Name: Bob")
    assert "Name: Bob" in letta.conversations.recompile(own.id)
    assert "Name: Ada" in letta.conversations.recompile(shared.id)
    assert "Name: Ada" in letta.conversations.recompile(
        "default", extra_body={"agent_id": agent.id}
    )
    fork = letta.conversations.fork(own.id)
    [fork_copy] = fork.isolated_block_ids
    assert fork_copy != copy_id and "Name: Bob" in letta.conversations.recompile(fork.id)
    letta.conversations.delete(own.id)
    with pytest.raises(letta_client.NotFoundError):  # its own blocks go with it
        letta.blocks.retrieve(copy_id)
    assert [b.value for b in letta.agents.blocks.list(agent.id) if b.label == "human"] == [
        "Name: Ada"
    ]
