"""The framework floor: what a bare Quart-Trio app on Hypercorn's trio worker costs per request.

    python -m bench.floor --port 9200 --provider http://127.0.0.1:9100/v1

Two routes, served the way `kelpie-trio serve` serves its app (Quart-Trio, `hypercorn.trio.serve`,
no access log), in a process of its own so its CPU can be read from its own accounting:

- `POST /trivial`: parse a JSON body, answer a ~1 kB JSON object. Nothing can answer a JSON POST
  on this stack for less.
- `POST /relay`: the same, plus one chat completion at the fake provider, through the client
  kelpie-trio's providers use (`LeanOrigin`, kelpie_trio/llm/origin.py: h11 on trio
  streams). Every agent message costs at least this: a JSON POST in, one LLM call out.
  `--client pool` relays through httpx in small pools (`ClientPool`, what the providers used
  before), `--client httpx` through one plain `httpx.AsyncClient` (with hundreds of
  concurrent calls it spends more CPU in httpcore's pool bookkeeping than in HTTP).

kelpie-trio's CPU per message is reported as a ratio to these, measured in the same run under the
same load, because absolute numbers on a shared machine drift.

Prints `ready http://127.0.0.1:<port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import orjson
import trio
from quart import Response, request
from quart_trio import QuartTrio

from kelpie_trio import gc_tuning
from kelpie_trio.http_pool import ClientPool
from kelpie_trio.llm.origin import LeanOrigin

__all__ = ["create_floor_app", "main"]

# A ~1 kB reply, about the size of a one-step LettaResponse.
_FILLER = "x" * 700


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), content_type="application/json")


def create_floor_app(provider_url: str | None, client: str = "lean") -> QuartTrio:
    app = QuartTrio("bench_floor")
    state: dict[str, Any] = {}

    @app.before_serving
    async def open_client() -> None:
        if not provider_url:
            return
        if client == "lean":
            origin = LeanOrigin(provider_url, {}, timeout=120, connect_timeout=10)
            state["origin"], state["close"] = origin, origin.aclose
        elif client == "pool":
            pool = ClientPool(base_url=provider_url, timeout=120)
            state["client"], state["close"] = pool.client, pool.aclose
        else:
            # One client, no limit below the load (a capped pool would queue calls).
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            http = httpx.AsyncClient(base_url=provider_url, timeout=120, limits=limits)
            state["client"], state["close"] = (lambda: contextlib.nullcontext(http)), http.aclose

    @app.after_serving
    async def close_client() -> None:
        if "close" in state:
            await state["close"]()

    @app.post("/trivial")
    async def trivial() -> Response:
        body = orjson.loads(await request.get_data())
        return _json({"id": "floor", "echo": body, "filler": _FILLER})

    @app.post("/relay")
    async def relay() -> Response:
        body = orjson.loads(await request.get_data())
        content = ""
        if isinstance(body, dict) and body.get("messages"):
            content = str(body["messages"][0].get("content", ""))
        call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
        if "origin" in state:
            headers = {"Content-Type": "application/json"}
            reply = await state["origin"].post("chat/completions", orjson.dumps(call), headers)
        else:
            with state["client"]() as http:
                reply = await http.post("chat/completions", json=call)
        answer = reply.json()["choices"][0]["message"]["content"]
        return _json({"id": "floor", "answer": answer, "filler": _FILLER})

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    return app


async def serve(host: str, port: int, provider_url: str | None, client: str) -> None:
    app = create_floor_app(provider_url, client)
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait)
        )
        print(f"ready {binds[0]}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                shutdown.set()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--provider", help="the fake provider's base URL (ending in /v1)")
    parser.add_argument(
        "--client",
        choices=["lean", "pool", "httpx"],
        default="lean",
        help="lean: kelpie-trio's provider client (default); pool: small-pool httpx clients; "
        "httpx: one AsyncClient",
    )
    args = parser.parse_args(argv)
    gc_tuning.tune()  # as `kelpie-trio serve` does: the floor runs on the same settings
    trio.run(serve, args.host, args.port, args.provider, args.client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
