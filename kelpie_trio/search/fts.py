"""The SQLite store's search index: FTS5 in a file of its own (production shell).

The index is derived data, so it lives beside the store's file, not in it
(`kelpie.db` -> `kelpie.search.db`): losing it loses nothing, and
`kelpie-trio reindex` (or deleting it) rebuilds it from the store. One FTS5
table per kind of document holds the terms of text.py joined by spaces, so
FTS5's own `bm25()` ranks exactly as the pure-Python index does; a plain
table beside it holds what filters and ordering need (agent, role, tags,
time, retrievals), and another the applied position of each outbox stream
(an agent's, a conversation's, an archive's; its column keeps its old name,
`agent_id`). A file written before streams per thread (no `format` in its
meta table) is emptied and rebuilt from the store on open: its positions
would not say which conversations it had applied.

All SQLite work runs in worker threads, one hop per operation (a batch of
statements), one at a time (a trio lock); a batch is one SQLite transaction,
with the position compare-and-set inside it, so two processes sharing the
file cannot interleave their updates of one agent. The simulator never runs
this: it uses the memory index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from kelpie_trio.search.documents import Document, Hit, Kind, Query, tags_match
from kelpie_trio.search.index import DocRef, IndexUnavailable, SearchIndex
from kelpie_trio.search.outbox import in_scope, split_stream
from kelpie_trio.search.ranking import order
from kelpie_trio.search.text import terms
from kelpie_trio.search.vectors import Vector, nearest, pack_vector, unpack_vector

__all__ = ["Fts5Index", "index_path_for"]

T = TypeVar("T")

_KINDS: tuple[Kind, ...] = ("passage", "message")
_VECTOR_CACHE_AGENTS = 256  # (agent, kind) vector sets kept in memory
_FORMAT = "streams"  # positions are per outbox stream (one per thread), not per agent
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS positions (agent_id TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS docs (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        role TEXT,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL,
        retrievals INTEGER NOT NULL DEFAULT 0,
        vector BLOB,
        vector_model TEXT,
        UNIQUE (agent_id, kind, key)
    )""",
    "CREATE INDEX IF NOT EXISTS docs_by_time ON docs (agent_id, kind, created_at)",
    *(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS fts_{kind} USING fts5(terms, tokenize='unicode61')"
        for kind in _KINDS
    ),
)


def index_path_for(db_path: Path) -> Path:
    """Where the search index of the store file `db_path` lives."""
    return db_path.with_name(db_path.stem + ".search" + (db_path.suffix or ".db"))


def _match(words: Iterable[str]) -> str:
    # Terms are \w+ runs; quoted, none can be read as FTS5 syntax (AND, NEAR, column:).
    return " OR ".join(f'"{w}"' for w in words)


class Fts5Index(SearchIndex):
    def __init__(self, path: Path, index_id: str) -> None:
        self.path = path
        self._proposed_id = index_id  # used if the file has no id yet
        self.index_id = index_id
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()
        self._positions: dict[str, int] = {}
        self._warmed = False
        # (agent, kind) -> key -> (the vector's model, the vector)
        self._vector_cache: dict[tuple[str, Kind], dict[str, tuple[str | None, Vector]]] = {}

    # -- the thread shell ----------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            try:
                if self._db is None:
                    await trio.to_thread.run_sync(self._open)
                db = self._db
                assert db is not None
                return await trio.to_thread.run_sync(fn, db)
            except (sqlite3.OperationalError, OSError) as error:  # busy, locked, full, I/O
                raise IndexUnavailable(f"search index {self.path}: {error}") from error

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost tail is re-applied
        db.execute("PRAGMA busy_timeout=5000")
        with db:
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(docs)")}
            if "vector_model" not in columns:
                # A file from before vectors were labeled by model: its vectors' model is
                # unknown, so it is rebuilt from the store (which keeps every vector with
                # its model's name: nothing is embedded again).
                db.execute("ALTER TABLE docs ADD COLUMN vector_model TEXT")
                _empty(db)
            found = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if found is None or found[0] != _FORMAT:
                # Positions per agent (before streams per thread): which of an agent's
                # conversations the file had applied is unknown, so it is rebuilt.
                _empty(db)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?)", (_FORMAT,)
                )
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('index_id', ?)",
                (self._proposed_id,),
            )
        self.index_id = db.execute("SELECT value FROM meta WHERE key = 'index_id'").fetchone()[0]
        self._warmed = db.execute("SELECT 1 FROM meta WHERE key = 'warmed'").fetchone() is not None
        self._positions = dict(db.execute("SELECT agent_id, position FROM positions"))
        self._db = db

    async def open(self) -> Fts5Index:
        """Open (or create) the file now; the index's id is the file's."""
        await self._run(lambda db: None)
        return self

    async def aclose(self) -> None:
        async with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- writes --------------------------------------------------------------------

    async def position(self, stream: str) -> int | None:
        if self._db is None:
            await self.open()
        return self._positions.get(stream)

    async def streams(self, owner: str) -> list[str]:
        if self._db is None:
            await self.open()
        return sorted(s for s in self._positions if split_stream(s)[0] == owner)

    async def apply(
        self,
        stream: str,
        *,
        expected: int | None,
        position: int | None,
        upserts: Sequence[Document] = (),
        deletes: Sequence[DocRef] = (),
        replace: bool = False,
    ) -> bool:
        agent_id, _ = split_stream(stream)

        def write(db: sqlite3.Connection) -> tuple[bool, int | None]:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT position FROM positions WHERE agent_id = ?", (stream,)
                ).fetchone()
                current = None if row is None else row[0]
                if current != expected:
                    db.execute("ROLLBACK")
                    return False, current
                if replace:  # the documents this stream feeds, and only those
                    rows = db.execute(
                        "SELECT id, kind, key FROM docs WHERE agent_id = ?", (agent_id,)
                    ).fetchall()
                    for ident, kind, key in rows:
                        if in_scope(stream, kind, key):
                            db.execute(f"DELETE FROM fts_{kind} WHERE rowid = ?", (ident,))
                            db.execute("DELETE FROM docs WHERE id = ?", (ident,))
                for kind, key in deletes:
                    _delete(db, agent_id, kind, key)
                for doc in upserts:
                    _upsert(db, doc)
                if position is None:
                    db.execute("DELETE FROM positions WHERE agent_id = ?", (stream,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO positions (agent_id, position) VALUES (?, ?)",
                        (stream, position),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return True, position

        applied, now = await self._run(write)
        for kind in _KINDS:
            self._vector_cache.pop((agent_id, kind), None)
        # On a refusal the cache learns where another process moved the stream.
        if now is None:
            self._positions.pop(stream, None)
        else:
            self._positions[stream] = now
        return applied

    async def note_retrievals(self, agent_id: str, kind: Kind, keys: Iterable[str]) -> None:
        wanted = [(agent_id, kind, k) for k in keys]
        if not wanted:
            return

        def bump(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "UPDATE docs SET retrievals = retrievals + 1 "
                    "WHERE agent_id = ? AND kind = ? AND key = ?",
                    wanted,
                )

        await self._run(bump)

    async def warmed(self) -> bool:
        if self._db is None:
            await self.open()
        return self._warmed

    async def mark_warmed(self) -> None:
        def mark(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('warmed', '1')")

        await self._run(mark)
        self._warmed = True

    async def clear(self) -> None:
        def wipe(db: sqlite3.Connection) -> None:
            with db:
                _empty(db)

        await self._run(wipe)
        self._positions.clear()
        self._vector_cache.clear()
        self._warmed = False

    # -- reads ---------------------------------------------------------------------

    async def search_vectors(
        self, query: Query, vector: Sequence[float], k: int, model: str | None = None
    ) -> list[Hit]:
        where, params = _filters(query)
        sql = (
            "SELECT d.key, d.created_at, d.retrievals, d.tags FROM docs AS d "
            f"WHERE d.vector IS NOT NULL AND {' AND '.join(where)}"
        )

        def read(db: sqlite3.Connection) -> list[tuple]:
            return db.execute(sql, params).fetchall()

        rows = {
            key: (created_at, retrievals)
            for key, created_at, retrievals, tags in await self._run(read)
            if tags_match(tuple(json.loads(tags)), query.tags, query.tag_match_mode)
        }
        vectors = await self._vectors(query.agent_id, query.kind)
        mine = (
            (key, vectors[key][1])
            for key in rows
            if key in vectors and (model is None or vectors[key][0] == model)
        )
        ranked = nearest(vector, mine, k)
        return [Hit(key, score, *rows[key]) for key, score in ranked]

    async def _vectors(self, agent_id: str, kind: Kind) -> dict[str, tuple[str | None, Vector]]:
        """The agent's vectors of this kind, read once and kept until the agent changes."""
        cached = self._vector_cache.get((agent_id, kind))
        if cached is not None:
            return cached

        def read(db: sqlite3.Connection) -> list[tuple]:
            return db.execute(
                "SELECT key, vector_model, vector FROM docs WHERE agent_id = ? AND kind = ? "
                "AND vector IS NOT NULL",
                (agent_id, kind),
            ).fetchall()

        vectors = {key: (model, unpack_vector(raw)) for key, model, raw in await self._run(read)}
        if len(self._vector_cache) >= _VECTOR_CACHE_AGENTS:
            self._vector_cache.pop(next(iter(self._vector_cache)))  # the oldest entry
        self._vector_cache[(agent_id, kind)] = vectors
        return vectors

    async def search(self, query: Query) -> list[Hit]:
        wanted = sorted(set(terms(query.text)))
        if query.text.strip() and not wanted:
            return []
        where, params = _filters(query)
        if wanted:
            table = f"fts_{query.kind}"
            sql = (
                f"SELECT d.key, -bm25({table}), d.created_at, d.retrievals, d.tags "
                f"FROM {table} JOIN docs AS d ON d.id = {table}.rowid "
                f"WHERE {table} MATCH ? AND {' AND '.join(where)}"
            )
            params.insert(0, _match(wanted))
        else:
            sql = (
                "SELECT d.key, 0.0, d.created_at, 0, d.tags FROM docs AS d "
                f"WHERE {' AND '.join(where)}"
            )

        def read(db: sqlite3.Connection) -> list[tuple]:
            return db.execute(sql, params).fetchall()

        hits = [
            Hit(key, score, created_at, retrievals)
            for key, score, created_at, retrievals, tags in await self._run(read)
            if tags_match(tuple(json.loads(tags)), query.tags, query.tag_match_mode)
        ]
        return order(hits)[query.offset : query.offset + query.limit]


def _filters(query: Query) -> tuple[list[str], list[Any]]:
    """SQL conditions on `docs AS d` for the query's agent, kind, time range and roles."""
    where = ["d.agent_id = ?", "d.kind = ?"]
    params: list[Any] = [query.agent_id, query.kind]
    if query.start is not None:
        where.append("d.created_at >= ?")
        params.append(query.start)
    if query.end is not None:
        where.append("d.created_at <= ?")
        params.append(query.end)
    if query.roles:
        where.append(f"d.role IN ({', '.join('?' * len(query.roles))})")
        params += list(query.roles)
    return where, params


def _empty(db: sqlite3.Connection) -> None:
    """Forget every document and position: the next warm-up rebuilds from the store."""
    for kind in _KINDS:
        db.execute(f"DELETE FROM fts_{kind}")
    db.execute("DELETE FROM docs")
    db.execute("DELETE FROM positions")
    db.execute("DELETE FROM meta WHERE key = 'warmed'")


def _delete(db: sqlite3.Connection, agent_id: str, kind: str, key: str) -> None:
    row = db.execute(
        "SELECT id FROM docs WHERE agent_id = ? AND kind = ? AND key = ?", (agent_id, kind, key)
    ).fetchone()
    if row is not None:
        db.execute(f"DELETE FROM fts_{kind} WHERE rowid = ?", row)
        db.execute("DELETE FROM docs WHERE id = ?", row)


def _upsert(db: sqlite3.Connection, doc: Document) -> None:
    row = db.execute(
        "SELECT id, retrievals FROM docs WHERE agent_id = ? AND kind = ? AND key = ?",
        (doc.agent_id, doc.kind, doc.key),
    ).fetchone()
    kept = 0
    if row is not None:
        kept = row[1]  # a changed document keeps its retrievals: still the same memory
        db.execute(f"DELETE FROM fts_{doc.kind} WHERE rowid = ?", (row[0],))
        db.execute("DELETE FROM docs WHERE id = ?", (row[0],))
    cursor = db.execute(
        "INSERT INTO docs (agent_id, kind, key, role, tags, created_at, retrievals, vector, "
        "vector_model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (doc.agent_id, doc.kind, doc.key, doc.role, json.dumps(list(doc.tags)), doc.created_at,
         kept, None if doc.vector is None else pack_vector(doc.vector), doc.vector_model),
    )  # fmt: skip
    db.execute(
        f"INSERT INTO fts_{doc.kind} (rowid, terms) VALUES (?, ?)",
        (cursor.lastrowid, " ".join(terms(doc.text))),
    )
