"""Agents: create, read, list, edit, delete; their core memory; tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from kelpie_trio.agent import runs, steps, wait_graph
from kelpie_trio.agent.conversations import (
    agent_conversation_ids,
    delete_conversation_record,
    load_conversation,
)
from kelpie_trio.agent.message_index import clear_history
from kelpie_trio.agent.tool_calls import TOOL_RUNS
from kelpie_trio.agent.tool_rules import RuleError, parse_rules
from kelpie_trio.errors import Conflict, Invalid, NotFound
from kelpie_trio.files.tools import check_limits as check_file_limits
from kelpie_trio.llm.catalog import UnknownModel
from kelpie_trio.llm.model_traits import model_settings_from_llm_config
from kelpie_trio.models import convert
from kelpie_trio.models.agents import (
    AGENT_TYPES,
    DEFAULT_SYSTEM,
    UPDATABLE_AGENT_FIELDS,
    Agent,
    AgentView,
    CreateAgent,
)
from kelpie_trio.models.blocks import Block, CreateBlock
from kelpie_trio.search import outbox
from kelpie_trio.service.agent_files import (
    attached_folders,
    directories_in,
    holdings,
    prefetch_attached_folders,
)
from kelpie_trio.service.agent_filters import AgentFilter, count_agents
from kelpie_trio.service.agent_inputs import folder_ids_of, identity_ids_of, secrets_of
from kelpie_trio.service.blocks import BLOCK_AGENTS, BLOCK_INDEX, BlockCases
from kelpie_trio.service.common import Page, micros, page_records, read_record, window
from kelpie_trio.service.identities import forget_member, identity_records, set_agent_identities
from kelpie_trio.service.limits import check_key_parts, check_record
from kelpie_trio.service.passages import clear_agent_passages, detach_all_archives
from kelpie_trio.service.schedules import clear_agent_schedules
from kelpie_trio.service.sleeptime import SleeptimeCases
from kelpie_trio.service.tools import ToolCases
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, prefetch_blob, set_blob
from kelpie_trio.tools.base import base_tool_names, base_tool_rules, wants_base_tool_rules

__all__ = ["AGENT_INDEX", "TAG_INDEX", "AgentCases"]

AGENT_INDEX = keys.ROOT["index"]["agents"]  # (created_us, agent_id) -> b""
TAG_INDEX = keys.ROOT["index"]["agent_tags"]  # (tag, agent_id) -> b""

_ADJECTIVES = ("brave", "calm", "clever", "eager", "gentle", "keen", "lucky", "quiet", "swift")
_ANIMALS = ("kelpie", "otter", "heron", "lynx", "marten", "osprey", "seal", "wren", "yak")


class AgentCases(BlockCases, ToolCases, SleeptimeCases):
    def _resolve_model(self, create: CreateAgent) -> dict[str, Any]:
        """The model fields of a new agent, filled in for its handles as Letta does."""
        handle = create.model or (create.llm_config or {}).get("handle") or self.default_model
        embedding = create.embedding or (create.embedding_config or {}).get("handle")
        try:
            llm_config = self.catalog.llm_config_for(
                handle,
                context_window_limit=create.context_window_limit,
                reasoning=getattr(create, "reasoning", None),
            )
        except UnknownModel as error:
            raise Invalid.field(["body", "model"], str(error)) from None
        try:
            embedding_config = self.catalog.embedding_config_for(embedding) if embedding else None
        except UnknownModel as error:
            raise Invalid.field(["body", "embedding"], str(error)) from None
        settings = model_settings_from_llm_config(llm_config)
        if create.model_settings:
            settings = {**settings, **create.model_settings}
        return {
            "model": handle,
            "embedding": embedding,
            "llm_config": llm_config,
            "embedding_config": embedding_config,
            "model_settings": settings,
        }

    def _new_agent(
        self,
        spec: Any,
        model: dict[str, Any],
        *,
        name: str | None = None,
        project_id: str | None = None,
    ) -> Agent:
        """A new agent record from a create request or an agent file's entry (which
        share their field names); `name` and `project_id` override the spec's."""
        now = self.env.now()
        return Agent(
            id=self.env.new_id("agent"),
            name=name or spec.name or self._new_name(),
            system=spec.system or DEFAULT_SYSTEM,
            agent_type=spec.agent_type,
            description=spec.description,
            metadata=spec.metadata,
            tags=list(dict.fromkeys(spec.tags or [])),
            tool_rules=spec.tool_rules,
            project_id=project_id or spec.project_id,
            template_id=spec.template_id,
            base_template_id=spec.base_template_id,
            timezone=spec.timezone or "UTC",
            hidden=spec.hidden,
            # Letta forces it for workflow agents: each turn starts from a clean context.
            message_buffer_autoclear=spec.message_buffer_autoclear
            or spec.agent_type == "workflow_agent",
            enable_sleeptime=spec.enable_sleeptime,
            max_files_open=spec.max_files_open,
            per_file_view_window_char_limit=spec.per_file_view_window_char_limit,
            created_at=now,
            updated_at=now,
            **model,
        )

    @staticmethod
    def _check_rules(raw: Any) -> None:
        """A 422 for tool rules the loop could not follow (before anything is written)."""
        if raw is None:
            return
        if not isinstance(raw, list):
            raise Invalid.field(["body", "tool_rules"], "expected a list of tool rules")
        try:
            parse_rules(raw)
        except RuleError as error:
            raise Invalid.field(["body", "tool_rules", *error.where], str(error)) from None

    @staticmethod
    def _base_tools_for(spec: Any) -> list[str]:
        """The base tools an agent of this type gets, unless the spec says none; the
        multi-agent tools when it asks for them (whatever include_base_tools says, as Letta)."""
        multi = bool(getattr(spec, "include_multi_agent_tools", False))
        if not spec.include_base_tools:
            return base_tool_names("react_agent", multi_agent=multi)  # those alone
        return base_tool_names(
            spec.agent_type, enable_sleeptime=spec.enable_sleeptime, multi_agent=multi
        )

    def _new_name(self) -> str:
        rng = self.env.rng
        return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_ANIMALS)}-{rng.randrange(1000)}"

    @staticmethod
    def _write_agent(tr: Transaction, agent: Agent) -> None:
        set_blob(tr, keys.AGENTS.pack((agent.id,)), check_record(agent, "agent"))

    async def _agent(self, tr: Transaction, agent_id: str) -> Agent:
        agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
        if agent is None:
            raise NotFound("Agent", agent_id)
        return agent

    async def _view(self, tr: Transaction, agent: Agent) -> AgentView:
        """The agent as the API shows it, with the identities that hold it."""
        view = await self._bare_view(tr, agent)
        return attrs.evolve(view, identities=await identity_records(tr, "agent", agent.id),
                            folders=await attached_folders(tr, agent.id),
                            file_blocks=await holdings(tr, agent.id))  # fmt: skip

    async def _bare_view(self, tr: Transaction, agent: Agent) -> AgentView:
        """Without identities: the agent loop reads this every step and needs none."""
        for block_id in agent.block_ids:  # read in the first one's snapshot
            prefetch_blob(tr, keys.BLOCKS.pack((block_id,)))
        prefetch_attached_folders(tr, agent.id)
        blocks = [await self._block(tr, b) for b in agent.block_ids]
        tools = await self._tools(tr, agent.tool_ids)
        return AgentView(agent, blocks, tools, group=await self.group_of(tr, agent),
                         directories=await directories_in(tr, agent))  # fmt: skip

    @staticmethod
    def _check_labels(blocks: list[Block]) -> None:
        seen: set[str | None] = set()
        for block in blocks:
            if block.label in seen:
                raise Conflict(
                    f"an agent's core memory already has a block labeled {block.label!r}"
                )
            seen.add(block.label)

    def _link(self, tr: Transaction, agent: Agent, old: Agent | None = None) -> None:
        """Keep the tag and block indexes in step with `agent` (replacing `old`'s)."""
        old_tags, old_blocks = (set(old.tags), set(old.block_ids)) if old else (set(), set())
        for tag in old_tags - set(agent.tags):
            tr.clear(TAG_INDEX.pack((tag, agent.id)))
        for tag in set(agent.tags) - old_tags:
            tr.set(TAG_INDEX.pack((tag, agent.id)), b"")
        for block_id in old_blocks - set(agent.block_ids):
            tr.clear(BLOCK_AGENTS.pack((block_id, agent.id)))
        for block_id in set(agent.block_ids) - old_blocks:
            tr.set(BLOCK_AGENTS.pack((block_id, agent.id)), b"")
        self._link_tools(tr, agent, old)

    async def create_agent(self, body: Any) -> AgentView:
        create = convert.structure_api(body, CreateAgent)
        check_file_limits(body)
        identity_ids = identity_ids_of(body)
        check_key_parts(["body", "tags"], create.tags, "a tag")
        if create.agent_type not in AGENT_TYPES:
            raise Invalid.field(["body", "agent_type"], f"unknown agent type {create.agent_type!r}")
        self._check_rules(create.tool_rules)
        model = self._resolve_model(create)
        new_blocks = [
            self._new_block(b, "body") for b in (create.memory_blocks or [])
        ]  # validated before anything is written
        base = self._base_tools_for(create)
        agent = self._new_agent(create, model)
        given = (
            create.secrets if create.secrets is not None else create.tool_exec_environment_variables
        )
        agent.secrets = secrets_of(given, {})
        with_base_rules = wants_base_tool_rules(
            create.agent_type, model["model"] or "", create.tool_rules,
            create.include_base_tool_rules,
        )  # fmt: skip

        async def create_(tr: Transaction) -> AgentView:
            attached = [await self._block(tr, b) for b in dict.fromkeys(create.block_ids or [])]
            blocks = new_blocks + attached
            self._check_labels(blocks)
            for block in new_blocks:
                self._write_block(tr, block, new=True)
            agent.block_ids = [b.id for b in blocks]
            tools = await self._agent_tools(
                tr, names=create.tools or [], tool_ids=create.tool_ids or [], base=base
            )
            agent.tool_ids = [t.id for t in tools]
            if with_base_rules:  # as Letta: for the tools named or given as base tools
                named = set(create.tools or []) | set(base)
                extra = base_tool_rules([t.name for t in tools if t.name in named])
                given = {(r.get("type"), r.get("tool_name")) for r in create.tool_rules or []}
                extra = [r for r in extra if (r["type"], r["tool_name"]) not in given]
                agent.tool_rules = [*(create.tool_rules or []), *extra] or create.tool_rules
            self._write_agent(tr, agent)
            tr.set(AGENT_INDEX.pack((micros(agent.created_at), agent.id)), b"")
            self._link(tr, agent)
            held = await set_agent_identities(tr, agent.id, identity_ids or [], replace=False)
            if self.wants_companion(agent):  # in this same transaction (agent/sleeptime.py)
                await self.add_companion(tr, agent, blocks)
            folders = [*(create.folder_ids or []), *(create.source_ids or [])]
            # Last: the companion above writes the agent's record again.
            shown = agent  # with the file tools once a folder is attached
            for folder_id in dict.fromkeys(folders):  # with their files and the file tools
                shown = await self.attach_folder_in(tr, shown, folder_id)  # type: ignore[attr-defined]
            if folders:
                tools = await self._tools(tr, shown.tool_ids)
            group = await self.group_of(tr, agent)
            return AgentView(shown, blocks, tools, group=group, identities=held)

        return await self.store.transact(create_)

    async def get_agent(self, agent_id: str) -> AgentView:
        async def get(tr: Transaction) -> AgentView:
            return await self._view(tr, await self._agent(tr, agent_id))

        return await self.store.transact(get)

    async def view_in(
        self,
        tr: Transaction,
        agent_id: str,
        isolated: Mapping[str, str] | None = None,
        expected_blocks: Sequence[str] = (),
    ) -> AgentView:
        """Within a caller's transaction: the agent with its blocks and tools (the agent
        loop reads it with the history, in one transaction per step). `isolated`: a
        conversation's own copies of some blocks (label -> block id), seen in their place.
        `expected_blocks`: the block ids the caller saw last, read in the agent's snapshot
        with its folders and the copies (one snapshot instead of two while the agent's
        blocks stay the same)."""
        for block_id in (*expected_blocks, *(isolated or {}).values()):
            prefetch_blob(tr, keys.BLOCKS.pack((block_id,)))
        prefetch_attached_folders(tr, agent_id)
        view = await self._bare_view(tr, await self._agent(tr, agent_id))
        if isolated:
            view = attrs.evolve(view, blocks=await self._isolate(tr, view.blocks, isolated))
        return view

    async def _isolate(
        self, tr: Transaction, blocks: list[Block], isolated: Mapping[str, str]
    ) -> list[Block]:
        """The agent's blocks with a conversation's copies in place of the blocks of their
        label (a copy deleted since leaves the agent's own in its place)."""
        shown = []
        for block in blocks:
            copy_id = isolated.get(block.label or "")
            copy = None
            if copy_id is not None:
                copy = await read_record(tr, keys.BLOCKS.pack((copy_id,)), Block)
            shown.append(copy or block)
        return shown

    async def list_agents(
        self,
        page: Page,
        *,
        name: str | None = None,
        tags: list[str] | None = None,
        match_all_tags: bool = False,
        query_text: str | None = None,
        only_ids: set[str] | None = None,
        wanted: AgentFilter | None = None,
    ) -> list[AgentView]:
        """`wanted` (the API's filters), or the ones named by the other keywords."""
        if wanted is None:
            wanted = AgentFilter(
                name=name,
                tags=frozenset(tags or ()),
                match_all_tags=match_all_tags,
                query_text=query_text,
                only_ids=None if only_ids is None else frozenset(only_ids),
            )
        keep = wanted.keeps if wanted.active else None

        async def listing(tr: Transaction) -> list[AgentView]:
            agents = await page_records(
                tr, AGENT_INDEX, page, lambda ident: keys.AGENTS.pack((ident,)), Agent, keep
            )
            return [await self._view(tr, a) for a in agents]

        return await self.store.transact(listing)

    async def count_agents(self, wanted: AgentFilter) -> int:
        return await self.store.transact(lambda tr: count_agents(tr, AGENT_INDEX, wanted))

    async def update_agent(self, agent_id: str, body: Any) -> AgentView:
        if not isinstance(body, dict):
            raise Invalid.field(["body"], "expected a JSON object", "model_type")
        changes = {k: v for k, v in body.items() if k in UPDATABLE_AGENT_FIELDS}
        check_file_limits(changes)
        identity_ids = identity_ids_of(body)
        self._check_rules(changes.get("tool_rules"))
        if isinstance(changes.get("tags"), list):  # a wrong type is the converter's to name
            tags = changes["tags"]
            check_key_parts(["body", "tags"], [t for t in tags if isinstance(t, str)], "a tag")
        model_change = None
        if any(body.get(k) is not None for k in ("model", "embedding", "llm_config")):
            model_change = self._resolve_model(convert.structure_api(
                {k: body[k] for k in ("model", "embedding", "llm_config", "embedding_config",
                                       "model_settings") if body.get(k) is not None},
                CreateAgent,
            ))  # fmt: skip
        elif body.get("model_settings") is not None:
            changes["model_settings"] = body["model_settings"]
        secrets = body.get("secrets")
        if secrets is None:
            secrets = body.get("tool_exec_environment_variables")
        folder_ids = folder_ids_of(body)

        async def update(tr: Transaction) -> AgentView:
            current = await self._agent(tr, agent_id)
            merged = {**convert.api.unstructure(current), **changes}
            if model_change:
                merged |= convert.api.unstructure(model_change)
            if body.get("block_ids") is not None:
                merged["block_ids"] = body["block_ids"]
            if body.get("tool_ids") is not None:
                merged["tool_ids"] = body["tool_ids"]
            merged["secrets"] = current.secrets if secrets is None else {}
            agent = convert.structure_api(merged, Agent)
            if secrets is not None:  # the whole set is replaced, as in Letta
                agent.secrets = secrets_of(secrets, current.secrets)
            agent.tags = list(dict.fromkeys(agent.tags))
            agent.updated_at = self.env.now()
            blocks = [await self._block(tr, b) for b in dict.fromkeys(agent.block_ids)]
            self._check_labels(blocks)
            agent.block_ids = [b.id for b in blocks]
            tools = [await self._tool(tr, t) for t in dict.fromkeys(agent.tool_ids)]
            agent.tool_ids = [t.id for t in tools]
            self._write_agent(tr, agent)
            self._link(tr, agent, current)
            if folder_ids is not None:  # the agent's folders become these, as in Letta
                agent = await self.set_agent_folders(tr, agent, folder_ids)  # type: ignore[attr-defined]
                tools = [await self._tool(tr, t) for t in agent.tool_ids]
            if identity_ids is None:
                held = await identity_records(tr, "agent", agent.id)
            else:  # the agent's identities become these, as Letta replaces them
                held = await set_agent_identities(tr, agent.id, identity_ids, replace=True)
            if (
                changes.get("enable_sleeptime")
                and self.wants_companion(agent)
                and not agent.group_id
            ):
                await self.add_companion(tr, agent, blocks)
            group = await self.group_of(tr, agent)
            return AgentView(agent, blocks, tools, group=group, identities=held)

        return await self.store.transact(update)

    async def delete_agent(self, agent_id: str) -> None:
        async def delete(tr: Transaction, agent_id: str = agent_id) -> None:
            agent = await self._agent(tr, agent_id)
            await self.drop_group(tr, agent, delete)  # a primary's companion goes too
            cleared = attrs.evolve(agent, tags=[], block_ids=[], tool_ids=[])
            self._link(tr, cleared, agent)
            clear_blob(tr, keys.AGENTS.pack((agent_id,)))
            tr.clear(AGENT_INDEX.pack((micros(agent.created_at), agent_id)))
            clear_agent_passages(tr, agent_id)
            await forget_member(tr, "agent", agent_id)  # its identities let go of it
            await detach_all_archives(tr, agent_id)  # the archives stay, with their passages
            await self.forget_agent_folders(tr, agent_id)  # type: ignore[attr-defined]
            for conversation_id in await agent_conversation_ids(tr, agent_id):
                conversation = await load_conversation(tr, conversation_id)
                if conversation is not None:
                    delete_conversation_record(tr, conversation)
                await clear_history(tr, conversation_id)
                await outbox.record(tr, outbox.stream_of(agent_id, conversation_id), resync=True)
                tr.clear(keys.CONTEXT.pack((conversation_id,)))
                wait_graph.forget_thread(tr, conversation_id)
            await clear_history(tr, agent_id)
            tr.clear(keys.CONTEXT.pack((agent_id,)))
            wait_graph.forget_thread(tr, agent_id)
            tr.clear_range(*keys.prefix_range(TOOL_RUNS.pack((agent_id,))))
            tr.clear(runs.MOVED_IN.pack((agent_id,)))  # transfers land in its default thread
            for run_id in await runs.agent_run_ids(tr, agent_id):
                run = await runs.load_run(tr, run_id)
                if run is not None:
                    runs.delete_run(tr, run)
                    await steps.clear_run_steps(tr, run_id)
            await outbox.record(tr, agent_id, resync=True)  # the index forgets the agent
            await clear_agent_schedules(tr, agent_id)

        await self.store.transact(delete)

    # -- an agent's core memory --------------------------------------------------

    async def agent_block(self, agent_id: str, label: str) -> Block:
        async def get(tr: Transaction) -> Block:
            return await self._labeled(tr, await self._agent(tr, agent_id), label)

        return await self.store.transact(get)

    async def block_by_label(self, tr: Transaction, agent_id: str, label: str) -> Block:
        """Within a caller's transaction: the agent's block with this label (the agent loop's
        memory tools edit blocks inside their step's transaction)."""
        return await self._labeled(tr, await self._agent(tr, agent_id), label)

    async def agent_blocks(
        self, tr: Transaction, agent_id: str, isolated: Mapping[str, str] | None = None
    ) -> list[Block]:
        """Within a caller's transaction: the agent's core memory blocks, in order (with a
        conversation's own copies in place, `isolated` as view_in takes it)."""
        agent = await self._agent(tr, agent_id)
        blocks = [await self._block(tr, b) for b in agent.block_ids]
        return await self._isolate(tr, blocks, isolated) if isolated else blocks

    async def write_memory(
        self,
        tr: Transaction,
        agent_id: str,
        before: list[Block],
        after: dict[str, Any],
        originals: Mapping[str, str] | None = None,
    ) -> None:
        """Within a caller's transaction: the agent's memory as a memory tool left it
        (`after`: label -> agent.memory.MemBlock): changed blocks saved, new ones created
        and attached, missing ones detached (not deleted: other agents may share them).
        `originals`: a conversation's copies (copy id -> the agent's block it stands for),
        which are saved as edited but hold the agent's block's place."""
        kept = {m.id: m for m in after.values() if m.id is not None}
        originals = originals or {}
        ids = []
        for block in before:
            edited = kept.get(block.id)
            if edited is None:
                continue
            ids.append(originals.get(block.id, block.id))
            fields = (edited.value, edited.label, edited.description)
            if fields != (block.value, block.label, block.description):
                block.value, block.label, block.description = fields
                self.save_block(tr, block)
        for made in after.values():
            if made.id is None:
                create = CreateBlock(value=made.value, label=made.label, limit=made.limit,
                                     description=made.description)  # fmt: skip
                new = self._new_block(create)
                self._write_block(tr, new, new=True)
                ids.append(new.id)
        current = await self._agent(tr, agent_id)
        if ids != current.block_ids:
            agent = attrs.evolve(current, block_ids=ids, updated_at=self.env.now())
            self._write_agent(tr, agent)
            self._link(tr, agent, current)

    def save_block(self, tr: Transaction, block: Block) -> None:
        """Within a caller's transaction: store an edited block (checked against its limit)."""
        self._check_block(block)
        self._write_block(tr, block, new=False)

    async def _labeled(self, tr: Transaction, agent: Agent, label: str) -> Block:
        for block_id in agent.block_ids:
            block = await self._block(tr, block_id)
            if block.label == label:
                return block
        raise NotFound("Block", f"{label}' (label) of agent '{agent.id}")

    async def update_agent_block(self, agent_id: str, label: str, body: Any) -> Block:
        async def find(tr: Transaction) -> str:
            return (await self._labeled(tr, await self._agent(tr, agent_id), label)).id

        return await self.update_block(await self.store.transact(find), body)

    async def attach_block(self, agent_id: str, block_id: str, attach: bool) -> AgentView:
        async def change(tr: Transaction) -> AgentView:
            current = await self._agent(tr, agent_id)
            await self._block(tr, block_id)
            ids = [b for b in current.block_ids if b != block_id]
            if attach:
                ids.append(block_id)
            agent = attrs.evolve(current, block_ids=ids, updated_at=self.env.now())
            blocks = [await self._block(tr, b) for b in ids]
            self._check_labels(blocks)
            self._write_agent(tr, agent)
            self._link(tr, agent, current)
            if attach:  # a sleeptime companion gets it too, as in Letta
                await self.share_with_companions(tr, agent, blocks[-1])
            return await self._view(tr, agent)

        return await self.store.transact(change)

    async def attach_tool(self, agent_id: str, tool_id: str, attach: bool) -> AgentView:
        """Attach or detach a tool, base or custom; doing either twice changes nothing."""

        async def change(tr: Transaction) -> AgentView:
            current = await self._agent(tr, agent_id)
            await self._tool(tr, tool_id)
            ids = [t for t in current.tool_ids if t != tool_id]
            if attach:  # at the end, unless attached already (then it keeps its place)
                ids = list(dict.fromkeys([*current.tool_ids, tool_id]))
            agent = attrs.evolve(current, tool_ids=ids, updated_at=self.env.now())
            self._write_agent(tr, agent)
            self._link(tr, agent, current)
            return await self._view(tr, agent)

        return await self.store.transact(change)

    async def set_tool_approval(self, agent_id: str, tool_name: str, wanted: bool) -> AgentView:
        """Letta's approval switch: a requires_approval rule for the tool, added or taken
        away (as Letta, whether or not the tool is attached; asking twice changes nothing)."""

        def target(rule: Any) -> bool:
            return (
                isinstance(rule, dict)
                and rule.get("type") == "requires_approval"
                and rule.get("tool_name") == tool_name
            )

        async def change(tr: Transaction) -> AgentView:
            current = await self._agent(tr, agent_id)
            rules = list(current.tool_rules or [])
            has = any(target(r) for r in rules)
            if has == wanted:
                return await self._view(tr, current)
            if wanted:
                rules.append({"type": "requires_approval", "tool_name": tool_name})
            else:
                rules = [r for r in rules if not target(r)]
            agent = attrs.evolve(current, tool_rules=rules, updated_at=self.env.now())
            self._write_agent(tr, agent)
            self._link(tr, agent, current)
            return await self._view(tr, agent)

        return await self.store.transact(change)

    async def list_tags(self, page: Page, *, query_text: str | None = None) -> list[str]:
        async def listing(tr: Transaction) -> list[str]:
            tags = dict.fromkeys(
                TAG_INDEX.unpack(k)[0] for k, _ in await tr.get_prefix(TAG_INDEX.key())
            )
            found = [t for t in tags if query_text is None or query_text.lower() in t.lower()]
            return window(sorted(found), page)

        return await self.store.transact(listing)

    # -- blocks as agents hold them ------------------------------------------

    async def delete_block(self, block_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            await self.erase_block(tr, await self._block(tr, block_id))

        await self.store.transact(delete)

    async def erase_block(self, tr: Transaction, block: Block) -> None:
        """Within a caller's transaction: the block gone, detached from every agent that
        has it and from the identities that hold it."""
        for key, _ in await tr.get_prefix(BLOCK_AGENTS.pack((block.id,))):
            agent = await self._agent(tr, BLOCK_AGENTS.unpack(key)[1])
            agent.block_ids = [b for b in agent.block_ids if b != block.id]
            self._write_agent(tr, agent)
        tr.clear_range(*keys.prefix_range(BLOCK_AGENTS.pack((block.id,))))
        clear_blob(tr, keys.BLOCKS.pack((block.id,)))
        tr.clear(BLOCK_INDEX.pack((micros(block.created_at), block.id)))
        await forget_member(tr, "block", block.id)

    async def agents_of_block(self, block_id: str, page: Page) -> list[AgentView]:
        async def listing(tr: Transaction) -> list[AgentView]:
            await self._block(tr, block_id)
            ids = [
                BLOCK_AGENTS.unpack(k)[1]
                for k, _ in await tr.get_prefix(BLOCK_AGENTS.pack((block_id,)))
            ]
            return [await self._view(tr, await self._agent(tr, i)) for i in window(ids, page)]

        return await self.store.transact(listing)
