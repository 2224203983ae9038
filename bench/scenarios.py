"""The bench's scenarios. Each starts what it needs, measures one window, and returns a dict.

Every scenario that sends messages also measures the framework floor right after, with the
server stopped, at the same concurrency and provider latency: the trivial route and the relay
route of bench/floor.py, the same number of requests (capped by `floor_requests`). Its CPU per
message is then reported as a ratio to the floor's CPU per request.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import SCENARIOS
from bench.agents_messaging import AgentsMessaging
from bench.approvals import Approvals
from bench.conversations import Conversations
from bench.file_ingestion import FileIngestion
from bench.hot_agent import HotAgent
from bench.http1 import Connection
from bench.idle import Idle
from bench.load import Sample, create_agents, index_caught_up, read_metrics, run_load
from bench.mcp_calls import McpCalls
from bench.params import DEFAULTS, SMOKE
from bench.procs import Attached, Child, Usage, start_fake_provider, start_floor, start_server
from bench.schedules import Schedules
from bench.stats import percentiles, summarize, throughput_series, usage_delta

__all__ = ["SCENARIOS", "Options", "Runner"]

# A measured window waits for the server's search indexer on both sides (`_measured`):
# asked this often, for at most this long (its settle is 3 s, a drain a few ms more).
INDEX_POLL_S = 0.5
INDEX_WAIT_MAX_S = 60.0


@attrs.define
class Options:
    base_url: str | None = None  # an already running Letta-compatible server
    base_url_b: str | None = None  # two-nodes against running servers: the second node
    password: str | None = None
    store: str = "sqlite"
    llm: str = "fake"  # fake: the fake provider over HTTP; sim: the sim model in-process
    smoke: bool = False
    overrides: dict[str, Any] = attrs.field(factory=dict)  # agents/messages/concurrency/latency
    floor: bool = True
    floor_requests: int = 2000
    chunk_gap: float = 0.005  # streaming: seconds between the fake provider's chunks
    provider_port: int = 0  # fixed, so a server started by hand can be pointed at it
    # with base_url: the server's process, for its CPU and RSS; more: its database's
    server_pid: int | list[int] | None = None
    seed: int = 7
    work_dir: Path = Path(".")
    profile: str | None = None  # "py-spy": record the server during each measured window
    model: str | None = None
    embedding: str | None = None

    def params(self, scenario: str) -> dict[str, Any]:
        base = dict((SMOKE if self.smoke else DEFAULTS)[scenario])
        base.update({k: v for k, v in self.overrides.items() if v is not None})
        return base

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.password}"} if self.password else {}

    def handles(self) -> tuple[str, str]:
        if self.llm == "sim":
            return self.model or "sim/agent", self.embedding or "sim/embedding"
        return (
            self.model or "openai/gpt-4o-mini",
            self.embedding or "openai/text-embedding-3-small",
        )


Progress = Callable[[str, int], Callable[[], None]]  # (description, total) -> advance


def _no_progress(description: str, total: int) -> Callable[[], None]:
    return lambda: None


class Runner(
    AgentsMessaging, Approvals, Conversations, HotAgent, McpCalls, Idle, FileIngestion, Schedules
):
    def __init__(self, options: Options, progress: Progress | None = None) -> None:
        self.options = options
        self.progress = progress or _no_progress
        self.samples: dict[str, list[Sample]] = {}  # for the plot
        self._dirs = 0

    # -- plumbing ------------------------------------------------------------

    def _data_dir(self, name: str) -> Path:
        self._dirs += 1
        path = self.options.work_dir / f"{self._dirs:02d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.asynccontextmanager
    async def _provider(self, latency: float) -> AsyncIterator[Child | None]:
        if self.options.llm == "fake" or self.options.floor:
            async with start_fake_provider(
                latency, chunk_gap=self.options.chunk_gap, port=self.options.provider_port
            ) as p:
                yield p
        else:
            yield None

    @contextlib.asynccontextmanager
    async def _server(
        self, data_dir: Path, provider: Child | None, latency: float, **kw: Any
    ) -> AsyncIterator[Child | None]:
        if self.options.base_url:
            pids = self.options.server_pid
            pids = [pids] if isinstance(pids, int) else list(pids or [])
            if not pids:
                yield None
                return
            yield Attached("server", self.options.base_url, pids[0], tuple(pids[1:]))  # type: ignore[misc]
            return
        provider_url = provider.url + "/v1" if provider and self.options.llm == "fake" else None
        sim_latency = latency if self.options.llm == "sim" else 0.0
        async with start_server(
            data_dir,
            store=kw.pop("store", self.options.store),
            provider_url=provider_url,
            sim_latency=sim_latency,
            **kw,
        ) as server:
            yield server

    def _url(self, server: Child | None) -> str:
        if server is not None:
            return server.url
        assert self.options.base_url
        return self.options.base_url

    async def _create(self, url: str, count: int, what: str = "creating agents") -> list[str]:
        model, embedding = self.options.handles()
        advance = self.progress(what, count)
        return await create_agents(
            url,
            count,
            model=model,
            embedding=embedding,
            headers=self.options.headers,
            on_done=advance,
        )

    async def _load(
        self,
        label: str,
        url: str,
        agents: list[str],
        total: int,
        concurrency: int,
        on_sample: Callable[[Sample], None] | None = None,
        **kw: Any,
    ) -> list[Sample]:
        advance = self.progress(label, total)

        def done(sample: Sample) -> None:
            advance()
            if on_sample is not None:
                on_sample(sample)

        return await run_load(
            url,
            agents,
            total=total,
            concurrency=concurrency,
            headers=self.options.headers,
            on_done=done,
            **kw,
        )

    async def _measured(
        self,
        label: str,
        url: str,
        servers: list[Child | None],
        provider: Child | None,
        agents: list[str],
        total: int,
        concurrency: int,
        latency: float,
        on_start: Callable[[Child | None], None] | None = None,
        profile_whole: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        """One measured window: the load, and each process's accounting around it
        (`on_start(server)` just before the load, for a scenario reading it within;
        `profile_whole=False` for one that profiles parts of the window itself).

        The window's CPU is its messages' CPU, their search indexing included: that runs
        after a settle (3 s) behind the commits. So the window opens once the indexer has
        applied what came before (the warm-up's) and closes once it has applied the
        window's own."""
        await self._index_caught_up(servers)
        metrics_before = [await read_metrics(self._url(s), self.options.headers) for s in servers]
        before = [s.usage() if s else None for s in servers]
        if on_start is not None:
            on_start(servers[0])
        provider_before = provider.usage() if provider else None
        profiler = self._start_profiler(label, servers[0]) if profile_whole else None
        samples = await self._load(label, url, agents, total, concurrency, **kw)
        index_wait = await self._index_caught_up(servers)
        after = [s.usage() if s else None for s in servers]
        provider_after = provider.usage() if provider else None
        if profiler is not None:
            await self._stop_profiler(profiler)
        metrics_after = [await read_metrics(self._url(s), self.options.headers) for s in servers]
        self.samples[label] = samples
        result = summarize(samples, latency)
        start = min((s.start for s in samples), default=0.0)
        result["throughput_per_s"] = throughput_series(samples, start)
        ok = result["messages"] - result["errors"]
        result["server"] = _sum_usage(before, after, ok)
        result["index_caught_up_s"] = index_wait  # after the last reply, in the window's CPU
        result["provider"] = usage_delta(provider_before, provider_after, ok)
        window = result["window_s"] or 1.0
        activations = _delta(metrics_before, metrics_after, "kelpie_activations_total")
        forwards = _delta(metrics_before, metrics_after, "kelpie_forwards_total")
        result["activations"] = activations
        result["activations_per_s"] = (
            round(activations / window, 2) if activations is not None else None
        )
        result["forwards"] = forwards
        # The store's side: commits per message, and retries after a conflict per message
        # (writers of one key meeting: e.g. an agent's threads on its shared records).
        commits = _delta(metrics_before, metrics_after, "kelpie_store_commits_total")
        conflicts = _delta(metrics_before, metrics_after, "conflicts")
        read_only = _delta(metrics_before, metrics_after, "kelpie_store_read_only_total")
        reads = _delta(metrics_before, metrics_after, "kelpie_store_reads_total")
        hops = _delta(metrics_before, metrics_after, "kelpie_store_hops_total")
        slow = _delta(metrics_before, metrics_after, "kelpie_store_slow_inline_commits_total")

        def per_msg(count: float | None, digits: int = 3) -> float | None:
            return round(count / ok, digits) if count is not None and ok else None

        result["store"] = {
            "commits_per_msg": per_msg(commits),
            "read_only_per_msg": per_msg(read_only),  # transactions that wrote nothing
            "reads_per_msg": per_msg(reads),  # backend round trips, over all transactions
            "hops_per_msg": per_msg(hops),  # SQLite thread hops (batches), shared under load
            "conflicts_per_msg": per_msg(conflicts or 0.0, 4) if commits is not None else None,
            # COMMITs on the loop that were slow for their size, in the window: each sent
            # the store's batches to its thread for SqliteStore.slow_commit_hold_s
            "slow_inline_commits": slow,
        }
        return result

    async def _index_caught_up(self, servers: list[Child | None]) -> float | None:
        """Seconds until every server's search indexer said it had applied every message
        stored (`kelpie_search_caught_up` on /metrics; a server that does not say is not
        waited for); None if one had not within INDEX_WAIT_MAX_S. Asked every
        INDEX_POLL_S: each ask is a scrape, whose CPU the window would count."""
        started = trio.current_time()
        while True:
            answers = [await index_caught_up(self._url(s), self.options.headers) for s in servers]
            if all(answers):
                return round(trio.current_time() - started, 2)
            if trio.current_time() - started >= INDEX_WAIT_MAX_S:
                return None
            await trio.sleep(INDEX_POLL_S)

    def _start_profiler(self, label: str, server: Child | None) -> Any:
        if self.options.profile != "py-spy" or server is None:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.options.work_dir / f"profile-{label}"
        process = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--rate", "200",
             "--format", "raw", "--output", f"{out}.txt"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return process

    async def _stop_profiler(self, process: subprocess.Popen) -> None:
        import signal

        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        await trio.to_thread.run_sync(process.wait)

    async def _floor(
        self, provider: Child | None, total: int, concurrency: int
    ) -> dict[str, Any] | None:
        """The trivial and relay routes at the same concurrency, with nothing else running."""
        if not self.options.floor or provider is None:
            return None
        total = max(concurrency, min(total, self.options.floor_requests))
        results: dict[str, Any] = {}
        async with start_floor(provider.url + "/v1") as floor:
            for route in ("trivial", "relay"):
                path = f"/{route}"
                # Warm-up: imports, connections, the provider pool.
                await run_load(
                    floor.url, [""], total=concurrency, concurrency=concurrency,
                    path_for=lambda _a, path=path: path,
                )  # fmt: skip
                before, p_before = floor.usage(), provider.usage()
                advance = self.progress(f"floor: {route}", total)
                samples = await run_load(
                    floor.url,
                    [""],
                    total=total,
                    concurrency=concurrency,
                    path_for=lambda _a, path=path: path,
                    on_done=lambda _s, advance=advance: advance(),
                )
                after, p_after = floor.usage(), provider.usage()
                summary = summarize(samples, 0.0)
                ok = summary["messages"] - summary["errors"]
                results[route] = {
                    "requests": summary["messages"],
                    "errors": summary["errors"],
                    "reqs_per_s": summary["msgs_per_s"],
                    "latency_ms": summary["latency_ms"],
                    "cpu_ms_per_req": usage_delta(before, after, ok)["cpu_ms_per_msg"],
                    "rss_mb": usage_delta(before, after, ok)["rss_mb"],
                    "provider_cpu_ms_per_req": usage_delta(p_before, p_after, ok)["cpu_ms_per_msg"],
                }
        return results

    def _finish(
        self, name: str, params: dict[str, Any], measured: dict[str, Any], floor: Any
    ) -> dict[str, Any]:
        cpu = measured["server"]["cpu_ms_per_msg"]
        ratios = {"cpu_vs_relay": None, "cpu_vs_trivial": None}
        if floor and cpu is not None:
            for route, key in (("relay", "cpu_vs_relay"), ("trivial", "cpu_vs_trivial")):
                floor_cpu = floor[route]["cpu_ms_per_req"]
                if floor_cpu:
                    ratios[key] = round(cpu / floor_cpu, 2)
        return {
            "scenario": name,
            "params": {**params, "store": self.options.store, "llm": self.options.llm},
            **measured,
            "floor": floor,
            "ratios": ratios,
        }

    # -- scenarios -----------------------------------------------------------

    async def run(self, name: str) -> dict[str, Any]:
        method = getattr(self, "scenario_" + name.replace("-", "_"))
        started = time.time()
        result = await method(self.options.params(name))
        result["wall_s"] = round(time.time() - started, 1)
        return result

    async def _message_scenario(
        self,
        name: str,
        p: dict[str, Any],
        *,
        streaming: bool = False,
        after_warm_up: Callable[[str, list[str]], Awaitable[None]] | None = None,
        **measure: Any,
    ) -> dict[str, Any]:
        async with self._provider(p["latency"]) as provider:
            async with self._server(self._data_dir(name), provider, p["latency"]) as server:
                url = self._url(server)
                agents = await self._create(url, p["agents"])
                # Warm-up, not measured: every agent active, every connection open.
                warm = max(p["agents"], p["concurrency"], 3)
                await self._load(
                    f"{name}: warm-up", url, agents, warm, min(p["concurrency"], len(agents))
                )
                if after_warm_up is not None:
                    await after_warm_up(url, agents)
                measured = await self._measured(
                    name,
                    url,
                    [server],
                    provider,
                    agents,
                    p["messages"],
                    p["concurrency"],
                    p["latency"],
                    streaming=streaming,
                    **measure,
                )
                if streaming:
                    measured["streaming"] = _streaming_stats(self.samples[name])
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        return self._finish(name, p, measured, floor)

    async def scenario_steady(self, p: dict[str, Any]) -> dict[str, Any]:
        """Many agents, steady load: C conversations, each waiting for its reply."""
        return await self._message_scenario("steady", p)

    async def scenario_streaming(self, p: dict[str, Any]) -> dict[str, Any]:
        """`streaming: true`: time to the first SSE chunk and the gaps between chunks."""
        return await self._message_scenario("streaming", p, streaming=True)

    async def scenario_cold_activation(self, p: dict[str, Any]) -> dict[str, Any]:
        """N agents stored; K of them, drawn at random, get a first message (the agent is
        activated from the store) and then a second one (already active). Activation latency is
        the difference, agent by agent."""
        rng = random.Random(self.options.seed)
        data_dir = self._data_dir("cold-activation")
        async with self._provider(p["latency"]) as provider:
            async with self._server(data_dir, provider, p["latency"]) as server:
                url = self._url(server)
                stored = await self._create(url, p["agents"], "storing agents")
            # A fresh process: nothing of the stored agents is in memory.
            restart = self.options.store == "sqlite" or server is None
            cm = (
                self._server(data_dir, provider, p["latency"])
                if restart
                else contextlib.nullcontext(server)
            )
            async with cm as server2:
                url = self._url(server2)
                picked = rng.sample(stored, min(p["messages"], len(stored)))
                measured = await self._measured_cold(
                    url, server2, provider, picked, p["concurrency"], p["latency"]
                )
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        return self._finish("cold-activation", p, measured, floor)

    async def _measured_cold(
        self,
        url: str,
        server: Child | None,
        provider: Child | None,
        picked: list[str],
        concurrency: int,
        latency: float,
    ) -> dict[str, Any]:
        # Warm the process up on a few agents first (imports, caches, connections), unmeasured.
        warmup, picked = picked[: min(10, len(picked) // 4)], picked[min(10, len(picked) // 4) :]
        await run_load(url, warmup, total=len(warmup), concurrency=1, headers=self.options.headers)
        # A quarter of the agents one at a time first: an activation's own latency. Under the
        # loaded phase's clients, each of them with nothing to wait for, the server is
        # saturated and shares its loop between them, so an activation's extra work there
        # takes about as many times longer as there are clients.
        alone, picked = picked[: len(picked) // 4], picked[len(picked) // 4 :]
        alone_cold, alone_warm = await self._cold_then_warm(url, alone, 1, "one at a time")
        advance = self.progress("cold-activation: first + second message", len(picked))
        metrics_before = await read_metrics(url, self.options.headers)
        before = server.usage() if server else None
        profiler = self._start_profiler("cold-activation", server)  # the loaded phase only
        cold, warm = await self._cold_then_warm(url, picked, concurrency, "loaded", advance)
        after = server.usage() if server else None
        if profiler is not None:
            await self._stop_profiler(profiler)
        metrics_after = await read_metrics(url, self.options.headers)
        self.samples["cold-activation"] = cold
        result = summarize(cold, latency)
        result["warm_latency_ms"] = percentiles([s.latency for s in warm if s.ok])
        result["activation_ms"] = _activation_ms(cold, warm)
        result["activation_alone_ms"] = _activation_ms(alone_cold, alone_warm)
        # The same figure with no activation in it: what the load alone puts in it.
        result["warm_pairs_ms"] = _warm_pairs_ms(warm)
        result["warm_pairs_alone_ms"] = _warm_pairs_ms(alone_warm)
        first = min((s.start for s in cold), default=0.0)
        result["throughput_per_s"] = throughput_series(cold, first)
        # CPU over both messages of each agent; per cold+warm pair.
        result["server"] = usage_delta(before, after, len(cold) + len(warm))
        activations = _delta([metrics_before], [metrics_after], "kelpie_activations_total")
        result["activations"] = activations
        result["activations_per_s"] = (
            round(activations / result["window_s"], 2)
            if activations is not None and result["window_s"]
            else None
        )
        result["provider"] = None
        result["forwards"] = None
        # The store's transactions per agent (its cold message and its warm one together):
        # what an activation adds to a message shows as the pair's excess over two warm ones.
        pairs = min(len(cold), len(warm))

        def per_pair(name: str) -> float | None:
            count = _delta([metrics_before], [metrics_after], name)
            return round(count / pairs, 3) if count is not None and pairs else None

        result["store"] = {
            "commits_per_pair": per_pair("kelpie_store_commits_total"),
            "read_only_per_pair": per_pair("kelpie_store_read_only_total"),
            "batches_per_pair": per_pair("kelpie_store_batches_total"),
            "hops_per_pair": per_pair("kelpie_store_hops_total"),  # of them in the thread
            # how often a slow COMMIT on the loop sent the batches to the thread (a hold each)
            "slow_inline_commits": _delta(
                [metrics_before], [metrics_after], "kelpie_store_slow_inline_commits_total"
            ),
        }
        return result

    async def _cold_then_warm(
        self,
        url: str,
        agents: list[str],
        concurrency: int,
        what: str,
        advance: Callable[[], None] | None = None,
    ) -> tuple[list[Sample], list[Sample]]:
        """Each agent's first message (it activates) then its second (already active),
        from `concurrency` clients that each send as soon as their last reply came."""
        advance = advance or self.progress(f"cold-activation: {what}", len(agents))
        cold: list[Sample] = []
        warm: list[Sample] = []
        queue = iter(agents)

        async def worker() -> None:
            conn = Connection(url, headers=self.options.headers)
            try:
                for agent in queue:
                    for bucket in (cold, warm):
                        body = b'{"messages": [{"role": "user", "content": "hello"}]}'
                        start = time.perf_counter()
                        reply = await conn.request("POST", f"/v1/agents/{agent}/messages", body)
                        bucket.append(
                            Sample(start, time.perf_counter(), reply.status, 1, agent=agent)
                        )
                    advance()
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return cold, warm

    async def scenario_idle_footprint(self, p: dict[str, Any]) -> dict[str, Any]:
        """A active agents, each activated by one message and then left idle: RSS per agent."""
        baseline_agents = min(50, max(1, p["agents"] // 10))
        async with self._provider(p["latency"]) as provider:
            async with self._server(
                self._data_dir("idle-footprint"), provider, p["latency"]
            ) as server:
                url = self._url(server)
                agents = await self._create(url, p["agents"])
                # Activate a few first, so the baseline already holds imports and warm caches.
                await self._load(
                    "idle-footprint: baseline", url, agents[:baseline_agents], baseline_agents, 1
                )
                await trio.sleep(1.0)
                rss0 = server.usage().rss if server else None
                m0 = await read_metrics(url, self.options.headers)
                rest = agents[baseline_agents:]
                measured = await self._measured(
                    "idle-footprint",
                    url,
                    [server],
                    provider,
                    rest,
                    len(rest),
                    p["concurrency"],
                    p["latency"],
                    one_each=True,
                )
                await trio.sleep(2.0)  # idle
                rss1 = server.usage().rss if server else None
                m1 = await read_metrics(url, self.options.headers)
            active_now = m1.get("kelpie_active_actors")
            activated = (active_now - m0.get("kelpie_active_actors", 0.0)) if m1 else len(rest)
            measured["footprint"] = {
                "active_agents": active_now,
                "rss_before_mb": round(rss0 / 2**20, 2) if rss0 else None,
                "rss_after_mb": round(rss1 / 2**20, 2) if rss1 else None,
                "rss_kb_per_idle_agent": (
                    round((rss1 - rss0) / 1024 / activated, 2)
                    if rss0 and rss1 and activated
                    else None
                ),
            }
            floor = await self._floor(provider, len(rest), p["concurrency"])
        return self._finish("idle-footprint", p, measured, floor)

    async def scenario_two_nodes(self, p: dict[str, Any]) -> dict[str, Any]:
        """Two server processes on one SQLite file; requests alternate between them, so about
        half land on the node that does not hold the agent and are forwarded to the one that
        does. CPU per message is both processes' together."""
        data_dir = self._data_dir("two-nodes")
        db = data_dir / "shared.db"
        async with self._provider(p["latency"]) as provider:
            async with contextlib.AsyncExitStack() as stack:
                if self.options.base_url:
                    if not self.options.base_url_b:
                        raise SystemExit("two-nodes against --base-url needs --base-url-b too")
                    servers: list[Child | None] = [None, None]
                    urls = [self.options.base_url, self.options.base_url_b]
                else:
                    servers = []
                    for i in range(2):
                        node = self._server(
                            data_dir, provider, p["latency"], store="sqlite", db=db, name=f"node{i}"
                        )
                        servers.append(await stack.enter_async_context(node))
                    urls = [self._url(s) for s in servers]
                agents = await self._create(urls[0], p["agents"])
                await self._load(
                    "two-nodes: warm-up", urls[0], agents, len(agents),
                    min(p["concurrency"], len(agents)), base_urls=urls,
                )  # fmt: skip
                await self._index_caught_up(servers)  # as in _measured
                metrics_before = [await read_metrics(u, self.options.headers) for u in urls]
                measured = await self._measured_urls(
                    urls, servers, provider, agents, p, metrics_before
                )
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        return self._finish("two-nodes", p, measured, floor)

    async def _measured_urls(
        self,
        urls: list[str],
        servers: list[Child | None],
        provider: Child | None,
        agents: list[str],
        p: dict[str, Any],
        metrics_before: list[dict[str, float]],
    ) -> dict[str, Any]:
        before = [s.usage() if s else None for s in servers]
        provider_before = provider.usage() if provider else None
        samples = await self._load(
            "two-nodes",
            urls[0],
            agents,
            p["messages"],
            p["concurrency"],
            base_urls=urls,
        )
        index_wait = await self._index_caught_up(servers)
        after = [s.usage() if s else None for s in servers]
        provider_after = provider.usage() if provider else None
        metrics_after = [await read_metrics(u, self.options.headers) for u in urls]
        self.samples["two-nodes"] = samples
        result = summarize(samples, p["latency"])
        result["throughput_per_s"] = throughput_series(
            samples, min((s.start for s in samples), default=0)
        )
        ok = result["messages"] - result["errors"]
        result["server"] = _sum_usage(before, after, ok)
        result["index_caught_up_s"] = index_wait  # after the last reply, in the window's CPU
        result["provider"] = usage_delta(provider_before, provider_after, ok)
        result["activations"] = _delta(metrics_before, metrics_after, "kelpie_activations_total")
        result["activations_per_s"] = None
        forwards = _delta(metrics_before, metrics_after, "kelpie_forwards_total")
        result["forwards"] = forwards
        result["forwarded_share"] = round(forwards / ok, 3) if forwards is not None and ok else None
        return result


def _activation_ms(cold: list[Sample], warm: list[Sample]) -> dict[str, float | None]:
    """An activation's latency: each agent's first message less its second."""
    second = {s.agent: s for s in warm if s.ok}
    extra = [c.latency - second[c.agent].latency for c in cold if c.ok and c.agent in second]
    return percentiles([max(0.0, e) for e in extra])


def _warm_pairs_ms(warm: list[Sample]) -> dict[str, float | None]:
    """`_activation_ms` of two warm messages: in the order they were sent, each one's latency
    less the next one's, in disjoint pairs. Under saturating clients a latency is mostly the
    wait behind the other clients' messages, and a difference of two such waits spreads
    whether or not the first message activated: this is that spread alone."""
    sent = sorted((s for s in warm if s.ok), key=lambda s: s.start)
    extra = [a.latency - b.latency for a, b in zip(sent[::2], sent[1::2], strict=False)]
    return percentiles([max(0.0, e) for e in extra])


def _delta(before: list[dict[str, float]], after: list[dict[str, float]], name: str) -> Any:
    values = [a[name] - b.get(name, 0.0) for b, a in zip(before, after, strict=True) if name in a]
    return sum(values) if values else None


def _sum_usage(before: list[Usage | None], after: list[Usage | None], count: int) -> dict:
    """The CPU of every server process in the window, per message; their RSS, summed."""
    if any(b is None for b in before) or any(a is None for a in after):
        return {"cpu_s": None, "cpu_ms_per_msg": None, "rss_mb": None}
    cpu = sum(a.cpu - b.cpu for a, b in zip(after, before, strict=True))  # type: ignore[union-attr]
    rss = sum(a.rss for a in after)  # type: ignore[union-attr]
    loops = [(b.loop_cpu, a.loop_cpu) for a, b in zip(after, before, strict=True)]  # type: ignore[union-attr]
    loop = sum(a - b for b, a in loops) if all(None not in pair for pair in loops) else None
    return {
        "cpu_s": round(cpu, 4),
        "cpu_ms_per_msg": round(cpu / count * 1000, 4) if count else None,
        # Of which the trio loop's thread; the rest is worker threads (SQLite's writer and
        # checkpoints): where a message's CPU is spent, one command away.
        "loop_thread_cpu_ms_per_msg": (round(loop / count * 1000, 4)
                                       if count and loop is not None else None),
        "rss_mb": round(rss / 2**20, 2),
    }  # fmt: skip


def _streaming_stats(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok and s.first_chunk is not None]
    first = [s.first_chunk - s.start for s in ok]  # type: ignore[operator]
    gaps = [b - a for s in ok for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)]
    chunks = [len(s.chunk_times) for s in ok]
    return {
        "time_to_first_chunk_ms": percentiles(first),
        "chunk_gap_ms": percentiles(gaps),
        "chunks_per_reply": round(sum(chunks) / len(chunks), 2) if chunks else None,
    }
