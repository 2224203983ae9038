"""Key layout: fdb tuple encoding in named subspaces.

`fdb.tuple` and `Subspace` work without libfdb_c, so every backend stores the
same bytes FoundationDB would, and a dump from one backend loads into another.
Each concern gets its own subspace under one root; add new ones here so the
whole layout reads in one place.
"""

from __future__ import annotations

import fdb.tuple
from fdb.subspace_impl import Subspace

__all__ = [
    "AGENTS",
    "ARCHIVES",
    "BLOCKS",
    "CONTEXT",
    "CONVERSATIONS",
    "FILES",
    "FILE_AGENTS",
    "FILE_BYTES",
    "FILE_QUEUE",
    "FILE_TEXT",
    "FOLDERS",
    "IDENTITIES",
    "LEASES",
    "MESSAGES",
    "MESSAGE_IDS",
    "MESSAGE_TIMES",
    "NODES",
    "OUTBOX",
    "PASSAGES",
    "ROOT",
    "SCHEDULES",
    "SEARCH",
    "SESSIONS",
    "SIM",
    "STEPS",
    "TXN_MARKERS",
    "Subspace",
    "pack",
    "prefix_range",
    "unpack",
]

pack = fdb.tuple.pack
unpack = fdb.tuple.unpack

ROOT = Subspace(("kelpie",))

AGENTS = ROOT["agents"]  # (agent_id,) -> agent record
BLOCKS = ROOT["blocks"]  # (block_id,) -> block record
# A history's owner (its "thread") is the agent id for an agent's default conversation
# and the conversation id for any other (agent/conversations.py).
MESSAGES = ROOT["messages"]  # (thread, seq) -> message record
# Every thread's messages in time order, and where an id is (agent/message_index.py).
MESSAGE_TIMES = ROOT["message_times"]  # (created_us, thread, seq) -> message id
MESSAGE_IDS = ROOT["message_ids"]  # (message id, thread) -> (created_us, seq)
PASSAGES = ROOT["passages"]  # (owner: agent_id or archive_id, passage_id) -> archival passage
ARCHIVES = ROOT["archives"]  # (archive_id,) -> archive record (service/archives.py)
SESSIONS = ROOT["sessions"]  # runs (sessions) with their checkpoints: agent/runs.py
CONTEXT = ROOT["context"]  # (thread,) -> AgentContext: in-context start, summary
LEASES = ROOT["leases"]  # (actor key: a thread,) -> lease (node id, epoch, expiry)
CONVERSATIONS = ROOT["conversations"]  # conversation records: agent/conversations.py
NODES = ROOT["nodes"]  # (node_id,) -> node registry entry
OUTBOX = ROOT["outbox"]  # (stream, position) -> search index change (search/outbox.py)
SEARCH = ROOT["search"]  # the outbox's heads, cursors and consumers (search/outbox.py)
IDENTITIES = ROOT["identities"]  # (identity_id,) -> identity (service/identities.py)
SCHEDULES = ROOT["schedules"]  # scheduled messages, due index, firings: service/schedules.py
STEPS = ROOT["steps"]  # (step_id,) -> one agent iteration's record (agent/steps.py)
# Folders and their files (service/folders.py, service/file_worker.py); a file's chunks
# are passages of its folder, under PASSAGES(folder_id, passage_id).
FOLDERS = ROOT["folders"]  # (folder_id,) -> folder record
FILES = ROOT["files"]  # (file_id,) -> file record (status, counts)
FILE_BYTES = ROOT["file_bytes"]  # (file_id,) -> the upload, chunked, until it is parsed
FILE_TEXT = ROOT["file_text"]  # (file_id,) -> the parsed text, chunked
FILE_QUEUE = ROOT["file_queue"]  # (file_id,) -> b"": files the workers have still to process
FILE_AGENTS = ROOT["file_agents"]  # (agent_id, file_id) -> the file as the agent holds it
SIM = ROOT["sim"]  # keys of simulation scenarios, never used by the server
# Idempotency markers of Store.transact: (minute bucket, token) -> attempt number.
TXN_MARKERS = ROOT["system"]["txn"]


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """[begin, end) of every key inside a tuple-packed prefix (as `Subspace.range()`)."""
    return prefix + b"\x00", prefix + b"\xff"
