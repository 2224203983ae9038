"""Sleeptime groups: the companion made with its primary, the group routes, and the look
after each of the primary's turns (in any of its conversations) that starts the
companion's runs (agent/sleeptime.py says what and why; this mixin of AgentCases holds the
transactions)."""

from __future__ import annotations

import contextlib
import heapq
import logging
from typing import Any

import attrs

from kelpie_trio.agent import runs
from kelpie_trio.agent.conversations import (
    agent_conversation_ids,
    agent_threads,
    load_conversation,
)
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import Run
from kelpie_trio.agent.sleeptime import (
    GROUPS,
    MEMORY_PERSONA,
    SLEEPTIME_SYSTEM,
    SleeptimeGroup,
    count_turns,
    counted_place,
    processed_place,
    set_counted_place,
    set_processed_place,
    transcript,
    trigger_key,
)
from kelpie_trio.errors import Invalid, NotFound, ServiceError
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent, CreateAgent
from kelpie_trio.models.blocks import Block, CreateBlock
from kelpie_trio.service.common import micros, read_record
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.tools.base import base_tool_names, base_tool_rules

__all__ = ["SleeptimeCases"]

log = logging.getLogger("kelpie_trio.service")

# How far before a turn's first message a transcript may reach (the first one after sleeptime
# is switched on would otherwise be the whole history).
_TRANSCRIPT_BACK = 200
_AGENT_INDEX = keys.ROOT["index"]["agents"]  # service/agents.py's AGENT_INDEX
_COMPANION_TYPES = frozenset({"sleeptime_agent", "voice_sleeptime_agent"})


class SleeptimeCases:
    # AgentCases' and MessageCases': records, the clock and ids, how runs start.
    store: Any
    env: Any
    _new_agent: Any
    _new_block: Any
    _write_block: Any
    _write_agent: Any
    _agent: Any
    _block: Any
    _agent_tools: Any
    _link: Any
    _wanted_run: Any
    _spawn: Any
    _drive_quietly: Any
    look_for_open_runs: Any

    # -- made with the primary -----------------------------------------------------

    @staticmethod
    def wants_companion(agent: Agent) -> bool:
        return bool(agent.enable_sleeptime) and agent.agent_type not in _COMPANION_TYPES

    async def add_companion(self, tr: Transaction, primary: Agent, blocks: list[Block]) -> None:
        """Within the primary's create (or update) transaction: its companion agent and
        their group. The companion holds the primary's blocks themselves (an edit is seen
        by both) and a memory_persona block of its own. `primary` is written again here."""
        spec = CreateAgent(
            name=f"{primary.name}-sleeptime",
            system=SLEEPTIME_SYSTEM,
            agent_type="sleeptime_agent",
            project_id=primary.project_id,
            timezone=primary.timezone,
        )
        model = {
            "model": primary.model,
            "embedding": primary.embedding,
            "llm_config": dict(primary.llm_config),
            "embedding_config": primary.embedding_config,
            "model_settings": primary.model_settings,
        }
        companion = self._new_agent(spec, model)
        persona = self._new_block(CreateBlock(label="memory_persona", value=MEMORY_PERSONA))
        self._write_block(tr, persona, new=True)
        companion.block_ids = [b.id for b in blocks if b.label != "memory_persona"]
        companion.block_ids.append(persona.id)
        base = base_tool_names("sleeptime_agent")
        tools = await self._agent_tools(tr, names=[], tool_ids=[], base=base)
        companion.tool_ids = [t.id for t in tools]
        # As Letta's sleeptime agents: the memory tools go on, memory_finish_edits ends it.
        companion.tool_rules = base_tool_rules([t.name for t in tools]) or None
        group = SleeptimeGroup(
            id=self.env.new_id("group"),
            manager_agent_id=primary.id,
            agent_ids=[companion.id],
            project_id=primary.project_id,
            created_at=self.env.now(),
        )
        # Turns before the group do not count (a group made by an update starts at zero),
        # in any of the primary's conversations.
        group.counted_seq = await _last_seq(tr, primary.id)
        for conversation_id in await agent_conversation_ids(tr, primary.id):
            group.counted_in[conversation_id] = await _last_seq(tr, conversation_id)
        companion.group_id = group.id
        primary.group_id = group.id
        self._save_group(tr, group)
        self._write_agent(tr, companion)
        tr.set(_AGENT_INDEX.pack((micros(companion.created_at), companion.id)), b"")
        self._link(tr, companion)
        self._write_agent(tr, primary)

    async def group_of(self, tr: Transaction, agent: Agent) -> SleeptimeGroup | None:
        """The group `agent` manages (Letta's multi_agent_group), if any."""
        if agent.group_id is None:
            return None
        group = await _load_group(tr, agent.group_id)
        return group if group is not None and group.manager_agent_id == agent.id else None

    async def drop_group(self, tr: Transaction, agent: Agent, delete_agent: Any) -> None:
        """Within an agent's delete: a primary takes its companions and group with it; a
        companion deleted alone leaves its primary without sleeptime (as Letta)."""
        if agent.group_id is None:
            return
        group = await _load_group(tr, agent.group_id)
        if group is None:
            return
        tr.clear(GROUPS.pack((group.id,)))
        if group.manager_agent_id == agent.id:
            for companion_id in group.agent_ids:
                with contextlib.suppress(NotFound):
                    await delete_agent(tr, companion_id)
            return
        primary = await read_record(tr, keys.AGENTS.pack((group.manager_agent_id,)), Agent)
        if primary is not None:
            primary = attrs.evolve(primary, enable_sleeptime=None, group_id=None,
                                   updated_at=self.env.now())  # fmt: skip
            self._write_agent(tr, primary)

    async def share_with_companions(self, tr: Transaction, primary: Agent, block: Block) -> None:
        """Within an attach to a primary: the block attached to its companions too (one
        already holding a block of that label keeps its own)."""
        group = await self.group_of(tr, primary)
        for companion_id in group.agent_ids if group is not None else []:
            companion = await read_record(tr, keys.AGENTS.pack((companion_id,)), Agent)
            if companion is None or block.id in companion.block_ids:
                continue
            labels = {(await self._block(tr, b)).label for b in companion.block_ids}
            if block.label in labels:
                continue
            updated = attrs.evolve(companion, block_ids=[*companion.block_ids, block.id])
            self._write_agent(tr, updated)
            self._link(tr, updated, companion)

    # -- the group routes --------------------------------------------------------------

    async def get_group(self, group_id: str) -> SleeptimeGroup:
        async def get(tr: Transaction) -> SleeptimeGroup:
            group = await _load_group(tr, group_id)
            if group is None:
                raise NotFound("Group", group_id)
            return group

        return await self.store.transact(get)

    async def list_groups(self, *, manager_agent_id: str | None = None) -> list[SleeptimeGroup]:
        async def listing(tr: Transaction) -> list[SleeptimeGroup]:
            rows = await tr.get_prefix(GROUPS.key())
            found = [convert.decode_record(v, SleeptimeGroup) for _, v in rows]
            if manager_agent_id is not None:
                found = [g for g in found if g.manager_agent_id == manager_agent_id]
            return sorted(found, key=lambda g: (g.created_at, g.id))

        return await self.store.transact(listing)

    async def update_group(self, group_id: str, body: Any) -> SleeptimeGroup:
        """PATCH /v1/groups/{id}: the description and the sleeptime manager's frequency."""
        if not isinstance(body, dict):
            raise Invalid.field(["body"], "expected a JSON object", "model_type")
        config = body.get("manager_config")
        frequency: Any = ...
        if config is not None:
            if not isinstance(config, dict):
                raise Invalid.field(["body", "manager_config"], "expected an object")
            kind = config.get("manager_type", "sleeptime")
            if kind != "sleeptime":
                raise Invalid.field(["body", "manager_config", "manager_type"],
                                    "this group's manager_type is 'sleeptime'")  # fmt: skip
            if "sleeptime_agent_frequency" in config:
                frequency = config["sleeptime_agent_frequency"]
                if frequency is not None and (
                    not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1
                ):
                    raise Invalid.field(
                        ["body", "manager_config", "sleeptime_agent_frequency"],
                        "expected a whole number of turns, at least 1 (or null: every turn)",
                    )
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise Invalid.field(["body", "description"], "expected a string")

        async def update(tr: Transaction) -> SleeptimeGroup:
            group = await _load_group(tr, group_id)
            if group is None:
                raise NotFound("Group", group_id)
            if frequency is not ...:
                group.sleeptime_agent_frequency = frequency
            if description is not None:
                group.description = description
            self._save_group(tr, group)
            return group

        return await self.store.transact(update)

    async def delete_group(self, group_id: str) -> None:
        """DELETE /v1/groups/{id}: the group goes, its agents stay (as in Letta); the
        primary's turns start no companion runs any more."""

        async def delete(tr: Transaction) -> None:
            group = await _load_group(tr, group_id)
            if group is None:
                raise NotFound("Group", group_id)
            tr.clear(GROUPS.pack((group_id,)))
            for agent_id in [group.manager_agent_id, *group.agent_ids]:
                agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
                if agent is not None and agent.group_id == group_id:
                    self._write_agent(tr, attrs.evolve(agent, group_id=None))

        await self.store.transact(delete)

    # -- after the primary's turns -------------------------------------------------

    async def sleeptime_catch_up(self, primary_id: str) -> list[Run]:
        """Count the primary's turns finished since the last look and start a companion
        run for each one due (in the background; never raises: a look that fails is made
        again by the next turn's)."""
        try:
            started = await self.store.transact(lambda tr: self._look(tr, primary_id))
        except (ServiceError, StoreError) as error:
            log.warning("sleeptime look for agent %s failed: %r", primary_id, error)
            self.look_for_open_runs()  # and if no turn comes, the resume sweep's look
            return []
        for run in started:
            if not run.finished:
                self._spawn(self._drive_quietly, run)
        return started

    async def sleeptime_sweep(self, behind: list[str] | None = None) -> int:
        """Look at every group whose primary has messages past its cursor (`behind`, or
        read now): a turn whose end no look saw (its node crashed just after storing it,
        and no later turn or retried send came) is counted here. The resume sweep
        (resume.py) runs it when such a turn may exist, not on a timer: each run reads
        every group's threads. Returns how many companion runs it started."""
        if behind is None:
            behind = await self.store.transact(self.sleeptime_groups_behind)
        started = 0
        for primary in behind:
            started += len(await self.sleeptime_catch_up(primary))
        return started

    async def sleeptime_groups_behind(self, tr: Transaction) -> list[str]:
        """Within the caller's transaction: the primaries with messages no look counted."""
        late = []
        for _, raw in await tr.get_prefix(GROUPS.key()):
            group = convert.decode_record(raw, SleeptimeGroup)
            primary = group.manager_agent_id
            for thread in await agent_threads(tr, primary):
                cursor = counted_place(group, thread)
                begin = keys.MESSAGES.pack((thread, (-1 if cursor is None else cursor) + 1))
                end = keys.prefix_range(keys.MESSAGES.pack((thread,)))[1]
                if await tr.get_range(begin, end, limit=1):
                    late.append(primary)
                    break
        return late

    async def _look(self, tr: Transaction, primary_id: str) -> list[Run]:
        agent = await read_record(tr, keys.AGENTS.pack((primary_id,)), Agent)
        if agent is None or agent.agent_type in _COMPANION_TYPES:
            return []
        group = await self.group_of(tr, agent)
        if group is None or not group.agent_ids:
            return []
        threads = await agent_threads(tr, primary_id)
        per_thread: list[list[tuple[Run, int]]] = []  # each turn, its last message's place
        before: dict[str, int] = {}  # where the count stood in each thread
        moved = False
        for thread in threads:
            cursor = counted_place(group, thread)
            if cursor is None:  # a conversation this group has not looked at yet
                cursor = await _first_place(tr, group, thread)
                set_counted_place(group, thread, cursor)
                moved = True
            before[thread] = cursor
            place, finished = await _finished_turns(tr, thread, cursor)
            if place != cursor:
                set_counted_place(group, thread, place)
                moved = True
            per_thread.append(finished)
        if not moved:
            return []  # nothing new: nothing written
        # One count over every conversation, in the order the turns began (as Letta bumps
        # one counter whichever conversation a turn was in); a thread's own turns keep
        # their order in its history whatever the clocks that stamped them said (nodes'
        # clocks differ: a later turn of a thread may carry an earlier time).
        counted = list(heapq.merge(*per_thread, key=lambda item: item[0].created_at))
        if not self.wants_companion(agent):  # switched off: its turns pass uncounted
            counted = []
        due = count_turns(group.turns_counter, len(counted), group.sleeptime_agent_frequency)
        group.turns_counter += len(counted)
        started = []
        for index in due:
            # What the other conversations said before this turn (Letta's transcript stops
            # before the turn's answer): the turns counted ahead of it.
            upto = dict(before)
            for run, last in counted[:index]:
                upto[run.thread] = max(upto[run.thread], last)
            started.append(await self._start_companion(tr, group, counted[index][0], upto))
        self._save_group(tr, group)
        return [r for r in started if r is not None]

    async def _start_companion(
        self, tr: Transaction, group: SleeptimeGroup, turn: Run, upto: dict[str, int]
    ) -> Run | None:
        """The companion's run for the primary's turn `turn`, on what it has not seen: the
        new part of every other conversation that moved before that turn (up to the place
        `upto` gives it), then the turn's own conversation from the last place it was given
        to the end of that turn. The places move in this same transaction, so the next run
        starts after them."""
        start = max(
            processed_place(group, turn.thread) + 1, (turn.first_seq or 0) - _TRANSCRIPT_BACK
        )
        history = await read_history(tr, turn.thread, start_seq=start)
        ends = [i for i, m in enumerate(history) if m.run_id == turn.id]
        if not ends:
            return None  # the turn's messages are gone (a reset): nothing new to read
        parts: list[tuple[str, list[Message]]] = []
        for thread, end in upto.items():
            if thread == turn.thread or end <= processed_place(group, thread):
                continue
            begin = max(processed_place(group, thread) + 1, end - _TRANSCRIPT_BACK)
            moved = [m for m in await read_history(tr, thread, start_seq=begin) if m.seq <= end]
            if moved:
                parts.append((thread, moved))
        parts.append((turn.thread, history[: ends[-1] + 1]))
        shown = [m for _, part in parts for m in part]
        for thread, part in parts:
            set_processed_place(group, thread, part[-1].seq)
        group.last_processed_message_id = shown[-1].id
        body = {"messages": [{"role": "user", "content": transcript(shown)}]}
        wanted, _ = self._wanted_run(group.agent_ids[0], body, trigger_key(turn.id), True)
        return await runs.create_or_find(tr, wanted)

    @staticmethod
    def _save_group(tr: Transaction, group: SleeptimeGroup) -> None:
        tr.set(GROUPS.pack((group.id,)), convert.encode_record(group))


async def _finished_turns(
    tr: Transaction, thread: str, cursor: int
) -> tuple[int, list[tuple[Run, int]]]:
    """The turns of one thread finished after `cursor`, in the order their messages come
    (a thread's runs run one after another, each run's messages together), each with the
    place of its last message, and the new place of the count: up to the first turn not
    over (it and those after wait)."""
    history = await read_history(tr, thread, start_seq=cursor + 1)
    ends: dict[str, int] = {}
    for message in history:
        if message.run_id is not None:
            ends[message.run_id] = message.seq
    place = cursor
    finished: list[tuple[Run, int]] = []
    for run_id, last_seq in ends.items():
        run = await runs.load_run(tr, run_id)
        if run is not None and not run.finished:
            break  # its turn is not over: it and those after it wait for the next look
        place = max(place, last_seq)  # never back (an approval's answer may sit among the
        # messages of the run it answers)
        if run is not None and run.first_seq is not None:
            finished.append((run, place))
    return place, finished


async def _first_place(tr: Transaction, group: SleeptimeGroup, thread: str) -> int:
    """Where the count starts in a conversation the group has not looked at: its start if
    it began after the group (its every turn counts), else its end as it is now (turns
    before the group do not count; a group stored before conversations were counted meets
    its older conversations here)."""
    conversation = await load_conversation(tr, thread)
    if conversation is None or conversation.created_at >= group.created_at:
        return -1
    return await _last_seq(tr, thread)


async def _last_seq(tr: Transaction, thread: str) -> int:
    last = await tr.get_prefix(keys.MESSAGES.pack((thread,)), limit=1, reverse=True)
    return keys.MESSAGES.unpack(last[0][0])[1] if last else -1


async def _load_group(tr: Transaction, group_id: str) -> SleeptimeGroup | None:
    raw = await tr.get(GROUPS.pack((group_id,)))
    return None if raw is None else convert.decode_record(raw, SleeptimeGroup)
