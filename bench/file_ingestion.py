"""The file-ingestion scenario (a mixin of bench/scenarios.py's Runner): files uploaded to a
folder through the API, each parsed, chunked, stored and indexed (its chunks embedded by the
folder's model) by the server's file worker until its `processing_status` is `completed`.

The floor is measured in the same run: the same parsers (kelpie_trio/files/parse.py) and
the same chunking on the same bytes, in the bench's own process, with no server. The ratio
of the server's CPU per file to the floor's says what the server adds to the parsing: the
upload's request and transaction, the worker's claims and chunk batches, the indexer and
the embedding calls.

The documents: the test corpus (tests/data/files: a Markdown page, two PDFs, a DOCX and an
HTML page, each under 40 kB) and one generated Markdown document of `size_kb`, uploaded in
turn under names of their own. Every client waits for its file's `completed` by polling the
file (`GET .../files/{id}`) every `_POLL_S`; those polls cost the server CPU too, so their
cost is measured apart after the window and the CPU per file is also given net of them.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import trio

from bench.http1 import Connection, HttpError
from bench.load import Sample
from bench.mixin import RunnerPart
from bench.stats import percentiles, summarize, throughput_series, usage_delta

__all__ = ["FileIngestion", "documents", "generated_markdown", "parse_floor"]

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "files"
CORPUS_FILES = ("handbook.md", "operations.pdf", "tides.pdf", "minutes.docx", "notice.html")
_TYPES = {
    ".md": "text/markdown",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".html": "text/html",
}
_POLL_S = 0.1  # a client's wait between two looks at its file's status
_FILE_WITHIN_S = 120.0  # a file not done by then counts as an error (599)
_POLL_CALIBRATION = 100  # status reads whose CPU is measured apart, after the window

_WORDS = [
    "kelp", "farm", "harbor", "longline", "tide", "otter", "anchor", "buoy", "crew", "net",
    "float", "dock", "season", "storm", "nursery", "harvest", "drying", "rack", "boat", "pier",
    "mooring", "diver", "report", "budget", "cooperative", "water", "current", "rope", "line",
    "spore", "blade", "holdfast", "salinity", "temperature", "sample", "weekly", "record",
]  # fmt: skip


def generated_markdown(size: int, seed: int) -> bytes:
    """A Markdown document of about `size` bytes: headings and paragraphs of sentences
    drawn from a fixed vocabulary (deterministic for a seed)."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    section = 0
    while length < size:
        if section % 4 == 0:
            heading = f"## Section {section // 4 + 1}: {rng.choice(_WORDS).title()}\n\n"
            parts.append(heading)
            length += len(heading)
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraph = " ".join(sentences) + "\n\n"
        parts.append(paragraph)
        length += len(paragraph)
        section += 1
    return "".join(parts).encode()[:size]


def documents(size_kb: int, seed: int) -> list[tuple[str, str, bytes]]:
    """(file name, content type, bytes) of each document uploaded in turn: the corpus's
    (when this is a checkout with tests/) and one generated Markdown document."""
    docs = [
        (name, _TYPES[Path(name).suffix], (CORPUS / name).read_bytes())
        for name in CORPUS_FILES
        if (CORPUS / name).exists()
    ]
    if size_kb > 0:
        docs.append(("generated.md", "text/markdown", generated_markdown(size_kb * 1024, seed)))
    if not docs:
        raise SystemExit("file-ingestion has no documents: give --size-kb above 0")
    return docs


def parse_floor(
    uploads: list[tuple[str, str, bytes]], chunk_chars: int | None = None
) -> dict[str, Any]:
    """The parse and chunk work alone, in this process, on the same bytes: CPU ms per file
    and per MB, and the chunks made (the server's should be as many)."""
    from kelpie_trio.files.kinds import stored_kind
    from kelpie_trio.files.parse import parse
    from kelpie_trio.models.folders import DEFAULT_CHUNK_CHARS
    from kelpie_trio.models.passages import split_text

    chars = chunk_chars or DEFAULT_CHUNK_CHARS

    def work(name: str, content_type: str, data: bytes) -> int:
        kind = stored_kind(content_type, name)
        assert kind is not None, name
        return len(split_text(parse(data, kind), chars))

    seen: set[str] = set()
    for name, content_type, data in uploads:  # warm-up: each parser's imports and caches
        if name not in seen:
            seen.add(name)
            work(name, content_type, data)
    started = time.process_time()
    chunks = sum(work(n, t, d) for n, t, d in uploads)
    cpu = time.process_time() - started
    size = sum(len(d) for _, _, d in uploads)
    return {
        "files": len(uploads),
        "chunks": chunks,
        "cpu_s": round(cpu, 4),
        "cpu_ms_per_file": round(cpu / len(uploads) * 1000, 4) if uploads else None,
        "cpu_ms_per_mb": round(cpu / (size / 2**20) * 1000, 2) if size else None,
    }


def _multipart(name: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    boundary = "kelpie-bench-boundary-7d1f0c"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


class FileIngestion(RunnerPart):
    async def scenario_file_ingestion(self, p: dict[str, Any]) -> dict[str, Any]:
        """`messages` files (the corpus's and a generated Markdown document of `size_kb`,
        in turn) uploaded by `concurrency` clients to one folder, each client waiting for
        its file's `completed` before the next upload. Reports files, MB and chunks per
        second, the server's CPU per file and per MB, and the floor's."""
        docs = documents(p["size_kb"], self.options.seed)
        uploads = [
            (f"{i:05d}-{name}", content_type, data)
            for i, (name, content_type, data) in zip(
                range(p["messages"]), itertools.cycle(docs), strict=False
            )
        ]
        _, embedding = self.options.handles()
        async with self._provider(p["latency"]) as provider:
            data_dir = self._data_dir("file-ingestion")
            async with self._server(data_dir, provider, p["latency"]) as server:
                url = self._url(server)
                folder = await self._create_folder(url, embedding)
                # Warm-up, not measured: each parser's imports, the worker's first claims.
                warm = [(f"warm-{name}", t, d) for name, t, d in docs]
                await self._ingest(url, folder, warm, min(p["concurrency"], len(warm)), "warm-up")
                before = server.usage() if server else None
                provider_before = provider.usage() if provider else None
                profiler = self._start_profiler("file-ingestion", server)
                samples, chunks, polls = await self._ingest(
                    url, folder, uploads, p["concurrency"], "file-ingestion"
                )
                # the indexer may still be embedding the last file's chunks
                settle = await self._settle(server)
                after = server.usage() if server else None
                provider_after = provider.usage() if provider else None
                if profiler is not None:
                    await self._stop_profiler(profiler)
                per_poll = await self._poll_cost(url, folder, samples, server)
            floor = parse_floor(uploads) if self.options.floor else None
        self.samples["file-ingestion"] = samples
        result = summarize(samples, 0.0)
        start = min((s.start for s in samples), default=0.0)
        result["throughput_per_s"] = throughput_series(samples, start)
        ok = result["messages"] - result["errors"]
        result["server"] = usage_delta(before, after, ok)
        result["provider"] = usage_delta(provider_before, provider_after, ok)
        result["activations_per_s"] = None
        result["files"] = _file_figures(
            result, uploads, samples, chunks, polls, per_poll, settle, floor
        )
        return self._finish("file-ingestion", p, result, None)

    async def _create_folder(self, url: str, embedding: str) -> str:
        conn = Connection(url, headers=self.options.headers)
        try:
            body = {"name": f"bench-files-{self.options.seed}", "embedding": embedding}
            reply = await conn.request("POST", "/v1/folders/", json.dumps(body).encode())
        finally:
            await conn.aclose()
        if reply.status not in (200, 201):
            raise RuntimeError(f"creating a folder failed: {reply.status} {reply.body[:300]!r}")
        return json.loads(reply.body)["id"]

    async def _ingest(
        self,
        url: str,
        folder: str,
        uploads: list[tuple[str, str, bytes]],
        concurrency: int,
        label: str,
    ) -> tuple[list[Sample], dict[str, int], int]:
        """Upload every file and wait for each to be done: a sample per file (its upload
        to its `completed`; an `error` status counts as a 422), its chunks by file name,
        and how many status polls were made."""
        advance = self.progress(label, len(uploads))
        queue = iter(uploads)
        samples: list[Sample] = []
        chunks: dict[str, int] = {}
        polls = 0

        async def client() -> None:
            nonlocal polls
            conn = Connection(url, headers=self.options.headers)
            try:
                for name, content_type, data in queue:
                    body, multipart = _multipart(name, content_type, data)
                    start = time.perf_counter()
                    status = 599
                    try:
                        with trio.fail_after(_FILE_WITHIN_S):
                            reply = await conn.request(
                                "POST", f"/v1/folders/{folder}/upload", body,
                                content_type=multipart,
                            )  # fmt: skip
                            status = reply.status
                            record = json.loads(reply.body) if status == 200 else {}
                            while status == 200 and record["processing_status"] not in (
                                "completed", "error",
                            ):  # fmt: skip
                                await trio.sleep(_POLL_S)
                                polls += 1
                                reply = await conn.request(
                                    "GET", f"/v1/folders/{folder}/files/{record['id']}"
                                )
                                status = reply.status
                                record = json.loads(reply.body) if status == 200 else record
                            if status == 200 and record["processing_status"] == "error":
                                status = 422
                            if status == 200:
                                chunks[name] = record.get("total_chunks") or 0
                    except (OSError, trio.TooSlowError, HttpError):
                        await conn.aclose()
                    samples.append(Sample(start, time.perf_counter(), status, agent=name))
                    advance()
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(max(1, concurrency)):
                nursery.start_soon(client)
        return samples, chunks, polls

    async def _poll_cost(
        self, url: str, folder: str, samples: list[Sample], server: Any
    ) -> float | None:
        """The server's CPU ms for one status read, measured apart on a done file."""
        if server is None or not samples:
            return None
        conn = Connection(url, headers=self.options.headers)
        try:
            reply = await conn.request("GET", f"/v1/folders/{folder}/files?limit=1")
            files = json.loads(reply.body) if reply.status == 200 else []
            if not files:
                return None
            path = f"/v1/folders/{folder}/files/{files[0]['id']}"
            await conn.request("GET", path)
            before = server.usage()
            for _ in range(_POLL_CALIBRATION):
                await conn.request("GET", path)
            after = server.usage()
        finally:
            await conn.aclose()
        return round((after.cpu - before.cpu) / _POLL_CALIBRATION * 1000, 4)


def _file_figures(
    result: dict[str, Any],
    uploads: list[tuple[str, str, bytes]],
    samples: list[Sample],
    chunks: dict[str, int],
    polls: int,
    per_poll: float | None,
    settle: float | None,
    floor: dict[str, Any] | None,
) -> dict[str, Any]:
    done = {s.agent for s in samples if s.ok}
    size = sum(len(d) for n, _, d in uploads if n in done)
    mb = size / 2**20
    files = len(done)
    # The window ends when the last file is done; the indexer's tail after it is in the CPU.
    window = result["window_s"] or None
    cpu_s = result["server"]["cpu_s"]
    net = None
    if cpu_s is not None and per_poll is not None and files:
        net = round((cpu_s * 1000 - polls * per_poll) / files, 4)
    total_chunks = sum(chunks.values())
    cpu_per_file = result["server"]["cpu_ms_per_msg"]
    vs_floor = None
    if floor and floor["cpu_ms_per_file"] and net is not None:
        vs_floor = round(net / floor["cpu_ms_per_file"], 2)
    elif floor and floor["cpu_ms_per_file"] and cpu_per_file is not None:
        vs_floor = round(cpu_per_file / floor["cpu_ms_per_file"], 2)
    return {
        "files": files,
        "mb": round(mb, 3),
        "chunks": total_chunks,
        "files_per_s": round(files / window, 2) if window else None,
        "mb_per_s": round(mb / window, 3) if window else None,
        "chunks_per_s": round(total_chunks / window, 1) if window else None,
        "done_ms": percentiles([s.latency for s in samples if s.ok]),
        "cpu_ms_per_file": cpu_per_file,
        "cpu_ms_per_mb": round(cpu_s * 1000 / mb, 2) if cpu_s is not None and mb else None,
        "cpu_ms_per_mb_net_of_polls": (
            round(net * files / mb, 2) if net is not None and mb else None
        ),
        "polls": polls,
        "cpu_ms_per_poll": per_poll,
        "cpu_ms_per_file_net_of_polls": net,
        "index_settle_s": settle,
        "floor": floor,
        "cpu_vs_floor": vs_floor,
    }
