"""letta-client on a real node with a scripted provider: a background stream dropped
mid-run and resumed with `client.runs.messages.stream(run_id, starting_after=...)`, as
Letta's CLI does (service/run_stream.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import letta_client
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import openai_completion, openai_stream, serving

EDIT = ("call_1", "memory_insert", {"label": "human", "new_str": "Likes tea."})


def positioned(events: list) -> list:
    return [e for e in events if e.message_type != "ping"]


async def test_the_sdk_resumes_a_dropped_background_stream_from_its_last_seq_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
            # The client drops in the middle of the answer's tokens.
            fake.script(openai_stream(tool_calls=[EDIT]),
                        openai_stream(["Not", "ed, ", "Ada", "!"]).slow(0.5),
                        openai_completion("Hello."))  # fmt: skip
            stop = trio.Event()
            config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
            dispatcher = await nursery.start(
                functools.partial(run_node, config, shutdown=stop, handle_signals=False)
            )
            letta = AsyncLetta(base_url=dispatcher.address, max_retries=0)
            agent = await letta.agents.create(model="openai/gpt-4o-mini")
            stream = await letta.agents.messages.create(
                agent.id, input="I like tea", streaming=True, background=True,
                stream_tokens=True, include_pings=True,
            )  # fmt: skip
            before: list = []
            async for event in stream:
                before.append(event)
                if event.message_type == "assistant_message":
                    break  # the connection drops after the answer's first token
            await stream.close()
            run_id = before[0].run_id
            last = positioned(before)[-1].seq_id
            resumed = await letta.runs.messages.stream(run_id, starting_after=last, batch_size=1000)
            after = [event async for event in resumed]
            whole = [e async for e in await letta.runs.messages.stream(run_id, include_pings=False)]
            listed = [m async for m in letta.runs.messages.list(run_id)]
            refused = []
            plain = await letta.agents.messages.create(agent.id, input="and now?")
            for run, error in [(plain.messages[0].run_id, letta_client.BadRequestError),
                               ("run-00000000-0000-4000-8000-000000000000",
                                letta_client.NotFoundError)]:  # fmt: skip
                with pytest.raises(error) as caught:
                    await letta.runs.messages.stream(run)
                refused.append(caught.value.body)
            async with httpx.AsyncClient(base_url=dispatcher.address) as raw:
                wire = (await raw.post(f"/v1/runs/{run_id}/stream", json={})).text
            await letta.close()
            stop.set()
    assert before[0].message_type == "ping" and before[0].run_id  # it names the run first
    seen = positioned(before) + positioned(after)
    positions = [e.seq_id for e in seen]
    assert positions == sorted(set(positions))
    assert [e.message_type for e in whole] == [
        "user_message", "tool_call_message", "tool_return_message", "assistant_message",
        "stop_reason", "usage_statistics",
    ]  # fmt: skip
    answer = [e for e in seen if e.message_type == "assistant_message"]
    assert len(answer) > 1 and {e.id for e in answer} == {whole[3].id}  # deltas of one message
    assert "".join(e.content for e in answer) == whole[3].content == "Noted, Ada!"
    others = [(e.message_type, e.seq_id) for e in seen if e.message_type != "assistant_message"]
    assert others == [
        (e.message_type, e.seq_id) for e in whole if e.message_type != "assistant_message"
    ]
    assert [m.id for m in listed] == [e.id for e in whole[:4]]
    assert whole[-2].stop_reason == "end_turn"
    assert refused[0] == {
        "detail": "INVALID_ARGUMENT: Run was not created in background mode, "
        "so it cannot be retrieved."
    }
    assert "not found" in refused[1]["detail"]
    # Each positioned event's SSE `id:` line is its seq_id; the stream ends with [DONE].
    ids = [int(line[4:]) for line in wire.splitlines() if line.startswith("id: ")]
    assert ids == [e.seq_id for e in whole]
    assert wire.rstrip().endswith("data: [DONE]")
