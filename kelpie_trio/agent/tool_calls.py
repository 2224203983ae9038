"""The agent's tools as its actor runs them (a mixin of AgentActor, actor.py).

Memory tools and send_message run inside the step's transaction (`_run_memory_tool`),
so a step's edits land with its messages. The others run outside it: archival memory
and the search tools (their own transactions, through the service and the search
layer), the file tools (service/agent_files.py), custom tools (in the sandbox,
tools/sandbox.py), MCP tools (through the node's MCP sessions, kelpie_trio/mcp/) and the
web tools (tools/web.py); a step
checkpoints their results one by one.
`_run_tool_directly` serves POST /v1/agents/{id}/tools/{name}/run.
"""

from __future__ import annotations

from typing import Any

import orjson

from kelpie_trio.agent import memory
from kelpie_trio.agent.messages import StoredToolCall
from kelpie_trio.agent.multi_agent import MULTI_AGENT_TOOLS, run_multi_agent_tool
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import Invalid
from kelpie_trio.files.tools import FILE_TOOLS, ToolError
from kelpie_trio.models.blocks import DEFAULT_BLOCK_LIMIT
from kelpie_trio.models.mcp import MCP_TOOL_TYPE
from kelpie_trio.search import archival_tool_results, conversation_search
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.tools.web import WEB_TOOLS

__all__ = ["OUTSIDE_TOOLS", "AgentTools"]

# Memory tools run directly, by request: (agent_id, call_id) -> [status, text].
TOOL_RUNS = keys.SESSIONS["tool"]

# Of a custom tool's stdout, and again of its stderr, the characters its tool_return
# message keeps (the sandbox hands back up to a megabyte of each; a message is a record).
STORED_OUTPUT_LIMIT = 8_000

# Base tools that run outside the step's transaction (custom tools do too).
OUTSIDE_TOOLS = frozenset({"archival_memory_insert", "archival_memory_search",
                           "conversation_search", *WEB_TOOLS, *MULTI_AGENT_TOOLS,
                           *FILE_TOOLS})  # fmt: skip


def kept_output(lines: list[str], limit: int = STORED_OUTPUT_LIMIT) -> list[str]:
    """The first lines of a tool's output up to `limit` characters, and a note of the rest."""
    kept: list[str] = []
    used = 0
    for n, line in enumerate(lines):
        if used + len(line) > limit:
            kept.append(line[: max(0, limit - used)])
            dropped = sum(len(rest) for rest in lines[n:]) - len(kept[-1])
            kept.append(f"[{dropped} more characters not kept]")
            break
        kept.append(line)
        used += len(line)
    return kept


class AgentTools:
    ctx: Any
    agent_id: str
    isolated: dict[str, str]
    service: Any
    run_tool: Any

    async def _agent_view(self) -> Any:
        """The agent as the loop sees it (not the API's view: no identities to read)."""
        return await self.service.store.transact(lambda tr: self.service.view_in(tr, self.agent_id))

    def _tool_outputs(self) -> dict[str, tuple[list[str], list[str]]]:
        """stdout and stderr of the custom tool calls run and not yet stored, by call id:
        _tool_message (commits.py) takes them into the tool_return message."""
        outputs: dict[str, tuple[list[str], list[str]]]
        outputs = self.__dict__.setdefault("_pending_tool_outputs", {})
        return outputs

    def _outside_calls(
        self, calls: list[tuple[StoredToolCall, dict[str, Any] | None]], tools: list[Any]
    ) -> set[str]:
        """The calls whose tools run outside the step's transaction."""
        custom = {t.name for t in tools if t.tool_type in ("custom", MCP_TOOL_TYPE)}
        return {
            c.id for c, args in calls
            if args is not None and (c.name in custom or c.name in OUTSIDE_TOOLS)
        }  # fmt: skip

    async def _run_tool_directly(
        self, name: str, args: dict[str, Any], call_id: str
    ) -> dict[str, Any]:
        """One of the agent's tools, run outside any turn (Letta's tools/{name}/run):
        memory tools in a fenced transaction, the others as a step would run them.

        A memory tool's result is stored under the request's `call_id` in the same
        transaction as its edit: the runtime may deliver the request again (a restart
        after a store error whose commit landed), and the edit must not land twice."""
        view = await self._agent_view()
        if not any(t.name == name for t in view.tools):  # detached since the route looked
            return {"status": "error", "func_return": None, "stdout": [],
                    "stderr": [f"no tool named {name!r} is attached to this agent"],
                    "agent_state": None, "sandbox_config_fingerprint": None}  # fmt: skip
        call = StoredToolCall(id=call_id, name=name, arguments="")
        if self._outside_calls([(call, args)], view.tools):
            status, text = await self._run_outside_tool(call, args, view.tools)
        else:
            done_key = TOOL_RUNS.pack((self.agent_id, call_id))

            async def run(tr: Transaction) -> tuple[str, str]:
                done = await tr.get(done_key)
                if done is not None:  # delivered again: the edit landed the first time
                    status, text = orjson.loads(done)
                    return status, text
                result = await self._run_memory_tool(tr, call, args)
                tr.set(done_key, orjson.dumps(result))
                return result

            status, text = await self.ctx.transact(run)
        stdout, stderr = self._tool_outputs().pop(call_id, ([], []))
        return {
            "status": status,
            "func_return": text if status == "success" else None,
            "stdout": stdout,
            "stderr": [*stderr, text] if status == "error" else stderr,
            "agent_state": None,
            "sandbox_config_fingerprint": None,
        }

    async def _run_outside_tool(
        self,
        call: StoredToolCall,
        args: dict[str, Any] | None,
        tools: list[Any],
        run: Run | None = None,
    ) -> tuple[str, str]:
        """A tool that does not run in the step's transaction: archival memory and search
        (their own transactions), custom tools (in the sandbox), the multi-agent tools
        (other agents' turns, through the service: agent/multi_agent.py). `run`: the run
        whose step calls it (None for a tool run directly, outside a turn)."""
        agent_id = self.agent_id
        custom = {t.name: t for t in tools if t.tool_type == "custom"}
        if args is None:
            return "error", "the arguments were not a JSON object"
        mcp = {t.name: t for t in tools if t.tool_type == MCP_TOOL_TYPE}
        try:
            if call.name in custom:
                return await self._run_custom(custom[call.name], args, call.id)
            if call.name in mcp:  # through the node's MCP session (kelpie_trio/mcp/)
                return await self.service.call_mcp_tool(mcp[call.name], args)
            if call.name in WEB_TOOLS:  # through the node's web tools (tools/web.py)
                return await self._run_web_tool(call.name, args)
            if call.name in MULTI_AGENT_TOOLS:  # other agents' turns (agent/multi_agent.py)
                return await run_multi_agent_tool(
                    self.service, call.name, args, sender=agent_id,
                    run_id=run.id if run is not None else "direct", call_id=call.id,
                    chain=list(run.waiting_chain) if run is not None else [],
                    thread=run.thread if run is not None else None,
                )  # fmt: skip
            if call.name in FILE_TOOLS:  # the agent's folders (service/agent_files.py)
                return "success", await self.service.run_file_tool(agent_id, call.name, args)
            if call.name == "archival_memory_insert":
                body = {"text": args.get("content", ""), "tags": args.get("tags")}
                await self.service.create_passages(agent_id, body)
                return "success", "None"
            if call.name == "archival_memory_search":
                tags = args.get("tags")
                if tags is not None and not (
                    isinstance(tags, list) and all(isinstance(t, str) for t in tags)
                ):
                    return "error", "tags must be a list of strings"
                found = await self.service.search_passages(
                    agent_id,
                    str(args.get("query", "")),
                    tags=args.get("tags"),
                    tag_match_mode=args.get("tag_match_mode") or "any",
                    top_k=args.get("top_k") or 5,
                    start_datetime=args.get("start_datetime"),
                    end_datetime=args.get("end_datetime"),
                )
                return "success", orjson.dumps(archival_tool_results(found)).decode()
            if call.name == "conversation_search":
                hits = await self._conversation_search(str(args.get("query") or ""), args)
                return "success", orjson.dumps(hits).decode()
        except ToolError as error:
            return "error", str(error)
        except (Invalid, TypeError, ValueError) as error:
            return "error", f"{type(error).__name__}: {error}"
        return "error", f"no tool named {call.name!r} is attached to this agent"

    async def _run_custom(self, tool: Any, args: dict[str, Any], call_id: str) -> tuple[str, str]:
        if self.run_tool is None:
            return "error", "custom tools cannot run on this server (no sandbox configured)"
        # The agent's secrets go to the tool's process and nowhere else.
        secrets = (await self._agent_view()).agent.secrets
        result = await self.run_tool(tool, args, env_vars=dict(secrets))
        self._tool_outputs()[call_id] = (kept_output(result.stdout), kept_output(result.stderr))
        if result.status == "error":
            return "error", result.error or "the tool failed"
        value = result.func_return
        return "success", value if isinstance(value, str) else orjson.dumps(value).decode()

    async def _run_web_tool(self, name: str, args: dict[str, Any]) -> tuple[str, str]:
        web = getattr(self.service, "web", None)  # set by the node (or the simulator)
        if web is None:
            return "error", f"{name} is not available on this server"
        # An agent may bring its own Exa key among its secrets, as in Letta.
        secrets = {}
        if name == "web_search":
            secrets = (await self._agent_view()).agent.secrets
        return await web.run(name, args, secrets)

    async def _conversation_search(
        self, query: str, args: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The search index over this agent's history (kelpie_trio/search/)."""
        return await conversation_search(
            self.service, self.agent_id, {**(args or {}), "query": query}
        )

    async def _run_memory_tool(
        self, tr: Transaction, call: StoredToolCall, args: dict[str, Any] | None
    ) -> tuple[str, str]:
        """Memory tools and send_message, inside the step's transaction: the edit is worked
        out on the agent's blocks (memory.py), then its difference written."""
        if args is None:
            return "error", "the arguments were not a JSON object"
        name = call.name
        if name == "send_message":
            return "success", "Sent message successfully."
        if name == "pause_heartbeats":
            return "success", f"Pausing timed heartbeats for {args.get('minutes', 0)} min"
        if name not in memory.MEMORY_TOOLS:  # before any argument is looked at
            return "error", f"no tool named {name!r} is attached to this agent"
        blocks = await self.service.agent_blocks(tr, self.agent_id, self.isolated)
        before = {
            b.label: memory.MemBlock(b.id, b.label, b.value, b.limit, b.read_only, b.description)
            for b in blocks
        }
        try:
            text, after = memory.edit(name, args, before, DEFAULT_BLOCK_LIMIT)
        except memory.ToolError as error:
            return "error", str(error)
        copies = {b.id: b.label for b in blocks if self.isolated.get(b.label) == b.id}
        for copy_id, label in copies.items():  # the conversation's own: edited, kept as is
            if not any(m.id == copy_id and m.label == label for m in after.values()):
                return "error", (f"Memory block '{label}' is this conversation's own copy: "
                                 "it can be edited, not renamed or removed")  # fmt: skip
        originals = {}
        if copies:  # each copy holds the place of the agent's block of its label
            agent_blocks = await self.service.agent_blocks(tr, self.agent_id)
            by_label = {b.label: b.id for b in agent_blocks}
            originals = {c: by_label[label] for c, label in copies.items() if label in by_label}
        await self.service.write_memory(tr, self.agent_id, blocks, after, originals)
        return "success", text
