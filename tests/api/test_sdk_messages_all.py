"""letta-client's top-level messages (client.messages) on a real server: every agent's
messages, in time order, paged by cursor; one message retrieved by id."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta


def _talk(letta: Letta, name: str, text: str, agent_id: str | None = None) -> list[str]:
    agent_id = agent_id or letta.agents.create(name=name).id
    sent = letta.agents.messages.create(agent_id, messages=[{"role": "user", "content": text}])
    return list(dict.fromkeys(m.id for m in sent.messages))  # stored ids, in order


def test_messages_of_two_agents_are_listed_in_time_order_and_paged(letta: Letta) -> None:
    ada, bob = (letta.agents.create(name=n).id for n in ("all-ada", "all-bob"))
    # Ada, Bob, then Ada again: the listing interleaves agents by time.
    first = _talk(letta, "", "hello from ada", ada)
    second = _talk(letta, "", "hello from bob", bob) + _talk(letta, "", "ada again", ada)
    oldest_first = letta.messages.list(order="asc", limit=1000)
    ids = list(dict.fromkeys(m.id for m in oldest_first))
    assert ids[-len(first) - len(second) :] == first + second
    newest_first = list(dict.fromkeys(m.id for m in letta.messages.list(limit=1000)))
    assert newest_first == ids[::-1]  # Letta's default order is newest first
    # One stored message per page, following the cursor as a client does.
    paged: list[str] = []
    after = None
    while True:
        page = letta.messages.list(order="asc", limit=1, after=after)
        if not page:
            break
        paged.extend(dict.fromkeys(m.id for m in page))
        after = page[-1].id
    assert paged == ids


def test_a_message_is_retrieved_by_id(letta: Letta) -> None:
    ids = _talk(letta, "retrieve-me", "remember this")
    shown = letta.messages.retrieve(ids[0])
    assert [m.message_type for m in shown] == ["user_message"]
    assert shown[0].content == "remember this"
    with pytest.raises(letta_client.NotFoundError):
        letta.messages.retrieve("message-00000000-0000-4000-8000-000000000000")
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.messages.retrieve("not-a-message")


def test_message_types_filter_the_listing(letta: Letta) -> None:
    _talk(letta, "filtered", "just users please")
    shown = letta.messages.list(include_return_message_types=["user_message"], limit=1000)
    assert shown and {m.message_type for m in shown} == {"user_message"}
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.messages.list(include_return_message_types=["gossip_message"])  # type: ignore[list-item]


def test_message_search_is_answered_as_letta_cloud_only(letta: Letta) -> None:
    with pytest.raises(letta_client.NotFoundError) as raised:
        letta.messages.search(query="hello")
    assert "Letta Cloud" in raised.value.body["detail"]  # type: ignore[index]


def _all_ids(letta: Letta) -> list[str]:
    """Every listed message, oldest first, two stored messages a page."""
    ids: list[str] = []
    after = None
    while page := letta.messages.list(order="asc", limit=2, after=after):
        ids.extend(m.id for m in page if not ids or ids[-1] != m.id)
        after = page[-1].id
    return ids


def test_conversations_are_listed_and_deleted_ones_and_agents_leave_nothing(
    letta: Letta,
) -> None:
    ada = letta.agents.create(name="conv-all-ada").id
    bob = letta.agents.create(name="conv-all-bob").id
    kept = letta.conversations.create(agent_id=ada).id
    dropped = letta.conversations.create(agent_id=ada).id

    def in_conversation(conversation_id: str, text: str) -> set[str]:
        events = letta.conversations.messages.create(
            conversation_id, messages=[{"role": "user", "content": text}]
        )
        return {e.id for e in events if getattr(e, "id", None)}

    in_thread = in_conversation(kept, "in a thread")
    by_default = set(_talk(letta, "", "by default", ada))
    said = in_thread | by_default
    gone = in_conversation(dropped, "soon gone") | set(_talk(letta, "", "bob's", bob))
    listed = _all_ids(letta)
    # Letta's conversation_id filter: one conversation, or every agent's default one.
    assert {m.id for m in letta.messages.list(conversation_id=kept, limit=1000)} == in_thread
    defaults = {m.id for m in letta.messages.list(conversation_id="default", limit=1000)}
    assert by_default <= defaults and not (in_thread & defaults)
    one_by_one = [letta.messages.list(conversation_id=kept, order="asc", limit=1)[0].id]
    while page := letta.messages.list(
        conversation_id=kept, order="asc", limit=1, after=one_by_one[-1]
    ):
        one_by_one.append(page[-1].id)
    assert len(set(one_by_one)) == len(one_by_one) and set(one_by_one) == in_thread
    assert letta.messages.list(conversation_id="nope") == []  # none such: none, as Letta
    assert said | gone <= set(listed) and len(listed) == len(set(listed))
    letta.conversations.delete(dropped)
    letta.agents.delete(bob)
    after = _all_ids(letta)
    assert said <= set(after) and not gone & set(after)
    assert after == [m for m in listed if m not in gone]
