"""What the indexer reads for a stream's next batch, on the SQLite store: the entries, the
stream's head and trimmed mark, and every record the entries name, in two snapshots
however many entries there are (each read of its own was one more snapshot, ~40 us in a
file the writer keeps changing)."""

from __future__ import annotations

from pathlib import Path

from kelpie_trio.agent.messages import Message
from kelpie_trio.models import convert
from kelpie_trio.models.passages import Passage
from kelpie_trio.search import outbox
from kelpie_trio.search.documents import MESSAGE, PASSAGE
from kelpie_trio.search.store_reads import Batch, read_batch
from kelpie_trio.storage import Transaction, keys
from kelpie_trio.storage.chunks import set_blob
from tests.storage.test_sqlite import running

A = "agent-a"


def _message(seq: int) -> Message:
    return Message(id=f"message-{seq}", agent_id=A, seq=seq, role="user", content=f"hello {seq}")


async def _stream(tr: Transaction) -> None:
    set_blob(tr, keys.AGENTS.pack((A,)), b"{}")  # the owner exists
    for seq in range(6):
        set_blob(tr, outbox.message_key(A, seq), convert.encode_record(_message(seq)))
    passage = Passage(id="passage-1", agent_id=A, text="a remembered fact", created_at=1.0)
    set_blob(tr, keys.PASSAGES.pack((A, passage.id)), convert.encode_record(passage))
    # Message 6 is named but not there (deleted since): the index drops it.
    await outbox.record(tr, A, messages=range(7), passages=[passage.id])


async def test_a_batch_reads_its_entries_and_their_records_in_two_snapshots(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await store.transact(_stream)
        reader = store._reader
        assert reader is not None
        start = reader.snapshots
        batch: Batch = await store.transact(lambda tr: read_batch(tr, A, 0, limit=100))
        assert reader.snapshots - start == 2
        assert not batch.rebuild and not batch.more and batch.position == 8
        assert [(d.kind, d.key, d.text) for d in batch.upserts] == [
            (PASSAGE, "passage-1", "a remembered fact"),
            *((MESSAGE, str(seq), f"hello {seq}") for seq in range(6)),
        ]
        assert batch.deletes == [(MESSAGE, "6")]
