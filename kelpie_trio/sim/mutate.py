"""Mutation testing of the guarantees: does the DST suite notice when one is removed?

    python -m kelpie_trio.sim.mutate                      # every mutation, tests/dst
    python -m kelpie_trio.sim.mutate fence tool-once      # some of them
    python -m kelpie_trio.sim.mutate -k "not storm" --seeds 5 --list

Each named mutation removes one guarantee by one exact text edit of the production
code (the edit must match exactly once, so a mutation that no longer applies says so
instead of silently testing nothing). For each, the tree (the files git knows, and new
ones not ignored) is copied to a scratch directory, the mutation applied there, and the
suite run on the copy; the working tree is never touched. A mutation is killed when at
least one test fails; the report lists the tests that caught it. A first, unmutated
run is the baseline: a test that fails there is left out of every verdict (and the run
says so), so a flaky or broken test cannot kill a mutation.

`--seeds N` sets DST_SEEDS (bounded runs; the tests' own defaults otherwise). Tests
that assert over a sweep (a fault fired in some seed) may fail at small N: the baseline
catches those.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs

__all__ = ["MUTATIONS", "Mutation", "main"]


@attrs.frozen
class Mutation:
    name: str
    guarantee: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation(
        "fence",
        "an actor's transactions commit only while it holds the agent's lease",
        "kelpie_trio/nursery/actor.py",
        "                    await leases.fence(tr, mine, dispatcher.membership, "
        "dispatcher.env.now())\n",
        "                    pass\n",
    ),
    Mutation(
        "fence-writes",
        "every actor transaction that writes reads the lease (only read-only ones skip it)",
        "kelpie_trio/nursery/actor.py",
        "            if tr.has_writes:\n                if deferred:",
        "            if not tr.has_writes:\n                if deferred:",
    ),
    Mutation(
        "first-write-unchanged",
        "an activation's first write takes the lease only if nobody took it since the "
        "activation read it (else the message goes where it is now)",
        "kelpie_trio/nursery/lease.py",
        "    if current == seen:\n",
        "    if current == seen or current is not None:\n",
    ),
    Mutation(
        "defer-only-free",
        "only a lease nobody holds is left to the first write (an ended holder's late "
        "commits are fenced off by taking it at once)",
        "kelpie_trio/nursery/lease.py",
        "        return isinstance(self.decision, Acquired) and (self.seen is None or "
        "self.seen.released)",
        "        return isinstance(self.decision, Acquired)",
    ),
    Mutation(
        "hold-after-read",
        "an activation whose first message wrote nothing writes its lease before it answers",
        "kelpie_trio/nursery/actor.py",
        "                if self.context.deferred:  # a first message that wrote nothing\n"
        "                    await self.context.hold()\n",
        "",
    ),
    Mutation(
        "fence-released",
        "an activation writes nothing once it has released its lease",
        "kelpie_trio/nursery/lease.py",
        "current.holder != mine.holder or current.released:",
        "current.holder != mine.holder:",
    ),
    Mutation(
        "activation-held",
        "an activation takes the lease in its first transaction, never while another live "
        "node holds it (the message is forwarded there)",
        "kelpie_trio/nursery/actor.py",
        "            if isinstance(decision, leases.HeldElsewhere):\n"
        "                raise HeldElsewhere(decision)\n",
        "",
    ),
    Mutation(
        "send-check",
        "a send to a missing agent is refused, writes nothing and keeps no activation of an "
        "unknown id, also when it skips its own existence check",
        "kelpie_trio/service/messages.py",
        "        and dispatcher.is_active(wanted.thread)\n    )",
        "    )",
    ),
    Mutation(
        "prefetch-attempt",
        "a read SQLite prefetched for one attempt of a transaction never answers a later "
        "attempt (each reads at its own snapshot)",
        "kelpie_trio/storage/sqlite.py",
        "        self._prefetched: dict[bytes, tuple[Get, Batch]] = {}\n",
        '        self._prefetched = getattr(self, "_prefetched", {})\n',
    ),
    Mutation(
        "read-ahead-attempt",
        "a read said ahead and served inline for one attempt of a transaction never "
        "answers a later attempt",
        "kelpie_trio/storage/sqlite.py",
        "        self._answered: dict[Any, ReadAhead] = {}\n",
        '        self._answered = getattr(self, "_answered", {})\n',
    ),
    Mutation(
        "checkpoint-shield",
        "a cancel never cuts a checkpoint write in half",
        "kelpie_trio/agent/commits.py",
        "with trio.CancelScope(shield=True, deadline=",
        "with trio.CancelScope(shield=False, deadline=",
    ),
    Mutation(
        "marker-check",
        "a commit of unknown result is not applied twice (the idempotency marker is read)",
        "kelpie_trio/storage/base.py",
        "                if marker is not None and unknown_results:",
        "                if False:",
    ),
    Mutation(
        "marker-conflict",
        "a late landing of an earlier attempt conflicts with the retry (marker read conflict)",
        "kelpie_trio/storage/base.py",
        "                    tr.add_read_conflict_key(marker)\n",
        "",
    ),
    Mutation(
        "tool-once",
        "a tool result stored before a crash is not run again",
        "kelpie_trio/agent/actor.py",
        "                if call.id in outside and call.id not in stored:",
        "                if call.id in outside:",
    ),
    Mutation(
        "lease-takeover",
        "a live lease of another node is not taken over",
        "kelpie_trio/nursery/lease.py",
        "    if current is not None and current.node_id != me.node_id and "
        "holds(current, holder, now):",
        "    if False:",
    ),
    Mutation(
        "lease-epoch",
        "every activation takes a new epoch (the fencing token)",
        "kelpie_trio/nursery/lease.py",
        "    epoch = current.epoch + 1 if current is not None else 1",
        "    epoch = current.epoch if current is not None else 1",
    ),
    Mutation(
        "heartbeat-renewal",
        "a node never renews its heartbeat once it has expired (it joins as a new incarnation)",
        "kelpie_trio/nursery/membership.py",
        "    if not mine.live(now):\n        return None\n    return NodeInfo(",
        "    if False:\n        return None\n    return NodeInfo(",
    ),
    Mutation(
        "fence-heartbeat",
        "a node whose heartbeat expired commits nothing for any of its agents",
        "kelpie_trio/nursery/lease.py",
        "    if lapsed(mine, me, now):\n        raise LeaseLost(",
        "    if False:\n        raise LeaseLost(",
    ),
    Mutation(
        "resume-point",
        "a step resumed after a crash goes on from its stored reply, not a new LLM call",
        "kelpie_trio/agent/actor.py",
        "            pending = run.checkpoint.pending_seq\n",
        "            pending = None\n",
    ),
    Mutation(
        "engine-conflicts",
        "the store refuses a commit whose reads a later commit overwrote",
        "kelpie_trio/storage/engine.py",
        "            if _overlaps(request.read_ranges, write_ranges):",
        "            if False:",
    ),
    Mutation(
        "compact-fence",
        "a compaction a client asked for writes the context only while it holds the lease",
        "kelpie_trio/agent/window.py",
        "        if not await self._checkpointed(save):",
        "        if not await self.service.store.transact(save):",
    ),
    Mutation(
        "compact-covers",
        "a compaction moves the context's start only past messages its summary covers",
        "kelpie_trio/agent/window.py",
        "            start_seq=history[cut].seq,\n            summary=summary,",
        "            start_seq=history[-1].seq,\n            summary=summary,",
    ),
    Mutation(
        "compact-once",
        "a compaction delivered twice compacts once",
        "kelpie_trio/agent/window.py",
        "        if done is not None and done.request_id == request_id:",
        "        if False:",
    ),
    Mutation(
        "new-run-waits",
        "a new run waits for the runs of its agent that a crash left unfinished",
        "kelpie_trio/agent/actor.py",
        "            if earlier and not after_earlier:",
        "            if False:",
    ),
    Mutation(
        "web-time-limit",
        "a web server that never answers ends at fetch_webpage's time limit, a tool error",
        "kelpie_trio/tools/web.py",
        "        with trio.move_on_after(settings.timeout):",
        "        with trio.move_on_after(settings.timeout * 1000):",
    ),
    Mutation(
        "archive-outbox",
        "an archive's passages reach the index (their outbox entry is in their transaction)",
        "kelpie_trio/service/archives.py",
        "            await outbox.record(tr, archive_id, passages=[p.id for p in made])",
        "            pass",
    ),
    Mutation(
        "archive-detach",
        "a detached archive's passages are no longer an agent's",
        "kelpie_trio/service/archives.py",
        "            else:\n                tr.clear(link)\n",
        "            else:\n",
    ),
    Mutation(
        "a2a-key",
        "a resumed step's send to another agent joins the turn the first send started",
        "kelpie_trio/agent/multi_agent.py",
        "            target, body, idempotency_key=key, waiting_chain=[*chain, sender]",
        "            target, body, idempotency_key=None, waiting_chain=[*chain, sender]",
    ),
    Mutation(
        "a2a-cycle",
        "a wait on an agent already waiting up the chain fails at once (no deadlock)",
        "kelpie_trio/agent/multi_agent.py",
        '    if refusal is not None:\n        return "error", refusal',
        '    if False:\n        return "error", refusal',
    ),
    Mutation(
        "a2a-time-limit",
        "a wait for another agent's reply ends at its time limit, a tool error",
        "kelpie_trio/agent/multi_agent.py",
        'limit = float(getattr(service, "agent_wait_timeout", DEFAULT_WAIT_TIMEOUT))',
        'limit = float(getattr(service, "agent_wait_timeout", DEFAULT_WAIT_TIMEOUT)) * 1000',
    ),
    Mutation(
        "window-restored",
        "a message stored again at its place is shown as stored now, not as first made",
        "kelpie_trio/agent/history_window.py",
        "        if made is None or made[0] is not message:",
        "        if made is None:",
    ),
    Mutation(
        "window-order",
        "the window shows its messages in sequence order, whatever order they came in",
        "kelpie_trio/agent/history_window.py",
        "        if not (self._sorted and new and (not self._seqs or seq > self._seqs[-1])):",
        "        if not (self._sorted and new):",
    ),
    Mutation(
        "window-retried",
        "after a retried checkpoint the window is read again, not patched with the last try",
        "kelpie_trio/agent/commits.py",
        "            if attempts > 1:",
        "            if False:",
    ),
    Mutation(
        "schedule-firing-record",
        "a claimed firing is recorded with the claim, so a crash before its send loses nothing",
        "kelpie_trio/service/schedules.py",
        "                tr.set(FIRINGS.pack((schedule_id, due_us)), "
        "convert.encode_record(firing))\n",
        "",
    ),
    Mutation(
        "schedule-key",
        "a firing sent again (after a crash, by another node) joins the run it started",
        "kelpie_trio/service/schedules.py",
        "idempotency_key=firing.key)",
        "idempotency_key=None)",
    ),
    Mutation(
        "file-takeover",
        "a file whose worker died (its claim past its lease) is taken over, never stuck",
        "kelpie_trio/service/file_worker.py",
        "if record.claimed_until is not None and record.claimed_until > now:",
        "if record.claimed_until is not None:",
    ),
    Mutation(
        "file-open-limit",
        "an agent never has more files open than its max_files_open (LRU closing)",
        "kelpie_trio/files/tools.py",
        "    return [s.file_name for s in others[: max(0, excess)]]",
        "    return []",
    ),
    Mutation(
        "file-claim-epoch",
        "a file worker that outlived its claim writes nothing over the one that took over",
        "kelpie_trio/service/file_worker.py",
        "        if record is None or record.attempts != claimed.attempts:",
        "        if record is None:",
    ),
    Mutation(
        "sleeptime-key",
        "a sleeptime companion's run is keyed by the primary's run, so it starts once",
        "kelpie_trio/service/sleeptime.py",
        "body, trigger_key(turn.id), True)",
        "body, None, True)",
    ),
    Mutation(
        "embed-with-passage",
        "a passage's vector is written in the passage's transaction, so it is embedded once",
        "kelpie_trio/service/passages.py",
        "                write_passage(tr, passage, vectors[i])",
        "                write_passage(tr, passage)",
    ),
    Mutation(
        "vectors-clear-gone",
        "an empty rebuild clears the vectors only of an agent still gone",
        "kelpie_trio/search/indexer.py",
        "if batch.rebuild and not batch.upserts and not await stream_exists(tr, stream):",
        "if batch.rebuild and not batch.upserts:",
    ),
    Mutation(
        "stream-per-thread",
        "the threads of one agent record their messages on streams of their own, so their "
        "writes never meet on one outbox head",
        "kelpie_trio/search/outbox.py",
        '    return f"{agent_id}{_SEP}{thread}" if is_conversation(thread) else agent_id',
        "    return agent_id",
    ),
    Mutation(
        "stream-scope",
        "a stream's rebuild replaces only the documents that stream feeds",
        "kelpie_trio/search/index.py",
        "                    if in_scope(stream, kind, key):",
        "                    if True:",
    ),
    Mutation(
        "stream-legacy-entry",
        "an older version's entry on the agent stream for a conversation's message reaches "
        "the index (its conversation's stream is rebuilt first)",
        "kelpie_trio/search/store_reads.py",
        "            threads_named[feeds] = None  # rebuilt in its own stream's compare-and-set",
        "            pass",
    ),
    Mutation(
        "stream-known-gone",
        "a deleted conversation's documents leave an index that holds its stream",
        "kelpie_trio/search/indexer.py",
        "            for stream in dict.fromkeys([*listed, *known]):",
        "            for stream in listed:",
    ),
    Mutation(
        "sleeptime-threads",
        "a sleeptime companion counts the turns of every conversation of its primary",
        "kelpie_trio/service/sleeptime.py",
        "        threads = await agent_threads(tr, primary_id)\n",
        "        threads = [primary_id]\n",
    ),
    Mutation(
        "sleeptime-before-turn",
        "a companion's run reads what the other conversations said before its turn only",
        "kelpie_trio/service/sleeptime.py",
        "            for run, last in counted[:index]:",
        "            for run, last in counted:",
    ),
    Mutation(
        "import-group-processed",
        "an imported group's companion goes on reading where the original's stopped",
        "kelpie_trio/service/agentfile.py",
        "                set_processed_place(group, thread, seq)",
        "                pass",
    ),
    Mutation(
        "message-index-clear",
        "a removed history leaves no entries in the top-level message index",
        "kelpie_trio/agent/message_index.py",
        "        for m in decode_messages(whole):\n            _unindex(tr, m)\n",
        "",
    ),
    Mutation(
        "wait-graph",
        "a wait that closes a cycle across requests is refused (the wait-for graph)",
        "kelpie_trio/agent/wait_graph.py",
        "    if path is not None:\n        return [thread, *path]\n",
        "",
    ),
    Mutation(
        "mcp-name-clash",
        "an MCP server listing a tool name that another tool has is refused whole",
        "kelpie_trio/service/mcp_servers.py",
        "        if taken:\n            raise ToolNameClash(server, taken)\n",
        "",
    ),
    Mutation(
        "resume-peer-expired",
        "a run a crashed node left is resumed soon after its heartbeat runs out (peer watch)",
        "kelpie_trio/service/resume.py",
        "                        sweep_at = clock()\n"
        "                        expired = now_expired\n",
        "                        expired = now_expired\n",
    ),
    Mutation(
        "resume-pause-wake",
        "a paused run is resumed when its pause ends (its commit wakes the resume sweep)",
        "kelpie_trio/agent/runs.py",
        "        tr.notify_on_commit(PAUSED)\n",
        "        pass\n",
    ),
    Mutation(
        "resume-driver-failed",
        "a run whose driver failed here is resumed within an interval (it wakes the sweep)",
        "kelpie_trio/service/messages.py",
        "            self.look_for_open_runs()  # it may be left open: the resume sweep",
        "            pass  #",
    ),
    Mutation(
        "reask-whole",
        "a reply asked again after a crash is given whole on a resumed stream, even when "
        "its tag is the lost reply's",
        "kelpie_trio/service/run_positions.py",
        "    if message.streamed is False:\n",
        "    if False:\n",
    ),
    Mutation(
        "reask-no-tokens",
        "a reply asked again after a crash streams no token deltas (it is stored as not streamed)",
        "kelpie_trio/agent/actor.py",
        "tokens=not recovered",
        "tokens=True",
    ),
    Mutation(
        "marker-collect-idle",
        "an idle store stops collecting markers once its own are gone (collection leaves none)",
        "kelpie_trio/storage/base.py",
        "        await self.transact(clear, idempotent=True)\n",
        "        await self.transact(clear)\n",
    ),
    Mutation(
        "sync-durable-batch",
        "a write batch holding any durable commit is synced (a heartbeat beside it does not "
        "make it skip the fsync)",
        "kelpie_trio/storage/sqlite_writer.py",
        'level = "FULL" if any(op.request.durable for op in commits) else "NORMAL"',
        'level = "FULL" if all(op.request.durable for op in commits) else "NORMAL"',
    ),
    Mutation(
        "moved-in-count",
        "a run a transfer moves into a thread is found there even by an actor that had seen "
        "none open (the move counts itself)",
        "kelpie_trio/agent/runs.py",
        "    tr.add(MOVED_IN.pack((target,)), 1)\n",
        "",
    ),
    Mutation(
        "advance-all",
        "a drain records the cursors of every stream it applied, in one commit",
        "kelpie_trio/search/indexer.py",
        "            for stream, (position, gone) in advances.items():\n",
        "            for stream, (position, gone) in {}.items():\n",
    ),
    Mutation(
        "activation-context",
        "an actor is spawned from an empty context, not its activating caller's (a request's)",
        "kelpie_trio/nursery/dispatcher.py",
        "            empty.run(self._supervisor.start_soon, self._start_host, activation)\n",
        "            self._supervisor.start_soon(self._start_host, activation)\n",
    ),
    Mutation(
        "batch-reads-ahead",
        "the indexer reads the records a stream's batch names in one snapshot, not one each",
        "kelpie_trio/search/store_reads.py",
        "                prefetch_blob(tr, _record_key(owner, change))\n",
        "                pass\n",
    ),
    Mutation(
        "view-blocks-ahead",
        "a step's view reads the blocks of the last step's view with the agent, in one snapshot",
        "kelpie_trio/service/agents.py",
        "        for block_id in (*expected_blocks, *(isolated or {}).values()):\n",
        "        for block_id in ():\n",
    ),
    Mutation(
        "polls-on-the-beat",
        "an idle node's polls end on its heartbeat's ticks, one wake-up for all of them",
        "kelpie_trio/env.py",
        "        if self.ticks is None or math.isinf(deadline):  # inf: no poll at all\n",
        "        if True:\n",
    ),
    Mutation(
        "indexer-poll-on-the-beat",
        "the indexer's idle poll ends on the node's ticks",
        "kelpie_trio/search/indexer.py",
        "            with trio.move_on_at(self.env.poll_time(poll)):\n",
        "            with trio.move_on_after(poll):\n",
    ),
    Mutation(
        "indexer-caught-up",
        "the indexer says it is caught up only once no commit's wake-up is pending",
        "kelpie_trio/search/indexer.py",
        "        return self._waiting and not self._wake.is_set()\n",
        "        return self._waiting\n",
    ),
    Mutation(
        "inline-slow-commit",
        "a slow inline COMMIT (its fsync) sends the next batches to the SQLite writer thread",
        "kelpie_trio/storage/sqlite.py",
        "        if version is not None and writer.last_commit_s > allowed:\n",
        "        if version is not None and writer.last_commit_s > 1e9:\n",
    ),
    Mutation(
        "inline-max-writes",
        "a batch writing more than the bound runs in the SQLite writer thread",
        "kelpie_trio/storage/sqlite.py",
        "        if writes > self.inline_max_writes:\n",
        "        if False:\n",
    ),
    Mutation(
        "checkpoint-tail-inline",
        "after a WAL checkpoint the next batch copies its tail first, on either thread",
        "kelpie_trio/storage/sqlite_writer.py",
        "        if self.checkpoint_tail_due:  # PASSIVE: never waits, on the loop neither\n",
        "        if wait and self.checkpoint_tail_due:\n",
    ),
    Mutation(
        "reads-on-the-writer",
        "between batches the trio thread's reads run on the SQLite writer's connection",
        "kelpie_trio/storage/sqlite_reads.py",
        "        lent = self._writer() if self._writer is not None else None\n",
        "        lent = None\n",
    ),
    Mutation(
        "reads-off-the-writer-in-a-hop",
        "no read on the trio thread uses the writer's connection while a batch holds it",
        "kelpie_trio/storage/sqlite.py",
        "        if self._writer_in_thread or conn is None or conn.in_transaction:\n",
        "        if conn is None or conn.in_transaction:\n",
    ),
    Mutation(
        "writer-waits-only-in-a-hop",
        "the writer's connection waits for another process's lock only in the writer thread",
        "kelpie_trio/storage/sqlite_writer.py",
        '            conn.execute("PRAGMA busy_timeout = 0")  # the loop\'s setting (`open`)\n',
        "            pass\n",
    ),
    Mutation(
        "files-poll-on-the-beat",
        "the file worker's idle poll ends on the node's ticks",
        "kelpie_trio/service/file_worker.py",
        "                wake = (self.env.poll_time(delay) if delay == settings.poll\n",
        "                wake = (trio.current_time() + delay if delay == settings.poll\n",
    ),
    Mutation(
        "schedules-poll-on-the-beat",
        "the schedule firer's idle poll ends on the node's ticks",
        "kelpie_trio/service/schedules.py",
        "                    else self.env.poll_time(settings.poll))  # fmt: skip\n",
        "                    else trio.current_time() + settings.poll)  # fmt: skip\n",
    ),
    Mutation(
        "watch-on-the-beat",
        "the resume sweep's watch of the node records ends on the node's ticks",
        "kelpie_trio/service/resume.py",
        "                watch_at = self.env.poll_time(interval)\n",
        "                watch_at = clock() + interval\n",
    ),
    Mutation(
        "heartbeat-on-the-beat",
        "the heartbeat beats on the node's ticks, where its polls end",
        "kelpie_trio/nursery/dispatcher.py",
        "        if ticks is None or ticks.period > self.config.renew_interval:\n",
        "        if True:\n",
    ),
    Mutation(
        "commit-no-checkpoint",
        "no commit copies the WAL back into the file (the store's checkpoints do, beside)",
        "kelpie_trio/storage/sqlite_writer.py",
        '            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")\n',
        "",
    ),
    Mutation(
        "checkpoint-due",
        "the store checkpoints the WAL every checkpoint_every_commits commits",
        "kelpie_trio/storage/sqlite.py",
        "                    self._checkpoint_due.set()\n",
        "                    pass\n",
    ),
    Mutation(
        "checkpoint-tail",
        "after a checkpoint beside the commits, the writer copies the pages appended "
        "meanwhile before its next batch, so that the log starts over",
        "kelpie_trio/storage/sqlite.py",
        "                self._writer.checkpoint_tail_due = True"
        "  # read by the writer's next batch\n",
        "",
    ),
    Mutation(
        "checkpoint-failure",
        "a checkpoint that fails fails no commit (the store goes on)",
        "kelpie_trio/storage/sqlite.py",
        "            except sqlite3.Error as exc:\n                # Another process checkpointing",
        "            except ZeroDivisionError as exc:\n"
        "                # Another process checkpointing",
    ),
]

_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)")


def _tracked_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in out.stdout.splitlines() if (root / line).is_file()]


def _copy_tree(root: Path, files: list[str], dest: Path) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def _apply(tree: Path, mutation: Mutation) -> None:
    path = tree / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(
            f"mutation {mutation.name}: the text to change occurs {count} times in "
            f"{mutation.path} (expected once); update the mutation to the code"
        )
    path.write_text(text.replace(mutation.old, mutation.new))


def _run_suite(tree: Path, args: argparse.Namespace) -> tuple[set[str], str, float]:
    """The failing tests of one run on `tree`, and how it ended."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("DST_SEED", None)
    if args.seeds is not None:
        env["DST_SEEDS"] = str(args.seeds)
    command = [sys.executable, "-m", "pytest", *args.paths, "-q", "-rfE", "-p",
               "no:cacheprovider", "--no-header", "-W", "ignore"]  # fmt: skip
    if args.k:
        command += ["-k", args.k]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True,
            timeout=args.timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return set(), "timeout", time.monotonic() - started
    failed = {m.group(1) for line in done.stdout.splitlines() if (m := _FAILED.match(line))}
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    return failed, last, time.monotonic() - started


def _check_imports_from(tree: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import kelpie_trio; print(kelpie_trio.__file__)"],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    if not out.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"the scratch copy imports kelpie_trio from {out.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kelpie_trio.sim.mutate")
    parser.add_argument("names", nargs="*", help="mutations to apply (default: all)")
    parser.add_argument("--paths", nargs="+", default=["tests/dst"], help="tests to run")
    parser.add_argument("-k", default=None, help="pytest -k expression (e.g. 'not storm')")
    parser.add_argument("--seeds", type=int, default=None, help="DST_SEEDS for the runs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutations {sorted(unknown)}")
    if args.list:
        for m in chosen:
            print(f"{m.name:<18} {m.guarantee}  ({m.path})")
        return 0
    root = Path(__file__).resolve().parents[2]
    files = _tracked_files(root)
    survivors = []
    with tempfile.TemporaryDirectory(prefix="kelpie-mutate-") as scratch:
        base = Path(scratch) / "baseline"
        _copy_tree(root, files, base)
        _check_imports_from(base)
        for m in chosen:  # every mutation must apply before anything runs
            _apply(_copy_to(base, Path(scratch) / "check", m.path), m)
        flaky, last, seconds = _run_suite(base, args)
        print(f"baseline: {last} ({seconds:.0f} s)", flush=True)
        if last == "timeout":
            return 2
        for name in sorted(flaky):
            print(f"  failing without a mutation, left out: {name}")
        print(f"\n{'mutation':<18} {'verdict':<8} {'tests':>5}  {'s':>5}  caught by")
        for m in chosen:
            tree = Path(scratch) / m.name
            _copy_tree(root, files, tree)
            _apply(tree, m)
            failed, last, seconds = _run_suite(tree, args)
            caught = sorted(failed - flaky)
            verdict = "timeout" if last == "timeout" else ("killed" if caught else "SURVIVED")
            if verdict == "SURVIVED":
                survivors.append(m.name)
            shown = ", ".join(t.split("::")[-1] for t in caught[:4])
            more = f" (+{len(caught) - 4})" if len(caught) > 4 else ""
            print(f"{m.name:<18} {verdict:<8} {len(caught):>5}  {seconds:>5.0f}  {shown}{more}",
                  flush=True)  # fmt: skip
            shutil.rmtree(tree)
    if survivors:
        print(f"\nsurvived: {', '.join(survivors)}")
    return 1 if survivors else 0


def _copy_to(base: Path, dest: Path, path: str) -> Path:
    """A scratch copy of one file of `base`, to check that a mutation applies."""
    target = dest / path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(base / path, target)
    return dest


if __name__ == "__main__":
    sys.exit(main())
