"""Tools: the base tools, custom tools from Python source, and which agents hold them.

A custom tool's name is its function's name and is unique among all tools, base
tools included; the `(name,) -> id` index holds the claim, read in the same
transaction that writes it, so two concurrent creates of one name cannot both
commit. Base tools (kelpie_trio/tools/base.py) are never stored: they are
listed, retrieved and attached like the others but cannot be changed or deleted.

Listing order (`/v1/tools/`, ascending): the base tools first, in their fixed
order, then custom tools in creation order; descending is the exact reverse,
and the `after`/`before` cursors may be any tool of either kind.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from kelpie_trio.errors import Conflict, Forbidden, Invalid, InvalidField, NotFound, ServiceError
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.tools import (
    MAX_RETURN_CHAR_LIMIT,
    UPDATABLE_TOOL_FIELDS,
    CreateTool,
    Tool,
)
from kelpie_trio.service.common import MAX_PAGE, Page, ServiceBase, micros, page_ids, read_record
from kelpie_trio.service.limits import check_key_part, check_record, fits_a_key
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob
from kelpie_trio.tools.base import BASE_TOOLS, BASE_TOOLS_BY_ID, BASE_TOOLS_BY_NAME
from kelpie_trio.tools.schema import MAX_SOURCE_CHARS, ToolSourceError, derive_tool_schema

__all__ = [
    "TOOLS",
    "TOOL_AGENTS",
    "TOOL_INDEX",
    "TOOL_NAMES",
    "BaseToolProtected",
    "ToolCases",
    "ToolFilter",
    "ToolsNotFound",
]

TOOLS = keys.ROOT["tools"]  # (tool_id,) -> custom tool record
TOOL_INDEX = keys.ROOT["index"]["tools"]  # (created_us, tool_id) -> b""
TOOL_NAMES = keys.ROOT["index"]["tool_names"]  # (name,) -> tool_id
TOOL_AGENTS = keys.ROOT["index"]["tool_agents"]  # (tool_id, agent_id) -> b""

_BASE_POSITION = {t.id: i for i, t in enumerate(BASE_TOOLS)}


class ToolsNotFound(ServiceError):
    """An agent asked for tools that do not exist. Letta answers this with 400 and a
    detail that starts "Tools not found by name" (or "by id"); clients such as Letta's
    own CLI match on those words to add the missing base tools, or retry without them."""

    status = 400

    def __init__(self, by: str, missing: list[str]) -> None:
        listed = ", ".join(repr(m) for m in missing)
        super().__init__(
            f"Tools not found by {by}: {listed}. Create them first (POST /v1/tools/), "
            "or leave them out"
        )
        self.by = by
        self.missing = missing

    def at(self, given: list[str], where: str = "tools") -> Invalid:
        """The same refusal as a 422 naming where each missing tool was given (an agent
        file's entries are located this way)."""
        return Invalid(
            [
                InvalidField(["body", where, given.index(m)], f"no tool named '{m}' here")
                for m in self.missing
                if m in given
            ]
            or [InvalidField(["body", where], str(self))]
        )


class BaseToolProtected(Forbidden):
    """A base tool is part of the server: it cannot be changed, replaced or deleted."""

    def __init__(self, tool: Tool, action: str) -> None:
        super().__init__(
            f"'{tool.name}' ({tool.id}) is a base tool and cannot be {action}; "
            "create a custom tool with another name instead"
        )


@attrs.frozen
class ToolFilter:
    """The filters of GET /v1/tools/; every one given must hold."""

    name: str | None = None
    names: frozenset[str] | None = None
    tool_ids: frozenset[str] | None = None
    search: str | None = None  # a case-insensitive part of the name
    tool_types: frozenset[str] | None = None
    exclude_tool_types: frozenset[str] = frozenset()
    only_letta_tools: bool = False

    def matches(self, tool: Tool) -> bool:
        return (
            (self.name is None or tool.name == self.name)
            and (self.names is None or tool.name in self.names)
            and (self.tool_ids is None or tool.id in self.tool_ids)
            and (self.search is None or self.search.lower() in tool.name.lower())
            and (self.tool_types is None or tool.tool_type in self.tool_types)
            and tool.tool_type not in self.exclude_tool_types
            and (not self.only_letta_tools or tool.tool_type.startswith("letta_"))
        )


def _source_error(error: ToolSourceError) -> Invalid:
    message = str(error)
    if error.lineno is not None and f"line {error.lineno}" not in message:
        message += f" (line {error.lineno})"
    return Invalid.field(["body", "source_code"], message)


def _defines_function(source: str, name: str) -> bool:
    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        for node in module.body
    )


def _schema(
    source: str,
    source_type: str | None,
    json_schema: dict[str, Any] | None,
    args_json_schema: dict[str, Any] | None,
) -> tuple[str, str | None, dict[str, Any]]:
    """The tool's name, description and JSON schema, or Invalid saying what is wrong.

    A `json_schema` the client gives is kept as it is; its `name` must be a
    top-level function of the source, which must parse. Otherwise the schema is
    derived from the source; an `args_json_schema` then replaces the parameters.
    """
    if source_type != "python":
        raise Invalid.field(
            ["body", "source_type"], "only Python tools are supported (source_type 'python')"
        )
    if json_schema is not None:
        name = json_schema.get("name")
        if not isinstance(name, str) or not name:
            raise Invalid.field(
                ["body", "json_schema", "name"], "json_schema needs the name of the function"
            )
        try:
            derive_tool_schema(source, name=name)
        except ToolSourceError as error:
            # A given schema stands in for the signature: only a source that does not
            # parse, or lacks the function, is refused.
            if len(source) > MAX_SOURCE_CHARS or not _defines_function(source, name):
                raise _source_error(error) from None
        described = json_schema.get("description")
        return name, described if isinstance(described, str) else None, json_schema
    try:
        derived = derive_tool_schema(source)
    except ToolSourceError as error:
        raise _source_error(error) from None
    schema = derived.json_schema
    if args_json_schema is not None:
        schema = {
            **schema,
            "parameters": {
                "type": "object",
                "properties": args_json_schema.get("properties", {}),
                "required": args_json_schema.get("required", []),
            },
        }
    return derived.name, derived.description, schema


def _check_tool(tool: Tool) -> None:
    # The name is a key of the name index: a function name past the key budget is refused.
    check_key_part(["body", "name"], tool.name, "the tool's name")
    if not 1 <= tool.return_char_limit <= MAX_RETURN_CHAR_LIMIT:
        raise Invalid.field(
            ["body", "return_char_limit"],
            f"return_char_limit must be between 1 and {MAX_RETURN_CHAR_LIMIT}",
        )


class ToolCases(ServiceBase):
    def _new_tool(self, create: CreateTool) -> Tool:
        """A custom tool from a create request, validated before anything is written."""
        name, description, schema = _schema(
            create.source_code, create.source_type, create.json_schema, create.args_json_schema
        )
        fields = attrs.asdict(create, recurse=False)
        fields.update(
            id=self.env.new_id("tool"),
            name=name,
            description=create.description if create.description is not None else description,
            tags=create.tags or [],
            json_schema=schema,
            created_at=self.env.now(),
        )
        tool = Tool(**fields)
        _check_tool(tool)
        return tool

    async def _tool(self, tr: Transaction, tool_id: str) -> Tool:
        if tool_id in BASE_TOOLS_BY_ID:
            return BASE_TOOLS_BY_ID[tool_id]
        tool = await read_record(tr, TOOLS.pack((tool_id,)), Tool)
        if tool is None:
            raise NotFound("Tool", tool_id)
        return tool

    async def _tools(self, tr: Transaction, tool_ids: list[str]) -> list[Tool]:
        """An agent's tools in its order; one deleted meanwhile is left out, not an error."""
        found = []
        for tool_id in tool_ids:
            try:
                found.append(await self._tool(tr, tool_id))
            except NotFound:
                continue
        return found

    @staticmethod
    async def _named(tr: Transaction, name: str) -> str | None:
        """The id of the tool called `name`, base or custom."""
        if name in BASE_TOOLS_BY_NAME:
            return BASE_TOOLS_BY_NAME[name].id
        if not fits_a_key(name):
            return None  # no tool can have it: names are checked when tools are made
        raw = await tr.get(TOOL_NAMES.pack((name,)))
        return None if raw is None else raw.decode()

    @staticmethod
    def _write_tool(tr: Transaction, tool: Tool, old: Tool | None = None) -> None:
        set_blob(tr, TOOLS.pack((tool.id,)), check_record(tool, "tool"))
        if old is None:
            tr.set(TOOL_INDEX.pack((micros(tool.created_at), tool.id)), b"")
        elif old.name != tool.name:
            tr.clear(TOOL_NAMES.pack((old.name,)))
        tr.set(TOOL_NAMES.pack((tool.name,)), tool.id.encode())

    async def _claim_name(self, tr: Transaction, tool: Tool) -> None:
        """Conflict if another tool already has `tool`'s name."""
        holder = await self._named(tr, tool.name)
        if holder is not None and holder != tool.id:
            kind = "base tool" if holder in BASE_TOOLS_BY_ID else "tool"
            raise Conflict(f"a {kind} named '{tool.name}' already exists ({holder})")

    async def create_tool(self, body: Any) -> Tool:
        tool = self._new_tool(convert.structure_api(body, CreateTool))

        async def create(tr: Transaction) -> Tool:
            await self._claim_name(tr, tool)
            self._write_tool(tr, tool)
            return tool

        return await self.store.transact(create)

    async def upsert_tool(self, body: Any) -> Tool:
        """PUT /v1/tools/: create, or replace the tool of the same name, keeping its id."""
        tool = self._new_tool(convert.structure_api(body, CreateTool))

        async def upsert(tr: Transaction) -> Tool:
            holder = await self._named(tr, tool.name)
            if holder is None:
                self._write_tool(tr, tool)
                return tool
            current = await self._tool(tr, holder)
            if holder in BASE_TOOLS_BY_ID:
                raise BaseToolProtected(current, "replaced")
            # What ToolCreate cannot say (metadata, project) stays as it was.
            replaced = attrs.evolve(
                tool,
                id=current.id,
                created_at=current.created_at,
                metadata_=current.metadata_,
                project_id=current.project_id,
                created_by_id=current.created_by_id,
            )
            self._write_tool(tr, replaced, current)
            return replaced

        return await self.store.transact(upsert)

    async def get_tool(self, tool_id: str) -> Tool:
        return await self.store.transact(lambda tr: self._tool(tr, tool_id))

    async def list_tools(self, page: Page, where: ToolFilter | None = None) -> list[Tool]:
        where = where or ToolFilter()
        limit = min(page.limit or MAX_PAGE, MAX_PAGE)
        ascending = page.order == "asc"

        async def listing(tr: Transaction) -> list[Tool]:
            cache: dict[str, Tool | None] = {}

            async def load(ident: str) -> Tool | None:
                if ident not in cache:
                    cache[ident] = await read_record(tr, TOOLS.pack((ident,)), Tool)
                return cache[ident]

            async def rank(ident: str) -> tuple | None:
                """Where a tool stands in ascending order: base tools, then custom ones."""
                if ident in _BASE_POSITION:
                    return (0, _BASE_POSITION[ident])
                tool = await load(ident)
                return None if tool is None else (1, micros(tool.created_at), tool.id)

            # The cursors as bounds in ascending order, whatever the page's order.
            low, high = (page.after, page.before) if ascending else (page.before, page.after)
            low_rank = None if low is None else await rank(low)
            high_rank = None if high is None else await rank(high)
            if (low is not None and low_rank is None) or (high is not None and high_rank is None):
                return []  # an unknown cursor ends the walk, as in every listing

            base = [
                t
                for i, t in enumerate(BASE_TOOLS)
                if where.matches(t)
                and (low_rank is None or (0, i) > low_rank)
                and (high_rank is None or (0, i) < high_rank)
            ]
            custom: list[Tool] = []
            if high_rank is None or high_rank[0] == 1:  # a base upper bound leaves no custom tool
                # A base tool as the lower bound leaves every custom tool above it.
                custom_low = low if low_rank is not None and low_rank[0] == 1 else None
                if ascending:
                    custom_page = Page(custom_low, high, max(0, limit - len(base)), "asc")
                else:
                    custom_page = Page(high, custom_low, limit, "desc")
                if custom_page.limit:
                    custom = await self._custom_page(tr, custom_page, where, load, rank)
            ordered = base + custom if ascending else custom + base[::-1]
            return ordered[:limit]

        return await self.store.transact(listing)

    @staticmethod
    async def _custom_page(
        tr: Transaction,
        page: Page,
        where: ToolFilter,
        load: Callable[[str], Awaitable[Tool | None]],
        rank: Callable[[str], Awaitable[tuple | None]],
    ) -> list[Tool]:
        """One page of custom tools from the creation index (cursors are custom tools)."""

        async def position(ident: str) -> tuple | None:
            found = await rank(ident)
            return None if found is None else found[1:]

        async def keep(ident: str) -> bool:
            tool = await load(ident)
            return tool is not None and where.matches(tool)

        filtered = where != ToolFilter()
        ids = await page_ids(tr, TOOL_INDEX, page, position, keep if filtered else None)
        tools = [await load(i) for i in ids]
        return [t for t in tools if t is not None]

    async def update_tool(self, tool_id: str, body: Any) -> Tool:
        """PATCH: the fields given (null ones are ignored); a new source re-derives the schema."""
        if not isinstance(body, dict):
            raise Invalid.field(["body"], "expected a JSON object", "model_type")
        if tool_id in BASE_TOOLS_BY_ID:
            raise BaseToolProtected(BASE_TOOLS_BY_ID[tool_id], "modified")
        changes = {k: v for k, v in body.items() if k in UPDATABLE_TOOL_FIELDS and v is not None}

        async def update(tr: Transaction) -> Tool:
            current = await self._tool(tr, tool_id)
            merged = {**convert.api.unstructure(current), **changes}
            tool = convert.structure_api(merged, Tool)
            if changes.keys() & {"source_code", "source_type", "json_schema", "args_json_schema"}:
                name, description, schema = _schema(
                    tool.source_code or "",
                    tool.source_type,
                    tool.json_schema if "json_schema" in changes else None,
                    tool.args_json_schema,
                )
                # A description that was the docstring's follows the docstring.
                derived_before = (current.json_schema or {}).get("description")
                if "description" not in changes and current.description == derived_before:
                    tool.description = description
                tool.name, tool.json_schema = name, schema
            _check_tool(tool)
            await self._claim_name(tr, tool)
            self._write_tool(tr, tool, current)
            return tool

        return await self.store.transact(update)

    async def delete_tool(self, tool_id: str) -> None:
        """Delete a custom tool, detaching it from every agent in the same transaction."""
        if tool_id in BASE_TOOLS_BY_ID:
            raise BaseToolProtected(BASE_TOOLS_BY_ID[tool_id], "deleted")

        async def delete(tr: Transaction) -> None:
            await self._remove_tool(tr, await self._tool(tr, tool_id))

        await self.store.transact(delete)

    @staticmethod
    async def _remove_tool(tr: Transaction, tool: Tool) -> None:
        """Clear a stored tool and detach it from every agent that holds it."""
        holders = TOOL_AGENTS.pack((tool.id,))
        for key, _ in await tr.get_prefix(holders):
            agent_key = keys.AGENTS.pack((TOOL_AGENTS.unpack(key)[1],))
            agent = await read_record(tr, agent_key, Agent)
            if agent is not None:
                agent.tool_ids = [t for t in agent.tool_ids if t != tool.id]
                set_blob(tr, agent_key, convert.encode_record(agent))
        tr.clear_range(*keys.prefix_range(holders))
        clear_blob(tr, TOOLS.pack((tool.id,)))
        tr.clear(TOOL_INDEX.pack((micros(tool.created_at), tool.id)))
        tr.clear(TOOL_NAMES.pack((tool.name,)))

    # -- tools as agents hold them ---------------------------------------------

    async def _agent_tools(
        self, tr: Transaction, *, names: list[str], tool_ids: list[str], base: list[str]
    ) -> list[Tool]:
        """A new agent's tools: the base ones, then those named, then those by id."""
        ids = [BASE_TOOLS_BY_NAME[n].id for n in base]
        missing = []
        for name in dict.fromkeys(names):
            found = await self._named(tr, name)
            if found is None:
                missing.append(name)
            else:
                ids.append(found)
        if missing:
            raise ToolsNotFound("name", missing)
        tools = []
        for tool_id in dict.fromkeys(ids + tool_ids):
            try:
                tools.append(await self._tool(tr, tool_id))
            except NotFound:
                missing.append(tool_id)
        if missing:
            raise ToolsNotFound("id", missing)
        return tools

    @staticmethod
    def _link_tools(tr: Transaction, agent: Agent, old: Agent | None = None) -> None:
        """Keep the (tool, agent) index in step with `agent` (replacing `old`'s)."""
        before = set(old.tool_ids) if old else set()
        for tool_id in before - set(agent.tool_ids):
            tr.clear(TOOL_AGENTS.pack((tool_id, agent.id)))
        for tool_id in set(agent.tool_ids) - before:
            tr.set(TOOL_AGENTS.pack((tool_id, agent.id)), b"")

    # -- search ----------------------------------------------------------------

    async def search_tools(self, body: Any) -> list[ToolHit]:
        """POST /v1/tools/search: tools ranked by how many query words their name and
        description hold (whole words; a name's parts count: core_memory_append has
        "core", "memory", "append"). Ties go by name. Without a query, every tool that
        passes the filters, by name. Vector search comes with the search issue: every
        mode ranks this way for now."""
        request = convert.structure_api(body, ToolSearch)
        if request.search_mode not in ("vector", "fts", "hybrid"):
            raise Invalid.field(["body", "search_mode"], "expected vector, fts or hybrid")
        if not 1 <= request.limit <= MAX_PAGE:
            raise Invalid.field(["body", "limit"], f"limit must be between 1 and {MAX_PAGE}")
        types = frozenset(request.tool_types) if request.tool_types else None
        found = await self.list_tools(Page(limit=MAX_PAGE), ToolFilter(tool_types=types))
        if request.tags:
            wanted = set(request.tags)
            found = [t for t in found if wanted & set(t.tags)]
        terms = set(_words(request.query or ""))
        hits = []
        for tool in found:
            text = f"{tool.name}: {tool.description or ''}"
            score = len(terms & set(_words(text)))
            if score or not terms:
                hits.append((score, tool.name, tool, text))
        hits.sort(key=lambda h: (-h[0], h[1]))
        return [
            ToolHit(tool, text, rank, float(score))
            for rank, (score, _, tool, text) in enumerate(hits[: request.limit], start=1)
        ]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@attrs.define
class ToolSearch:
    """Letta's ToolSearchRequest."""

    query: str | None = None
    search_mode: str = "hybrid"
    tool_types: list[str] | None = None
    tags: list[str] | None = None
    limit: int = 50


@attrs.frozen
class ToolHit:
    tool: Tool
    embedded_text: str
    fts_rank: int
    combined_score: float
