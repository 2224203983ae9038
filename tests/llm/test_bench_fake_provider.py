"""The bench's fake provider is as strict about the model name as OpenAI: it serves
gpt-4o-mini, and a handle sent as the model gets OpenAI's 404."""

from __future__ import annotations

import functools

import httpx
import trio

from bench.fake_provider import EMBEDDING_DIM, MODEL, REPLY_TEXT, FakeProvider


async def test_the_bench_fake_answers_its_model_and_refuses_a_handle() -> None:
    provider = FakeProvider(latency=0.0, chunk_gap=0.0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, provider.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as http:
            listed = (await http.get("/models")).json()
            body = {"messages": [{"role": "user", "content": "hi"}]}
            refused = await http.post(
                "/chat/completions", json={**body, "model": "openai/" + MODEL}
            )
            answered = await http.post("/chat/completions", json={**body, "model": MODEL})
        nursery.cancel_scope.cancel()
    assert [m["id"] for m in listed["data"]] == [MODEL] == ["gpt-4o-mini"]
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert answered.status_code == 200
    assert answered.json()["choices"][0]["message"]["content"] == REPLY_TEXT


async def test_the_bench_fake_embeds_each_input_of_its_models_only() -> None:
    """One vector per input, in order, for a served embedding model; OpenAI's 404 for any
    other (a handle sent as the model among them)."""
    provider = FakeProvider(latency=0.0, chunk_gap=0.0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, provider.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as http:
            many = await http.post(
                "/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
            )
            one = await http.post(
                "/embeddings", json={"model": "text-embedding-ada-002", "input": "a"}
            )
            refused = await http.post(
                "/embeddings", json={"model": "openai/text-embedding-3-small", "input": ["a"]}
            )
        nursery.cancel_scope.cancel()
    assert many.status_code == 200
    data = many.json()["data"]
    assert [item["index"] for item in data] == [0, 1, 2]
    assert all(len(item["embedding"]) == EMBEDDING_DIM for item in data)
    assert len(one.json()["data"]) == 1
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
