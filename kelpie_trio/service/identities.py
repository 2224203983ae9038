"""Identities: create, read, list, edit, upsert, delete; which agents and blocks they hold.

An identity keeps the ids of its agents and blocks in its own record (Letta's `agent_ids`
and `block_ids`), so attaching is one write of one record. A reverse index (member ->
identity ids, IDENTITY_MEMBERS) is written in the same transaction as every write of that
record, so an agent's `identity_ids` and the cleanup when an agent or block is deleted read
one prefix rather than every identity. Identities stored before the index existed are
indexed on first use (`ensure_member_index`, idempotent, in the reader's transaction),
which also drops the agents and blocks deleted before deletions let go of them; reads of
an identity still skip any it names that are gone. An identity is named by (`project_id`,
`identifier_key`): an index on that pair keeps it unique and lets PUT find the one to
replace.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Conflict, Invalid, NotFound
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.blocks import Block
from kelpie_trio.models.identities import (
    CreateIdentity,
    Identity,
    IdentityProperty,
    UpdateIdentity,
)
from kelpie_trio.service.common import Page, ServiceBase, micros, page_records, read_record
from kelpie_trio.service.limits import check_key_part, check_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob

__all__ = [
    "IDENTITY_INDEX",
    "IDENTITY_KEYS",
    "IDENTITY_MEMBERS",
    "IdentityCases",
    "ensure_member_index",
    "forget_member",
    "identities_of",
    "identity_records",
    "set_agent_identities",
]

IDENTITY_INDEX = keys.ROOT["index"]["identities"]  # (created_us, identity_id) -> b""
# (project_id or "", identifier_key) -> identity_id: one identity per key and project.
IDENTITY_KEYS = keys.ROOT["index"]["identity_keys"]
# (kind: "agent" | "block", member id, identity_id) -> b"": the identities that hold a member.
IDENTITY_MEMBERS = keys.ROOT["index"]["identity_members"]
# Present once IDENTITY_MEMBERS covers every identity (those stored before it included).
MEMBERS_BUILT = keys.ROOT["index"]["identity_members_built"].key()

_VALUE_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "json": (dict,),
}


def check_properties(properties: list[IdentityProperty], where: str = "body") -> None:
    """A property's value must be of its declared type (Letta's union takes any of them)."""
    for index, prop in enumerate(properties):
        ok = isinstance(prop.value, _VALUE_TYPES[prop.type])
        if prop.type == "number" and isinstance(prop.value, bool):
            ok = False
        if not ok:
            raise Invalid.field(
                [where, "properties", index, "value"],
                f"a {prop.type} property needs a {prop.type} value",
            )


def _key_of(identity: Identity | CreateIdentity) -> bytes:
    return IDENTITY_KEYS.pack((identity.project_id or "", identity.identifier_key))


def _index_members(tr: Transaction, identity: Identity | None, old: Identity | None) -> None:
    """IDENTITY_MEMBERS in step with `identity` (None: deleted), replacing `old`'s entries:
    only the difference is written, so a property edit of an identity with many agents
    stays small. (Before the index is built, the build that precedes any read of it
    indexes every member of every record, whatever was written here.)"""
    ident = (identity or old).id  # type: ignore[union-attr]
    for kind, field in (("agent", "agent_ids"), ("block", "block_ids")):
        now = set(getattr(identity, field)) if identity else set()
        before = set(getattr(old, field)) if old else set()
        for member in before - now:
            tr.clear(IDENTITY_MEMBERS.pack((kind, member, ident)))
        for member in now - before:
            tr.set(IDENTITY_MEMBERS.pack((kind, member, ident)), b"")


async def ensure_member_index(tr: Transaction) -> None:
    """Index the members of every identity once (a store written before IDENTITY_MEMBERS
    existed); a no-op after, at the cost of one read. Idempotent: two nodes doing it at
    once write the same keys, and the store serialises them."""
    if await tr.get(MEMBERS_BUILT) is not None:
        return
    r = IDENTITY_INDEX.range()
    for key, _ in await tr.get_range(r.start, r.stop):
        ident = IDENTITY_INDEX.unpack(key)[1]
        identity = await read_record(tr, keys.IDENTITIES.pack((ident,)), Identity)
        if identity is None:
            continue
        # Members deleted before deletions let go of them are dropped now, once.
        live = await _without_deleted(tr, identity)
        if live != identity:
            _write_identity(tr, live, identity)
        _index_members(tr, live, None)
    tr.set(MEMBERS_BUILT, b"1")


async def _without_deleted(tr: Transaction, identity: Identity) -> Identity:
    """The identity without the agents and blocks deleted since they were attached."""
    agents = [a for a in identity.agent_ids
              if await read_record(tr, keys.AGENTS.pack((a,)), Agent) is not None]  # fmt: skip
    blocks = [b for b in identity.block_ids
              if await read_record(tr, keys.BLOCKS.pack((b,)), Block) is not None]  # fmt: skip
    return attrs.evolve(identity, agent_ids=agents, block_ids=blocks)


async def identities_of(tr: Transaction, kind: str, member_id: str) -> list[str]:
    """The ids of the identities holding agent or block `member_id` (kind "agent"/"block")."""
    await ensure_member_index(tr)
    found = await tr.get_prefix(IDENTITY_MEMBERS.pack((kind, member_id)))
    return [IDENTITY_MEMBERS.unpack(key)[2] for key, _ in found]


async def identity_records(tr: Transaction, kind: str, member_id: str) -> list[Identity]:
    """The identities holding agent or block `member_id`, as stored (AgentState's
    `identities`)."""
    found = []
    for ident in await identities_of(tr, kind, member_id):
        identity = await read_record(tr, keys.IDENTITIES.pack((ident,)), Identity)
        if identity is not None:
            found.append(identity)
    return found


def _write_identity(tr: Transaction, identity: Identity, old: Identity | None) -> None:
    set_blob(tr, keys.IDENTITIES.pack((identity.id,)), check_record(identity, "identity"))
    if old is None:
        tr.set(IDENTITY_INDEX.pack((micros(identity.created_at), identity.id)), b"")
    elif _key_of(old) != _key_of(identity):
        tr.clear(_key_of(old))
    tr.set(_key_of(identity), identity.id.encode())
    _index_members(tr, identity, old)


async def forget_member(tr: Transaction, kind: str, member_id: str) -> None:
    """An agent or block is deleted: every identity holding it lets go, in the deletion's
    transaction."""
    field = "agent_ids" if kind == "agent" else "block_ids"
    for ident in await identities_of(tr, kind, member_id):
        identity = await read_record(tr, keys.IDENTITIES.pack((ident,)), Identity)
        if identity is None:  # cannot happen while both are written together; be safe
            tr.clear(IDENTITY_MEMBERS.pack((kind, member_id, ident)))
            continue
        kept = [m for m in getattr(identity, field) if m != member_id]
        _write_identity(tr, attrs.evolve(identity, **{field: kept}), identity)


async def set_agent_identities(
    tr: Transaction, agent_id: str, identity_ids: list[str], *, replace: bool
) -> list[Identity]:
    """`identity_ids` of an agent create (replace=False: the agent is new) or update
    (replace=True: the identities not named let go of it, as Letta replaces the set).
    An unknown identity is a 409, as Letta's foreign key refusal is; the caller's
    transaction then writes nothing."""
    wanted = list(dict.fromkeys(identity_ids))
    current = await identities_of(tr, "agent", agent_id) if replace else []
    for ident in wanted:
        identity = await read_record(tr, keys.IDENTITIES.pack((ident,)), Identity)
        if identity is None:
            raise Conflict(f"identity {ident} does not exist, so it cannot hold an agent")
        if agent_id not in identity.agent_ids:
            held = attrs.evolve(identity, agent_ids=[*identity.agent_ids, agent_id])
            _write_identity(tr, held, identity)
    for ident in set(current) - set(wanted):
        identity = await read_record(tr, keys.IDENTITIES.pack((ident,)), Identity)
        if identity is not None:
            kept = [a for a in identity.agent_ids if a != agent_id]
            _write_identity(tr, attrs.evolve(identity, agent_ids=kept), identity)
    return await identity_records(tr, "agent", agent_id)


class IdentityCases(ServiceBase):
    async def _identity(self, tr: Transaction, identity_id: str) -> Identity:
        identity = await read_record(tr, keys.IDENTITIES.pack((identity_id,)), Identity)
        if identity is None:
            raise NotFound("Identity", identity_id)
        return identity

    async def _live(self, tr: Transaction, identity: Identity) -> Identity:
        """The identity without the agents and blocks deleted since they were attached
        (none once the member index is built; kept as the reads' guarantee)."""
        return await _without_deleted(tr, identity)

    async def _check_members(
        self, tr: Transaction, agent_ids: list[str], block_ids: list[str]
    ) -> None:
        for agent_id in agent_ids:
            if await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent) is None:
                raise NotFound("Agent", agent_id)
        for block_id in block_ids:
            if await read_record(tr, keys.BLOCKS.pack((block_id,)), Block) is None:
                raise NotFound("Block", block_id)

    @staticmethod
    def _write(tr: Transaction, identity: Identity, old: Identity | None) -> None:
        _write_identity(tr, identity, old)

    async def _claim_key(self, tr: Transaction, identity: Identity) -> None:
        """409 when another identity already has this identifier_key in this project."""
        holder = await tr.get(_key_of(identity))
        if holder is not None and holder.decode() != identity.id:
            raise Conflict(
                f"an identity with identifier_key '{identity.identifier_key}' and project_id "
                f"'{identity.project_id}' already exists"
            )

    def _parse_create(self, body: Any) -> CreateIdentity:
        create = convert.structure_api(body, CreateIdentity)
        check_key_part(["body", "identifier_key"], create.identifier_key, "identifier_key")
        check_key_part(["body", "project_id"], create.project_id or "", "project_id")
        check_properties(create.properties or [])
        return create

    async def _create_in(
        self, tr: Transaction, create: CreateIdentity, ident: str, now: float
    ) -> Identity:
        identity = Identity(
            id=ident,
            identifier_key=create.identifier_key,
            name=create.name,
            identity_type=create.identity_type,
            project_id=create.project_id,
            agent_ids=list(dict.fromkeys(create.agent_ids or [])),
            block_ids=list(dict.fromkeys(create.block_ids or [])),
            properties=list(create.properties or []),
            created_at=now,
        )
        await self._check_members(tr, identity.agent_ids, identity.block_ids)
        await self._claim_key(tr, identity)
        self._write(tr, identity, None)
        return identity

    async def create_identity(self, body: Any) -> Identity:
        create = self._parse_create(body)
        ident, now = self.env.new_id("identity"), self.env.now()
        return await self.store.transact(lambda tr: self._create_in(tr, create, ident, now))

    async def upsert_identity(self, body: Any) -> Identity:
        """PUT: the identity with this (project_id, identifier_key) replaced, or a new one."""
        create = self._parse_create(body)
        ident, now = self.env.new_id("identity"), self.env.now()

        async def upsert(tr: Transaction) -> Identity:
            holder = await tr.get(_key_of(create))
            if holder is None:
                return await self._create_in(tr, create, ident, now)
            old = await self._identity(tr, holder.decode())
            identity = attrs.evolve(
                old,
                name=create.name,
                identity_type=create.identity_type,
                properties=list(create.properties or []),
                # Letta's upsert replaces the agents it is given and leaves blocks alone.
                agent_ids=list(dict.fromkeys(create.agent_ids))
                if create.agent_ids is not None
                else old.agent_ids,
            )
            await self._check_members(tr, identity.agent_ids, [])
            self._write(tr, identity, old)
            return await self._live(tr, identity)

        return await self.store.transact(upsert)

    async def get_identity(self, identity_id: str) -> Identity:
        async def get(tr: Transaction) -> Identity:
            return await self._live(tr, await self._identity(tr, identity_id))

        return await self.store.transact(get)

    async def list_identities(
        self,
        page: Page,
        *,
        name: str | None = None,
        identifier_key: str | None = None,
        identity_type: str | None = None,
        project_id: str | None = None,
    ) -> list[Identity]:
        def keep(identity: Identity) -> bool:
            return (
                (name is None or identity.name == name)
                and (identifier_key is None or identity.identifier_key == identifier_key)
                and (identity_type is None or identity.identity_type == identity_type)
                and (project_id is None or identity.project_id == project_id)
            )

        filtered = any(v is not None for v in (name, identifier_key, identity_type, project_id))

        async def listing(tr: Transaction) -> list[Identity]:
            found = await page_records(
                tr,
                IDENTITY_INDEX,
                page,
                lambda ident: keys.IDENTITIES.pack((ident,)),
                Identity,
                keep if filtered else None,
            )
            return [await self._live(tr, i) for i in found]

        return await self.store.transact(listing)

    async def count_identities(self) -> int:
        async def count(tr: Transaction) -> int:
            r = IDENTITY_INDEX.range()
            return len(await tr.get_range(r.start, r.stop))

        return await self.store.transact(count)

    async def update_identity(self, identity_id: str, body: Any) -> Identity:
        update = convert.structure_api(body, UpdateIdentity)
        if update.identifier_key is not None:
            check_key_part(["body", "identifier_key"], update.identifier_key, "identifier_key")
        check_properties(update.properties or [])

        async def modify(tr: Transaction) -> Identity:
            old = await self._identity(tr, identity_id)
            merged = {p.key: p for p in old.properties} | {
                p.key: p for p in (update.properties or [])
            }
            identity = attrs.evolve(
                old,
                identifier_key=update.identifier_key or old.identifier_key,
                name=update.name if update.name is not None else old.name,
                identity_type=update.identity_type or old.identity_type,
                properties=list(merged.values()),
                # A PATCH adds the agents and blocks it names, as Letta's does.
                agent_ids=list(dict.fromkeys([*old.agent_ids, *(update.agent_ids or [])])),
                block_ids=list(dict.fromkeys([*old.block_ids, *(update.block_ids or [])])),
            )
            await self._check_members(tr, update.agent_ids or [], update.block_ids or [])
            await self._claim_key(tr, identity)
            self._write(tr, identity, old)
            return await self._live(tr, identity)

        return await self.store.transact(modify)

    async def set_identity_properties(self, identity_id: str, body: Any) -> Identity:
        """PUT .../properties: the identity's properties become exactly these."""
        if not isinstance(body, list):
            raise Invalid.field(["body"], "expected a JSON array of properties", "list_type")
        properties = [
            convert.structure_api(item, IdentityProperty, where=f"body.{i}")
            if isinstance(item, dict)
            else _not_an_object(i)
            for i, item in enumerate(body)
        ]
        check_properties(properties)

        async def replace(tr: Transaction) -> Identity:
            old = await self._identity(tr, identity_id)
            identity = attrs.evolve(old, properties=properties)
            self._write(tr, identity, old)
            return await self._live(tr, identity)

        return await self.store.transact(replace)

    async def delete_identity(self, identity_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            identity = await self._identity(tr, identity_id)
            clear_blob(tr, keys.IDENTITIES.pack((identity_id,)))
            tr.clear(IDENTITY_INDEX.pack((micros(identity.created_at), identity_id)))
            tr.clear(_key_of(identity))
            _index_members(tr, None, identity)

        await self.store.transact(delete)

    async def attach_identity(self, agent_id: str, identity_id: str, *, attach: bool) -> None:
        """client.agents.identities.attach/detach: both ids must exist; attaching twice, or
        detaching what is not attached, changes nothing."""

        async def change(tr: Transaction) -> None:
            identity = await self._identity(tr, identity_id)
            await self._check_members(tr, [agent_id], [])
            present = agent_id in identity.agent_ids
            if attach == present:
                return
            agents = (
                [*identity.agent_ids, agent_id]
                if attach
                else [a for a in identity.agent_ids if a != agent_id]
            )
            self._write(tr, attrs.evolve(identity, agent_ids=agents), identity)

        await self.store.transact(change)

    async def identity_agent_ids(
        self, identity_id: str | None, identifier_keys: list[str] | None
    ) -> set[str]:
        """The agents the agent listing's `identity_id` and `identifier_keys` filters allow
        (both given: agents that pass both, as Letta joins both conditions)."""

        async def read(tr: Transaction) -> set[str]:
            allowed: set[str] | None = None
            if identity_id is not None:
                found = await read_record(tr, keys.IDENTITIES.pack((identity_id,)), Identity)
                allowed = set(found.agent_ids) if found else set()
            if identifier_keys:
                wanted = set(identifier_keys)
                by_key: set[str] = set()
                # The (project, key) index names the identities; only those are read.
                index = IDENTITY_KEYS.range()
                for key, value in await tr.get_range(index.start, index.stop):
                    if IDENTITY_KEYS.unpack(key)[1] not in wanted:
                        continue
                    found = await read_record(tr, keys.IDENTITIES.pack((value.decode(),)), Identity)
                    if found is not None:
                        by_key |= set(found.agent_ids)
                allowed = by_key if allowed is None else allowed & by_key
            return allowed or set()

        return await self.store.transact(read)


def _not_an_object(index: int) -> IdentityProperty:
    raise Invalid.field(["body", index], "expected a JSON object", "model_type")
