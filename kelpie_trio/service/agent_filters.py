"""Which agents a listing or a count keeps: Letta's agent filters as one value, so
`GET /v1/agents/` and `GET /v1/agents/count` cannot disagree about them."""

from __future__ import annotations

import attrs

from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

__all__ = ["AgentFilter", "count_agents"]

_BATCH = 500  # index entries (and agent records) per read while counting


@attrs.frozen
class AgentFilter:
    name: str | None = None  # exactly this name
    tags: frozenset[str] = frozenset()
    match_all_tags: bool = False  # every tag, not any of them
    query_text: str | None = None  # a part of the name, in any case
    only_ids: frozenset[str] | None = None  # the identity filters' agents
    project_id: str | None = None
    template_id: str | None = None
    base_template_id: str | None = None
    # Letta leaves agents created `hidden` out of its lists and counts unless asked.
    show_hidden: bool = True
    # Agents here record neither a last stop reason nor a creator (AgentState shows both
    # as null, there being no users), so asking for either keeps no agent.
    last_stop_reason: str | None = None
    created_by_id: str | None = None

    @property
    def active(self) -> bool:
        """Whether any agent can be left out (else a count needs no record read)."""
        return self != AgentFilter(show_hidden=self.show_hidden) or not self.show_hidden

    def keeps(self, agent: Agent) -> bool:
        if self.last_stop_reason is not None or self.created_by_id is not None:
            return False
        if self.only_ids is not None and agent.id not in self.only_ids:
            return False
        if self.name is not None and agent.name != self.name:
            return False
        if self.query_text and self.query_text.lower() not in agent.name.lower():
            return False
        for wanted, have in (
            (self.project_id, agent.project_id),
            (self.template_id, agent.template_id),
            (self.base_template_id, agent.base_template_id),
        ):
            if wanted is not None and wanted != have:
                return False
        if not self.show_hidden and agent.hidden:
            return False
        if self.tags:
            have_tags = set(agent.tags)
            return self.tags <= have_tags if self.match_all_tags else bool(self.tags & have_tags)
        return True


async def count_agents(tr: Transaction, index: keys.Subspace, wanted: AgentFilter) -> int:
    """How many agents of the (created_us, agent_id) index the filter keeps: the index's
    keys alone when nothing is filtered, else each agent's record, in batches."""
    r = index.range()
    begin, count = r.start, 0
    while True:
        rows = await tr.get_range(begin, r.stop, limit=_BATCH)
        if not wanted.active:
            count += len(rows)
        else:
            for key, _ in rows:
                raw = await get_blob(tr, keys.AGENTS.pack((index.unpack(key)[1],)))
                if raw is not None and wanted.keeps(convert.decode_record(raw, Agent)):
                    count += 1
        if len(rows) < _BATCH:
            return count
        begin = rows[-1][0] + b"\x00"
