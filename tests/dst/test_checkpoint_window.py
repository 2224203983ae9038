"""The actor's in-memory window after a checkpoint whose transaction was retried
(agent/commits.py `_checkpointed`): a commit of unknown result that landed, then a retry
that failed before it stored anything, then the marker found: the store answers with the
first attempt's result, and the window must still show what that attempt stored."""

from __future__ import annotations

import contextlib
from typing import Any

from kelpie_trio.agent.commits import RunCommits
from kelpie_trio.agent.history_window import HistoryWindow
from kelpie_trio.agent.messages import Message
from kelpie_trio.storage.errors import StorageUnavailable


class _Ctx:
    """`transact` as the store runs it through an unknown result (storage/base.py): the
    first attempt's commit lands unseen, the second fails on a read, the third finds the
    first's marker and returns the first attempt's result."""

    async def transact(self, fn: Any) -> Any:
        first = await fn(None)
        with contextlib.suppress(StorageUnavailable):
            await fn(None)
        return first


class _Actor(RunCommits):
    def __init__(self) -> None:
        self.ctx = _Ctx()
        self.agent_id = "agent-1"
        self.conversation_id = None
        self._window = HistoryWindow([_message(0)])
        self._staged = []


def _message(seq: int) -> Message:
    return Message(id=f"message-{seq}", agent_id="agent-1", seq=seq, created_at=0.0,
                   role="user", content=f"m{seq}")  # fmt: skip


async def test_a_checkpoint_whose_landed_attempt_was_not_the_last_leaves_no_stale_window() -> None:
    actor = _Actor()
    calls = 0

    async def start(tr: Any) -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise StorageUnavailable("injected read failure")
        actor._staged.append(_message(1))  # what `_store` does in the transaction
        return "started"

    assert await actor._checkpointed(start) == "started"
    # Either read again from the store or patched with what landed; never without it.
    assert actor._window is None or 1 in actor._window
