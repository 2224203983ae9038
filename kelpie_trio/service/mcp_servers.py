"""MCP servers: their records, the tools synced from them, and running those tools.

A server record is stored at MCP_SERVERS(id), with a creation-order index and a name
index (names are unique, as the tags `mcp:<name>` of its tools need). Its tools are
ordinary tool records (type `external_mcp`, metadata_ {"mcp": {server_name, server_id}})
in the tools' subspace, so agents attach, list and detach them like any tool; the index
MCP_TOOLS(server_id, tool_id) says which server each came from. Creating a server syncs
its tools once (best effort, as Letta does: a server that cannot be reached is created
without tools); PATCH .../refresh syncs again (adds, updates, removes).

Tool names are unique on this server (agents attach tools, and models call them, by name).
A server that lists a tool whose name another tool has (another MCP server's, a custom
or a base tool) is refused with a 409 naming the tool and its owner, and nothing is
synced or created: Letta 0.16.8 upserts MCP tools by name, so there the second server
silently takes the first one's tool over, and the first one's agents call the wrong
server.

Agent files carry the MCP servers their tools come from, without secrets
(models/agentfile_mcp.py); an import makes each server, or links the one here of the
same name and configuration, and links or makes its tools, in the import's transaction.

Connections go through `self.mcp` (kelpie_trio/mcp/sessions.py, one per node), never
from a transaction: a listing is taken first, then applied in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from kelpie_trio.errors import Conflict, Invalid, InvalidField, NotFound, ServiceError
from kelpie_trio.mcp import sync
from kelpie_trio.mcp.client import McpFailure, McpUnauthorized, private_url_refusal
from kelpie_trio.mcp.sessions import McpSessions
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile_mcp import (
    McpServerSchema,
    check_server_type,
    mcp_server_of_tool,
    new_mcp_server,
    same_mcp_config,
)
from kelpie_trio.models.mcp import (
    MASK,
    MCP_TOOL_TYPE,
    CreateMcpServer,
    McpServer,
    McpTool,
)
from kelpie_trio.models.tools import Tool
from kelpie_trio.service.common import MAX_PAGE, Page, micros, page_records, read_record
from kelpie_trio.service.limits import check_key_part, check_record
from kelpie_trio.service.mcp_server_checks import (
    McpUnavailable,
    ToolNameClash,
    check_server,
    config_type,
    kept_secrets,
)
from kelpie_trio.service.tools import ToolCases
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob
from kelpie_trio.tools.base import BASE_TOOLS_BY_NAME

__all__ = [
    "MCP_SERVERS",
    "MCP_TOOLS",
    "McpImport",
    "McpServerCases",
    "McpUnavailable",
    "ToolNameClash",
]

log = logging.getLogger("kelpie_trio.mcp")

MCP_SERVERS = keys.ROOT["mcp_servers"]  # (server_id,) -> McpServer
MCP_SERVER_INDEX = keys.ROOT["index"]["mcp_servers"]  # (created_us, server_id) -> b""
MCP_SERVER_NAMES = keys.ROOT["index"]["mcp_server_names"]  # (name,) -> server_id
MCP_TOOLS = keys.ROOT["index"]["mcp_tools"]  # (server_id, tool_id) -> b""


@attrs.frozen
class _ToolToLink:
    server_name: str
    name: str
    description: str | None
    json_schema: dict[str, Any]


@attrs.frozen
class McpImport:
    """An agent file's MCP servers and tools, checked before the import's transaction."""

    servers: list[tuple[McpServerSchema, McpServer]]  # the file's, and the record to make
    tools: dict[str, _ToolToLink]  # the file-local ids of its MCP tools


class McpServerCases(ToolCases):
    mcp: McpSessions | None = None  # the node's MCP sessions (set by the node)

    # -- records -----------------------------------------------------------

    async def create_mcp_server(self, body: Any) -> McpServer:
        request = convert.structure_api(body, CreateMcpServer)
        if request.server_name is None:
            raise Invalid([InvalidField(["body", "server_name"], "Field required", "missing")])
        config = request.config
        kind = config_type(config)
        if kind == "stdio" and config.args is None:
            raise Invalid([InvalidField(["body", "config", "args"], "Field required", "missing")])
        token = config.auth_token
        if token is not None and token.lower().startswith("bearer "):
            token = token[len("bearer ") :]  # stored bare, as Letta stores it
        server = McpServer(
            id=self.env.new_id("mcp_server"),
            server_name=request.server_name,
            mcp_server_type=kind,
            command=config.command if kind == "stdio" else None,
            args=list(config.args or []) if kind == "stdio" else [],
            env=config.env if kind == "stdio" else None,
            server_url=config.server_url if kind != "stdio" else None,
            auth_header=config.auth_header if kind != "stdio" else None,
            auth_token=token if kind != "stdio" else None,
            custom_headers=config.custom_headers if kind != "stdio" else None,
            created_at=self.env.now(),
        )
        check_server(server)
        self._check_address(server)
        # A taken name is refused before a process is started or a URL is called for it.
        await self.store.transact(lambda tr: self._claim_server_name(tr, server))
        listed: list[McpTool] | None = None
        try:  # best effort, as Letta: the server is made whether or not it answers now
            listed = await self._sessions(server).list_tools(server)
        except (McpFailure, McpUnavailable) as error:
            log.info("MCP server %s created without tools: %s", server.id, type(error).__name__)

        async def create(tr: Transaction) -> McpServer:
            await self._claim_server_name(tr, server)
            self._write_server(tr, server)
            if listed is not None:  # a tool name taken elsewhere refuses the whole create
                await self._apply_listing(tr, server, listed)
            return server

        try:
            return await self.store.transact(create)
        except (ServiceError, StoreError):
            # No record names it (or, after an unknown commit result, maybe one does: a
            # later request starts a session again): this one must not linger.
            if self.mcp is not None:
                self.mcp.stop(server.id)
            raise

    async def get_mcp_server(self, server_id: str) -> McpServer:
        return await self.store.transact(lambda tr: self._server(tr, server_id))

    async def list_mcp_servers(self, page: Page | None = None) -> list[McpServer]:
        page = page or Page(limit=MAX_PAGE)

        async def listing(tr: Transaction) -> list[McpServer]:
            return await page_records(
                tr, MCP_SERVER_INDEX, page, lambda i: MCP_SERVERS.pack((i,)), McpServer
            )

        return await self.store.transact(listing)

    async def update_mcp_server(self, server_id: str, body: Any) -> McpServer:
        request = convert.structure_api(body, CreateMcpServer)
        config = request.config

        async def update(tr: Transaction) -> McpServer:
            current = await self._server(tr, server_id)
            kind = config_type(config, current.mcp_server_type)
            if kind != current.mcp_server_type:
                raise Invalid.field(
                    ["body", "config", "mcp_server_type"],
                    f"this server is a {current.mcp_server_type} server; its type cannot "
                    "change (create another server instead)",
                )
            changes: dict[str, Any] = {}
            if request.server_name is not None:
                changes["server_name"] = request.server_name
            fields = ("command", "args") if kind == "stdio" else ("server_url", "auth_header")
            for name in fields:
                if getattr(config, name) is not None:
                    changes[name] = getattr(config, name)
            if kind == "stdio" and config.env is not None:
                changes["env"] = kept_secrets(config.env, current.env)
            if kind != "stdio":
                if config.custom_headers is not None:
                    changes["custom_headers"] = kept_secrets(
                        config.custom_headers, current.custom_headers
                    )
                token = config.auth_token
                if token is not None and token != MASK:
                    if token.lower().startswith("bearer "):
                        token = token[len("bearer ") :]
                    changes["auth_token"] = token or None
            server = attrs.evolve(current, **changes)
            check_server(server)
            self._check_address(server)
            if server.server_name != current.server_name:
                await self._claim_server_name(tr, server)
                tr.clear(MCP_SERVER_NAMES.pack((current.server_name,)))
                for tool in await self._server_tools(tr, server_id):  # their tags name it
                    renamed = attrs.evolve(tool, tags=sync.tags(server),
                                           metadata_=sync.metadata(server))  # fmt: skip
                    self._write_tool(tr, renamed, tool)
            self._write_server(tr, server)
            return server

        server = await self.store.transact(update)
        if self.mcp is not None:
            self.mcp.stop(server_id)  # the next request connects with the new configuration
        return server

    async def delete_mcp_server(self, server_id: str) -> None:
        """The server and its tools (detached from every agent), in one transaction."""

        async def delete(tr: Transaction) -> None:
            server = await self._server(tr, server_id)
            for tool in await self._server_tools(tr, server_id):
                await self._remove_tool(tr, tool)
            tr.clear_range(*keys.prefix_range(MCP_TOOLS.pack((server_id,))))
            clear_blob(tr, MCP_SERVERS.pack((server_id,)))
            tr.clear(MCP_SERVER_INDEX.pack((micros(server.created_at), server_id)))
            tr.clear(MCP_SERVER_NAMES.pack((server.server_name,)))

        await self.store.transact(delete)
        if self.mcp is not None:
            self.mcp.stop(server_id)

    # -- tools -------------------------------------------------------------

    async def refresh_mcp_server(self, server_id: str) -> dict[str, Any]:
        """Sync the server's tools with what it lists now: {added, updated, deleted, skipped}."""
        server = await self.get_mcp_server(server_id)
        try:
            listed = await self._sessions(server).list_tools(server)
        except McpFailure as error:
            raise McpUnavailable(server, error) from None

        async def apply(tr: Transaction) -> dict[str, Any]:
            current = await self._server(tr, server_id)  # deleted meanwhile: NotFound
            return await self._apply_listing(tr, current, listed)

        return await self.store.transact(apply)

    async def connect_mcp_server(self, server_id: str) -> list[dict[str, Any]]:
        """GET /v1/mcp-servers/connect/{id}: Letta's connection check, as its events.
        Letta runs an OAuth flow here for a server that wants one; this server does not,
        and refuses with a 422 saying what to give instead."""
        server = await self.get_mcp_server(server_id)
        events: list[dict[str, Any]] = [
            {"event": "connection_attempt", "server_name": server.server_name}
        ]
        try:
            listed = await self._sessions(server).list_tools(server)
        except McpUnauthorized as error:
            raise Invalid.field(
                ["path", "mcp_server_id"],
                f"{error}. OAuth flows are not supported: set auth_token (and auth_header) "
                "or custom_headers on the server (PATCH /v1/mcp-servers/{id})",
            ) from None
        except McpFailure as error:
            return [*events, {"event": "error", "message": str(error)}]
        tools = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                 for t in listed]  # fmt: skip
        return [*events, {"event": "success", "tools": tools}]

    async def list_mcp_tools(self, server_id: str) -> list[Tool]:
        async def listing(tr: Transaction) -> list[Tool]:
            await self._server(tr, server_id)
            return await self._server_tools(tr, server_id)

        return await self.store.transact(listing)

    async def get_mcp_tool(self, server_id: str, tool_id: str) -> Tool:
        async def read(tr: Transaction) -> Tool:
            await self._server(tr, server_id)
            if await tr.get(MCP_TOOLS.pack((server_id, tool_id))) is None:
                raise NotFound("Tool", f"{tool_id}' of MCP server '{server_id}")
            return await self._tool(tr, tool_id)

        return await self.store.transact(read)

    async def run_mcp_tool(self, server_id: str, tool_id: str, body: Any) -> dict[str, Any]:
        """POST .../tools/{tool_id}/run: Letta's ToolExecutionResult."""
        args = (body or {}).get("args", {}) if isinstance(body, dict) else None
        if not isinstance(args, dict):
            raise Invalid.field(["body", "args"], "args must be a JSON object")
        tool = await self.get_mcp_tool(server_id, tool_id)
        status, text = await self.call_mcp_tool(tool, args)
        return {"status": status, "func_return": text, "agent_state": None, "stdout": None,
                "stderr": None, "sandbox_config_fingerprint": None}  # fmt: skip

    async def call_mcp_tool(self, tool: Any, args: dict[str, Any]) -> tuple[str, str]:
        """One call of an MCP tool, as (status, text): an agent's step and the run route.
        Whatever goes wrong (the server gone, unreachable, hung, crashed, the tool removed
        upstream, the tool's own error) is an "error" with a sentence saying what."""
        server_id = sync.server_of(tool)
        try:
            server = None if server_id is None else await self.get_mcp_server(server_id)
        except NotFound:
            server = None
        if server is None:
            return "error", f"the MCP server of tool '{tool.name}' no longer exists"
        try:
            result = await self._sessions(server).call_tool(server, tool.name, args)
        except McpFailure as error:
            return "error", str(error)
        return ("error" if result.is_error else "success"), result.text

    # -- agent files -------------------------------------------------------

    @staticmethod
    async def _servers_of_tools(tr: Transaction, tools: list[Any]) -> list[McpServer]:
        """The MCP servers `tools` come from, each once, in the order of the tools."""
        found: dict[str, McpServer] = {}
        for tool in tools:
            server_id = sync.server_of(tool) if sync.is_mcp_tool(tool) else None
            if server_id is None or server_id in found:
                continue
            server = await read_record(tr, MCP_SERVERS.pack((server_id,)), McpServer)
            if server is not None:
                found[server_id] = server
        return list(found.values())

    def _plan_mcp_import(
        self, servers: list[McpServerSchema], tools: list[Any], at: list[str | int]
    ) -> McpImport:
        """The file's MCP servers as records to make, and its tools of those servers; or
        Invalid naming what cannot be. A tool of a server the file does not carry is left
        out (as a tool of a kind not run here)."""
        now = self.env.now()
        planned = []
        for i, entry in enumerate(servers):
            here = [*at, "mcp_servers", i]
            why = check_server_type(entry)
            if why is not None:
                raise Invalid.field([*here, "server_type"], why)
            record = new_mcp_server(entry, self.env.new_id("mcp_server"), now)
            try:
                check_server(record)
                self._check_address(record)
            except Invalid as error:
                raise Invalid.field(
                    here, f"MCP server {entry.server_name!r}: {error.fields[0].msg}"
                ) from None
            planned.append((entry, record))
        names = {entry.server_name for entry, _ in planned}
        linked = {}
        for i, tool in enumerate(tools):
            server_name = mcp_server_of_tool(tool) if sync.is_mcp_tool(tool) else None
            if server_name not in names or not tool.name:
                continue
            declared = (tool.json_schema or {}).get("parameters")
            try:
                schema = sync.tool_schema(McpTool(tool.name, tool.description, declared))
            except sync.InvalidSchema as why:
                raise Invalid.field([*at, "tools", i, "json_schema"], str(why)) from None
            linked[tool.id] = _ToolToLink(server_name, tool.name, tool.description, schema)
        return McpImport(planned, linked)

    async def _import_mcp(self, tr: Transaction, plan: McpImport) -> dict[str, str]:
        """Make the file's servers (or link those here of the same name and configuration)
        and their tools (or link those the server already has); the ids here of the
        file's MCP tools, by file-local id."""
        servers: dict[str, McpServer] = {}
        for entry, record in plan.servers:
            holder = await tr.get(MCP_SERVER_NAMES.pack((entry.server_name,)))
            if holder is None:
                self._write_server(tr, record)
                servers[entry.server_name] = record
                continue
            here = await self._server(tr, holder.decode())
            if not same_mcp_config(here, entry):
                raise Conflict(
                    f"the file's MCP server '{entry.server_name}' is configured differently "
                    f"from the one of that name here ({here.id}); rename one of them"
                )
            servers[entry.server_name] = here
        made: dict[str, str] = {}
        held: dict[str, dict[str, Tool]] = {}
        for file_id, wanted in plan.tools.items():
            server = servers[wanted.server_name]
            if server.id not in held:
                held[server.id] = {t.name: t for t in await self._server_tools(tr, server.id)}
            if wanted.name in held[server.id]:
                made[file_id] = held[server.id][wanted.name].id
                continue
            holder = await self._named(tr, wanted.name)
            if holder is not None:
                raise Conflict(
                    f"the file's tool '{wanted.name}' of MCP server '{server.server_name}' "
                    f"cannot be made: another tool here has that name ({holder})"
                )
            tool = self._add_mcp_tool(tr, server, wanted.name, wanted.description,
                                      wanted.json_schema)  # fmt: skip
            held[server.id][tool.name] = tool
            made[file_id] = tool.id
        return made

    # -- helpers -----------------------------------------------------------

    def _check_address(self, server: McpServer) -> None:
        """Invalid if this node refuses the server's address (a literal one, or localhost:
        names that resolve to such addresses are refused when connecting)."""
        if server.mcp_server_type == "stdio" or self.mcp is None:
            return
        if self.mcp.settings.allow_private:
            return
        refusal = private_url_refusal(server.server_url)
        if refusal is not None:
            raise Invalid.field(
                ["body", "config", "server_url"],
                f"{refusal}: this node reaches MCP servers at public addresses only "
                "(its operator can allow others with KELPIE_MCP_ALLOW_PRIVATE=on)",
            )

    def _sessions(self, server: McpServer) -> McpSessions:
        if self.mcp is None:
            raise McpUnavailable(server, McpFailure("this server runs no MCP sessions"))
        return self.mcp

    async def _server(self, tr: Transaction, server_id: str) -> McpServer:
        server = await read_record(tr, MCP_SERVERS.pack((server_id,)), McpServer)
        if server is None:
            raise NotFound("MCP server", server_id)
        return server

    async def _name_holder(self, tr: Transaction, name: str) -> str | None:
        """Who has the tool name `name` here, in words (None: nobody)."""
        holder = await self._named(tr, name)
        if holder is None:
            return None
        if name in BASE_TOOLS_BY_NAME:
            return "a base tool of this server"
        tool = await read_record(tr, keys.ROOT["tools"].pack((holder,)), Tool)
        server_id = sync.server_of(tool) if tool is not None and sync.is_mcp_tool(tool) else None
        owner = None if server_id is None else await read_record(
            tr, MCP_SERVERS.pack((server_id,)), McpServer
        )  # fmt: skip
        if owner is not None:
            return f"the tool {holder} of MCP server '{owner.server_name}' ({owner.id})"
        return f"the custom tool {holder}"

    async def _claim_server_name(self, tr: Transaction, server: McpServer) -> None:
        holder = await tr.get(MCP_SERVER_NAMES.pack((server.server_name,)))
        if holder is not None and holder.decode() != server.id:
            raise Conflict(
                f"an MCP server named '{server.server_name}' already exists ({holder.decode()})"
            )

    @staticmethod
    def _write_server(tr: Transaction, server: McpServer) -> None:
        set_blob(tr, MCP_SERVERS.pack((server.id,)), check_record(server, "MCP server"))
        tr.set(MCP_SERVER_INDEX.pack((micros(server.created_at), server.id)), b"")
        tr.set(MCP_SERVER_NAMES.pack((server.server_name,)), server.id.encode())

    async def _server_tools(self, tr: Transaction, server_id: str) -> list[Tool]:
        found = []
        for key, _ in await tr.get_prefix(MCP_TOOLS.pack((server_id,))):
            tool_id = MCP_TOOLS.unpack(key)[1]
            tool = await read_record(tr, keys.ROOT["tools"].pack((tool_id,)), Tool)
            if tool is None or sync.server_of(tool) != server_id or not sync.is_mcp_tool(tool):
                # Deleted through /v1/tools/, or replaced there by a custom tool of the
                # same name (PUT keeps the id): no longer this server's; the mapping goes.
                tr.clear(key)
            else:
                found.append(tool)
        found.sort(key=lambda t: (t.created_at, t.id))
        return found

    def _add_mcp_tool(
        self,
        tr: Transaction,
        server: Any,
        name: str,
        description: str | None,
        json_schema: dict[str, Any],
    ) -> Tool:
        """A new tool of `server` (its schema as the server declares it), written with its
        link to the server."""
        tool = Tool(
            id=self.env.new_id("tool"),
            name=name,
            tool_type=MCP_TOOL_TYPE,
            description=description,
            tags=sync.tags(server),
            source_code=None,
            json_schema=json_schema,
            metadata_=sync.metadata(server),
            created_at=self.env.now(),
        )
        self._write_tool(tr, check_tool_fits(tool))
        tr.set(MCP_TOOLS.pack((server.id, tool.id)), b"")
        return tool

    async def _apply_listing(
        self, tr: Transaction, server: McpServer, listed: list[McpTool]
    ) -> dict[str, Any]:
        plan = sync.plan(listed, await self._server_tools(tr, server.id))
        owners = {new.name: await self._name_holder(tr, new.name) for new in plan.add}
        taken = {name: owner for name, owner in owners.items() if owner is not None}
        if taken:
            raise ToolNameClash(server, taken)
        skipped = dict(plan.skipped)
        added = []
        for new in plan.add:
            tool = self._add_mcp_tool(tr, server, new.name, new.description, new.json_schema)
            added.append(tool.name)
        for stored, new in plan.update:
            changed = attrs.evolve(stored, description=new.description,
                                   json_schema=new.json_schema)  # fmt: skip
            self._write_tool(tr, check_tool_fits(changed), stored)
        for gone in plan.remove:
            await self._remove_tool(tr, gone)
            tr.clear(MCP_TOOLS.pack((server.id, gone.id)))
        if skipped:
            log.info("MCP server %s: tools not synced: %s", server.id, sorted(skipped))
        return {
            "added": added,
            "updated": [new.name for _, new in plan.update],
            "deleted": [t.name for t in plan.remove],
            "skipped": skipped,
        }


def check_tool_fits(tool: Tool) -> Tool:
    check_key_part(["body", "name"], tool.name, "the tool's name")
    return tool
