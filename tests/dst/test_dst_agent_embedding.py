"""An agent's own embedding model in the simulator, under storage faults.

Concurrent archival inserts through the API by an agent created with `embedding:
"sim/embedding"`, while the indexer runs, with reads, writes and commits failing (and
commits landing without an answer). Afterwards:

- every passage stored was embedded by the agent's model exactly once (its vector written
  in the passage's own transaction), and by no other model: the server-wide default never
  saw it; neither the running indexer nor a rebuild into a new index embedded it again;
- every stored passage has its vector under the agent's model, made from its current text;
- each is found by meaning, not words: a misspelt query sharing no word with it ranks it
  first (the simulated model is spelling-aware);
- the run is a pure function of its seed: the same seed gives the same answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import trio

from kelpie_trio.api.app import create_app
from kelpie_trio.models import convert
from kelpie_trio.models.passages import Passage
from kelpie_trio.search import IndexerConfig, MemoryIndex, SearchLayer
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import Embedder, HashingEmbedder
from kelpie_trio.search.store_reads import VECTORS
from kelpie_trio.search.vectors import Vector, digest
from kelpie_trio.sim import FaultConfig, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.15))
SIM = "sim/embedding"
WORDS = ("lighthouse", "orchard", "violinist", "glacier", "carpenter", "volcano",
         "telescope", "harvester", "submarine", "waterfall", "blacksmith", "cathedral")  # fmt: skip


class Counting(Embedder):
    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts: Counter[str] = Counter()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.texts.update(texts)
        return await self.inner.embed(texts)


def misspelt(word: str) -> str:
    """Two middle letters swapped: no word in common, most trigrams kept."""
    i = len(word) // 2
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


async def embedding_under_faults(world: SimWorld) -> dict[str, Any]:
    node = world.new_node("api")
    node.store.max_attempts = 4  # give up sooner than production would: more 503s to see
    app = create_app(node.store, env=node.env)
    service = app.config["KELPIE_SERVICE"]
    agents_model, default = Counting(HashingEmbedder(1536)), Counting(HashingEmbedder(32))
    models = EmbeddingModels(default, made={SIM: agents_model})
    config = IndexerConfig(poll_interval=0.05, error_backoff=0.05)
    layer = service.search_layer = SearchLayer(node.store, node.env, config=config, models=models)
    statuses: Counter[int] = Counter()
    acknowledged: dict[str, str] = {}  # text -> passage id

    async with app.test_app() as test_app, trio.open_nursery() as background:
        client = test_app.test_client()
        world.faults.enabled = False
        made = await client.post("/v1/agents/", json={"name": "a", "embedding": SIM})
        agent_id = (await made.get_json())["id"]
        await background.start(layer.run)
        world.faults.enabled = True
        base = f"/v1/agents/{agent_id}/archival-memory"

        async def insert(word: str) -> None:
            text = f"A note on the {word}"
            response = await client.post(base, json={"text": text})
            statuses[response.status_code] += 1
            if response.status_code == 200:
                acknowledged[text] = (await response.get_json())[0]["id"]
            else:
                assert response.status_code == 503, await response.get_json()

        async with trio.open_nursery() as inserts:
            for word in WORDS:
                inserts.start_soon(insert, word)
        await trio.sleep(1)  # the indexer runs on under faults
        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight (unknown results) land or fail by now

        async def stored(tr: Transaction) -> tuple[list[Passage], dict[str, tuple]]:
            parts: dict[str, list[bytes]] = {}
            for key, value in await tr.get_prefix(keys.PASSAGES.pack((agent_id,))):
                parts.setdefault(keys.PASSAGES.unpack(key)[1], []).append(value)
            records = [convert.decode_record(b"".join(v), Passage) for v in parts.values()]
            vectors = {
                VECTORS.unpack(k)[2]: keys.unpack(v)[:2]
                for k, v in await tr.get_prefix(VECTORS.pack((agent_id, "passage")))
            }
            return records, vectors

        records, vectors = await node.store.transact(stored)
        texts = [p.text for p in records]
        assert set(acknowledged) <= set(texts) and len(texts) == len(set(texts))
        for passage in records:
            assert agents_model.texts[passage.text] == 1, f"{passage.text!r} not embedded once"
            assert vectors[passage.id] == (agents_model.name, digest(passage.text))
        assert set(vectors) == {p.id for p in records}, "a vector without its passage"
        assert max(agents_model.texts.values()) == 1  # a refused insert embedded at most once
        assert not set(default.texts) & {f"A note on the {w}" for w in WORDS}

        found: dict[str, str] = {}
        for passage in records:
            word = passage.text.rsplit(" ", 1)[1]
            response = await client.get(f"{base}/search?query={misspelt(word)}&top_k=1")
            [hit] = (await response.get_json())["results"]
            assert hit["content"] == passage.text, (word, hit)
            found[word] = hit["id"]
        # A rebuild into a new index reads the stored vectors: nothing is embedded again.
        before = +agents_model.texts
        again = SearchLayer(node.store, node.env, MemoryIndex("rebuilt"), models=models)
        await again.indexer.catch_up(agent_id)
        assert agents_model.texts == before
        assert all(d.vector_model == agents_model.name
                   for d in again.index.documents(agent_id, "passage"))  # fmt: skip
        background.cancel_scope.cancel()
    return {"statuses": dict(statuses), "found": found}


def test_dst_passages_are_embedded_by_the_agents_model_once_under_storage_faults() -> None:
    totals: Counter[int] = Counter()

    def one(seed: int) -> None:
        outcome = SimWorld(seed, FAULTS).run(embedding_under_faults)
        totals.update(outcome["statuses"])
        if seed < 2:  # the same seed, the same run
            assert SimWorld(seed, FAULTS).run(embedding_under_faults) == outcome

    run_seeds(one, 8)
    assert totals[200] > 0 and totals[503] > 0  # both paths really ran
