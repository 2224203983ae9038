"""A window's history shown to a prompt without a copy (llm/chat_log.py): a run and a
prompt read as the tuples they stand for, and stay what they were when the log grows."""

from __future__ import annotations

import pytest

from kelpie_trio.llm.chat_log import ChatLog, Prompt
from kelpie_trio.llm.types import ChatMessage


def _chats(*texts: str) -> list[ChatMessage]:
    return [ChatMessage("user", t) for t in texts]


def test_a_run_reads_as_the_slice_it_stands_for_and_does_not_follow_the_log() -> None:
    log = ChatLog(_chats("a", "b", "c", "d"))
    run = log.run(1)
    as_tuple = tuple(log.items[1:])
    log.items.append(ChatMessage("user", "e"))  # the log grows past the run's end
    assert run == as_tuple and as_tuple == run and len(run) == 3
    assert list(reversed(run)) == list(reversed(as_tuple))
    assert (run[0], run[-1]) == (as_tuple[0], as_tuple[-1])
    for cut in range(-4, 5):
        assert run[cut:] == as_tuple[cut:] and run[:cut] == as_tuple[:cut]
    assert run[1:][0] is as_tuple[1] and run[1:].log is log  # a slice is a run of the log
    assert hash(run) == hash(as_tuple) and run != list(as_tuple)
    with pytest.raises(IndexError):
        run[3]
    with pytest.raises(ValueError):
        log.run(2, 9)


def test_a_prompt_reads_as_its_head_then_its_run() -> None:
    log = ChatLog(_chats("a", "b"))
    head = (ChatMessage("system", "s"), ChatMessage("user", "summary"))
    prompt = Prompt(head, log.run())
    whole = (*head, *log.items)
    assert prompt == whole and tuple(prompt) == whole and len(prompt) == 4
    assert list(reversed(prompt)) == list(reversed(whole))
    for start in range(-5, 6):
        for stop in range(-5, 6):
            assert prompt[start:stop] == whole[start:stop]
    assert prompt[::2] == whole[::2] and prompt[-1] is whole[-1]
    assert prompt[:2] == head and prompt[2:].log is log  # neither walks the run
