"""A history's chat messages as prompts share them, so a provider encodes each one once.

An actor's window (agent/history_window.py) keeps its in-context history as a `ChatLog`, a
list that only grows at its end; each step's prompt shows a `ChatRun` of it (a start and
an end, no copy) after its own head (the system prompt, a summary), as a `Prompt`. A
provider's wire format keeps what it encoded of a log on the log (`encoded`, by format),
so the next step encodes only the messages added since and copies the rest as bytes:
building a request from the message objects walked the whole context each step, and a hot
agent's CPU per message grew with its history, most of it that walk (the objects of a
long context are no longer in the CPU's caches when the next step comes).

Messages in a log never change: a log whose messages would (one stored again, or out of
order) is replaced by a new one, which its encoders meet as new.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

from kelpie_trio.llm.types import ChatMessage

__all__ = ["ChatLog", "ChatRun", "ListRun", "Prompt"]

T = TypeVar("T")


class _AsTuple(Sequence[T]):
    """Equal to a tuple of the same items (and hashed as one): what it stands for."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple | _AsTuple):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{tuple(self)!r}"


class ListRun(_AsTuple[T], Generic[T]):
    """`items[start:end]` of a list that only grows past `end`, without copying it: it
    stays what it was when made."""

    __slots__ = ("end", "items", "start")

    def __init__(self, items: list[T], start: int, end: int) -> None:
        if not 0 <= start <= end <= len(items):
            raise ValueError(f"run {start}:{end} is not within a list of {len(items)}")
        self.items, self.start, self.end = items, start, end

    def _run(self, start: int, end: int) -> ListRun[T]:
        return ListRun(self.items, start, end)

    def __len__(self) -> int:
        return self.end - self.start

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> ListRun[T]: ...
    def __getitem__(self, index: int | slice) -> T | ListRun[T]:
        if isinstance(index, slice):
            first, stop, stride = index.indices(len(self))
            if stride != 1:
                raise ValueError("a run is sliced with a step of 1 only")
            return self._run(self.start + first, self.start + max(first, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("run index out of range")
        return self.items[self.start + index]

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self.items, self.start, self.end)

    def __reversed__(self) -> Iterator[T]:
        items = self.items
        return (items[i] for i in range(self.end - 1, self.start - 1, -1))


class ChatLog:
    """Chat messages that are only ever appended to (`items`), and what each provider
    format made of them so far (`encoded`, kept by the format's encoder)."""

    __slots__ = ("encoded", "items")

    def __init__(self, items: Sequence[ChatMessage] = ()) -> None:
        self.items: list[ChatMessage] = list(items)
        self.encoded: dict[str, Any] = {}

    def run(self, start: int = 0, end: int | None = None) -> ChatRun:
        return ChatRun(self, start, len(self.items) if end is None else end)


class ChatRun(ListRun[ChatMessage]):
    """A run of a `ChatLog`'s messages (its encoders' caches are the log's)."""

    __slots__ = ("log",)

    def __init__(self, log: ChatLog, start: int, end: int) -> None:
        super().__init__(log.items, start, end)
        self.log = log

    def _run(self, start: int, end: int) -> ChatRun:
        return ChatRun(self.log, start, end)


class Prompt(_AsTuple[ChatMessage]):
    """A request's messages: its own `head` (made for this step) then a `run` of a log."""

    __slots__ = ("head", "run")

    def __init__(self, head: tuple[ChatMessage, ...], run: ChatRun) -> None:
        self.head, self.run = head, run

    def __len__(self) -> int:
        return len(self.head) + len(self.run)

    @overload
    def __getitem__(self, index: int) -> ChatMessage: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ChatMessage]: ...
    def __getitem__(self, index: int | slice) -> ChatMessage | Sequence[ChatMessage]:
        lead = len(self.head)
        if isinstance(index, slice):
            first, stop, stride = index.indices(len(self))
            if stride == 1 and stop <= lead:
                return self.head[first:stop]
            if stride == 1 and first >= lead:
                return self.run[first - lead : max(first, stop) - lead]
            return tuple(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("prompt index out of range")
        return self.head[index] if index < lead else self.run[index - lead]

    def __iter__(self) -> Iterator[ChatMessage]:
        return itertools.chain(self.head, self.run)

    def __reversed__(self) -> Iterator[ChatMessage]:
        return itertools.chain(reversed(self.run), reversed(self.head))
