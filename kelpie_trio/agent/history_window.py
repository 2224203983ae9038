"""The in-context history an actor keeps between steps (window.py), with what each message
costs a prompt worked out once.

The actor is the only writer of its thread's history, so it reads the in-context history
once per activation and then adds what its transactions commit (commits.py). A step's
prompt shows every message of it but a client's answers to waiting calls (role
"approval": their results show instead), each as a chat message, and the eviction plan
(context.py) needs each shown message's token estimate. Both are made once, when a
message enters the window, and the window keeps its messages in order as they come (a
step appends; only a result filling a place reserved before it, or a message stored
again, makes it sort once). A step is shown runs of the window's columns, not copies,
and the chat column is a `ChatLog` (llm/chat_log.py) on which a provider's encoder keeps
the bytes it made: so a step's own work does not grow with the history, and encoding its
request only with what was added since the last step (the request's bytes do grow: it
carries the whole context).

Plain data, no I/O. Messages are not changed once stored: one stored again at its place
is a new object, and what was made for the old one is made again.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import attrs

from kelpie_trio.agent.context import estimate_tokens
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.step import chat_message
from kelpie_trio.llm.chat_log import ChatLog, ChatRun, ListRun
from kelpie_trio.llm.types import ChatMessage

__all__ = ["HistoryWindow", "Shown"]


@attrs.frozen
class Shown:
    """The in-context history a prompt shows, oldest first: each message, its chat form, its
    token estimate (`estimate_tokens([chat])`) and its role, position by position. Runs of
    the window's columns, not copies (a step's own work does not walk its history)."""

    messages: Sequence[Message]
    chats: ChatRun
    tokens: Sequence[int]
    roles: Sequence[str]

    def after(self, cut: int) -> Shown:
        """What stays once the oldest `cut` messages leave the context."""
        return Shown(self.messages[cut:], self.chats[cut:], self.tokens[cut:], self.roles[cut:])


class HistoryWindow:
    """An actor's in-context history by sequence number (`window[seq]`, `seq in window`,
    `window[seq] = message` once a transaction storing it committed)."""

    # Columns whose dropped front holds more than this many entries, and more than the
    # live ones, are made again with the live ones only (a run of the old ones keeps them).
    compact_after = 64

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._by_seq: dict[int, Message] = {}
        self._seqs: list[int] = []  # every message's, ascending
        self._sorted = True  # False: the columns below are made again before they are read
        self._new_columns()
        for message in messages:
            self[message.seq] = message

    def _new_columns(self) -> None:
        """The shown messages' columns, aligned, ascending, live from `_first` on. They are
        only appended to (a `Shown` is a run of them): what leaves the window moves
        `_first`, and anything else makes new columns."""
        self._first = 0
        self._shown_seqs: list[int] = []
        self._shown: list[Message] = []
        self._chats = ChatLog()
        self._tokens: list[int] = []
        self._roles: list[str] = []

    def __len__(self) -> int:
        return len(self._by_seq)

    def __contains__(self, seq: object) -> bool:
        return seq in self._by_seq

    def __getitem__(self, seq: int) -> Message:
        return self._by_seq[seq]

    def __setitem__(self, seq: int, message: Message) -> None:
        new = seq not in self._by_seq
        self._by_seq[seq] = message
        if not (self._sorted and new and (not self._seqs or seq > self._seqs[-1])):
            self._sorted = False  # out of order, or stored again: sorted once, when read
            return
        self._seqs.append(seq)
        if message.role != "approval":
            self._append_shown(seq, message)

    def _append_shown(
        self, seq: int, message: Message, made: tuple[Message, ChatMessage, int] | None = None
    ) -> None:
        """`made`: what was made for this place before, reused if it was for this message."""
        if made is None or made[0] is not message:
            chat = chat_message(message)
            made = (message, chat, estimate_tokens([chat]))
        self._shown_seqs.append(seq)
        self._shown.append(message)
        self._chats.items.append(made[1])
        self._tokens.append(made[2])
        self._roles.append(message.role)

    def _live(self) -> list[tuple[int, Message, ChatMessage, int]]:
        first = self._first
        return list(zip(self._shown_seqs[first:], self._shown[first:],
                        self._chats.items[first:], self._tokens[first:], strict=True))  # fmt: skip

    def _sort(self) -> None:
        if self._sorted:
            return
        made = {seq: (message, chat, tokens) for seq, message, chat, tokens in self._live()}
        self._seqs = sorted(self._by_seq)
        self._new_columns()
        for seq in self._seqs:
            message = self._by_seq[seq]
            if message.role != "approval":
                self._append_shown(seq, message, made.get(seq))
        self._sorted = True

    def messages(self) -> list[Message]:
        """Every message in the window, oldest first (approvals too)."""
        self._sort()
        return [self._by_seq[seq] for seq in self._seqs]

    def shown(self) -> Shown:
        """What a prompt shows of it (a snapshot: later changes to the window do not
        reach it)."""
        self._sort()
        first, end = self._first, len(self._shown)
        return Shown(
            ListRun(self._shown, first, end),
            self._chats.run(first, end),
            ListRun(self._tokens, first, end),
            ListRun(self._roles, first, end),
        )

    def drop_before(self, seq: int) -> None:
        """The messages before `seq` leave the window (they left the context)."""
        self._sort()
        gone = bisect.bisect_left(self._seqs, seq)
        if not gone:
            return
        for old in self._seqs[:gone]:
            del self._by_seq[old]
        del self._seqs[:gone]
        self._first = bisect.bisect_left(self._shown_seqs, seq, lo=self._first)
        if self._first > self.compact_after and 2 * self._first > len(self._shown_seqs):
            live = self._live()
            self._new_columns()
            for seq_, message, chat, tokens in live:
                self._append_shown(seq_, message, (message, chat, tokens))

    def keep_last(self, limit: int) -> None:
        """At most the newest `limit` messages stay."""
        self._sort()
        if len(self._seqs) > limit:
            self.drop_before(self._seqs[-limit])
