"""AgentActor: the I/O shell around the agent step, one per active agent (nursery/actor.py).

A turn: store the user's messages; then, step by step, build the request from
the agent's current memory and history (step.py), await the LLM, and in ONE
fenced transaction run the memory tools and store the assistant's message and
the tool results, so a step lands whole or not at all; go on while the step
logic says so, up to max_steps. An LLM that keeps failing ends the turn with
stop reason llm_api_error, its user message kept. The reply is JSON (it may
cross nodes): Letta's LettaResponse.

Delivery is at least once (a crash or a lost lease re-runs a step): memory
edits are idempotent per step because they land with the step's messages;
archival inserts run in their own transaction and may repeat after a crash.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from kelpie_trio.agent import memory
from kelpie_trio.agent.messages import Message, StoredToolCall, to_letta_messages
from kelpie_trio.agent.step import build_request, continues, interpret
from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.llm.types import LlmClient, LlmError
from kelpie_trio.models import convert
from kelpie_trio.nursery.actor import ActorContext
from kelpie_trio.search import archival_tool_results, conversation_search, outbox
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import set_blob

if TYPE_CHECKING:
    from kelpie_trio.models.agents import Agent
    from kelpie_trio.service import AgentService
    from kelpie_trio.tools.sandbox import ToolResult

__all__ = ["AgentActor", "LlmFactory", "history_key"]

log = logging.getLogger("kelpie_trio.agent")

LlmFactory = Callable[["Agent"], LlmClient]
# Runs one custom tool call (its record, the arguments) outside the server: the
# sandbox in production, a scripted runner in the simulator.
ToolRunner = Callable[[Any, dict[str, Any]], Awaitable["ToolResult"]]
HISTORY_WINDOW = 200  # messages read back into context, newest last
TOOL_RETURN_LIMIT = 50_000  # characters of a tool's return kept (Letta's default)
TERMINAL_TOOLS = frozenset({"send_message"})


def history_key(agent_id: str, seq: int) -> bytes:
    return keys.MESSAGES.pack((agent_id, seq))


class AgentActor:
    def __init__(
        self,
        ctx: ActorContext,
        service: AgentService,
        llm_for: LlmFactory,
        run_tool: ToolRunner | None = None,
    ) -> None:
        self.ctx = ctx
        self.service = service
        self.llm_for = llm_for
        self.run_tool = run_tool
        self.next_seq = 0

    # -- lifecycle -----------------------------------------------------------

    async def on_activate(self) -> None:
        agent_id = self.ctx.agent_id

        async def last(tr: Transaction) -> int:
            prefix = keys.MESSAGES.pack((agent_id,))
            found = await tr.get_prefix(prefix, limit=1, reverse=True)
            return keys.MESSAGES.unpack(found[0][0])[1] + 1 if found else 0

        self.next_seq = await self.ctx.transact(last)

    async def on_deactivate(self) -> None:
        pass  # every step is stored as it completes

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        kind = message.get("kind")
        if kind == "send":
            return await self._turn(message)
        if kind == "reset":
            return await self._reset()
        raise ValueError(f"unknown request kind {kind!r}")

    async def _reset(self) -> dict[str, Any]:
        """Forget the history (not the memory): in the actor, so no turn runs meanwhile.
        Sequence numbers go on from where they were, so no message id is ever reused."""
        agent_id = self.ctx.agent_id

        async def clear(tr: Transaction) -> None:
            tr.clear_range(*keys.prefix_range(keys.MESSAGES.pack((agent_id,))))
            await outbox.record(tr, agent_id, resync=True)

        await self.ctx.transact(clear)
        return {"reset": True}

    # -- a turn --------------------------------------------------------------

    def _new_message(self, **fields: Any) -> Message:
        message = Message(
            id=self.ctx.env.new_id("message"),
            agent_id=self.ctx.agent_id,
            seq=self.next_seq,
            created_at=self.ctx.env.now(),
            **fields,
        )
        self.next_seq += 1
        return message

    async def _store(self, tr: Transaction, messages: list[Message]) -> None:
        for m in messages:
            set_blob(tr, history_key(m.agent_id, m.seq), convert.encode_record(m))
        await outbox.record(tr, self.ctx.agent_id, messages=[m.seq for m in messages])

    async def _turn(self, request: dict[str, Any]) -> dict[str, Any]:
        agent_id = self.ctx.agent_id
        run_id = self.ctx.env.new_id("run")
        max_steps = int(request.get("max_steps") or 50)
        inputs = [
            self._new_message(role="user", content=text, otid=otid, run_id=run_id)
            for text, otid in request["inputs"]
        ]

        async def store_inputs(tr: Transaction) -> None:
            await self._store(tr, inputs)

        await self.ctx.transact(store_inputs)
        produced: list[Message] = list(inputs)
        usage = {"completion_tokens": 0, "prompt_tokens": 0, "total_tokens": 0, "step_count": 0}
        stop = "end_turn"
        llm: LlmClient | None = None
        for step in range(1, max_steps + 1):
            view = await self.service.get_agent(agent_id)  # memory as the last step left it
            llm = llm or self.llm_for(view.agent)
            history = await self._history()
            llm_request = build_request(
                model=view.agent.model or "",
                system=view.agent.system,
                blocks=view.blocks,
                tools=view.tools,
                agent_type=view.agent.agent_type,
                history=history,
                max_tokens=(view.agent.llm_config or {}).get("max_tokens"),
            )
            try:
                reply = await llm.complete(llm_request)
            except LlmError as error:
                log.warning("agent %s: the LLM failed: %r", agent_id, error)
                stop = "llm_api_error"
                break
            usage["prompt_tokens"] += reply.usage.prompt_tokens
            usage["completion_tokens"] += reply.usage.completion_tokens
            usage["total_tokens"] += reply.usage.total_tokens
            usage["step_count"] = step
            seq_before = self.next_seq
            interpretation = interpret(
                reply,
                message_id=self.ctx.env.new_id("message"),
                agent_id=agent_id,
                seq=self.next_seq,
                step=step,
                created_at=self.ctx.env.now(),
                run_id=run_id,
            )
            self.next_seq += 1
            outside = await self._run_outside_tools(interpretation.calls, view.tools)

            results = await self.ctx.transact(
                functools.partial(
                    self._commit_step,
                    interpretation=interpretation,
                    outside=outside,
                    step=step,
                    run_id=run_id,
                    first_result_seq=seq_before + 1,
                )
            )
            produced += [interpretation.assistant, *results]
            terminal = any(c.name in TERMINAL_TOOLS for c, _ in interpretation.calls)
            failed = any(r.tool_status == "error" for r in results)
            if not continues(
                interpretation,
                agent_type=view.agent.agent_type,
                any_tool_failed=failed,
                terminal=terminal,
            ):
                break
        else:
            stop = "max_steps"
        shown = [
            letta
            for m in produced
            for letta in to_letta_messages(
                m, use_assistant_message=request.get("use_assistant_message", True)
            )
        ]
        return {
            "messages": shown,
            "stop_reason": {"message_type": "stop_reason", "stop_reason": stop},
            "usage": {"message_type": "usage_statistics", "run_ids": [run_id], **usage},
        }

    async def _commit_step(
        self,
        tr: Transaction,
        *,
        interpretation: Any,
        outside: dict[str, tuple[str, str]],
        step: int,
        run_id: str,
        first_result_seq: int,
    ) -> list[Message]:
        """The step's memory tools, its assistant message and its tool results: one
        transaction, so the step lands whole or not at all."""
        self.next_seq = first_result_seq  # a retried transaction numbers again
        results = []
        for call, args in interpretation.calls:
            status, text = outside.get(call.id) or await self._run_memory_tool(tr, call, args)
            results.append(
                self._new_message(
                    role="tool",
                    content=text[:TOOL_RETURN_LIMIT],
                    tool_call_id=call.id,
                    tool_name=call.name,
                    tool_status=status,
                    run_id=run_id,
                    step=step,
                )
            )
        await self._store(tr, [interpretation.assistant, *results])
        return results

    async def _history(self) -> list[Message]:
        agent_id = self.ctx.agent_id

        async def read(tr: Transaction) -> list[Message]:
            return await read_history(tr, agent_id, limit=HISTORY_WINDOW)

        return await self.ctx.transact(read)

    # -- tools ---------------------------------------------------------------

    async def _run_outside_tools(
        self, calls: list[tuple[StoredToolCall, dict[str, Any] | None]], tools: list[Any]
    ) -> dict[str, tuple[str, str]]:
        """Tools that are not part of the step's transaction, run first: archival memory and
        search (their own transactions) and custom tools (in the sandbox)."""
        agent_id = self.ctx.agent_id
        custom = {t.name: t for t in tools if t.tool_type == "custom"}
        done: dict[str, tuple[str, str]] = {}
        for call, args in calls:
            if args is None:
                done[call.id] = ("error", "the arguments were not a JSON object")
                continue
            try:
                if call.name in custom:
                    done[call.id] = await self._run_custom(custom[call.name], args)
                elif call.name == "archival_memory_insert":
                    body = {"text": args.get("content", ""), "tags": args.get("tags")}
                    await self.service.create_passages(agent_id, body)
                    done[call.id] = ("success", "None")
                elif call.name == "archival_memory_search":
                    found = await self.service.search_passages(
                        agent_id, str(args.get("query", "")), top_k=args.get("top_k") or 5
                    )
                    done[call.id] = ("success", orjson.dumps(archival_tool_results(found)).decode())
                elif call.name == "conversation_search":
                    hits = await self._conversation_search(str(args.get("query") or ""), args)
                    done[call.id] = ("success", orjson.dumps(hits).decode())
            except (Invalid, TypeError, ValueError) as error:
                done[call.id] = ("error", f"{type(error).__name__}: {error}")
        return done

    async def _run_custom(self, tool: Any, args: dict[str, Any]) -> tuple[str, str]:
        if self.run_tool is None:
            return "error", "custom tools cannot run on this server (no sandbox configured)"
        result = await self.run_tool(tool, args)
        if result.status == "error":
            return "error", result.error or "the tool failed"
        value = result.func_return
        return "success", value if isinstance(value, str) else orjson.dumps(value).decode()

    async def _conversation_search(
        self, query: str, args: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The search index over this agent's history (kelpie_trio/search/)."""
        return await conversation_search(
            self.service, self.ctx.agent_id, {**(args or {}), "query": query}
        )

    async def _run_memory_tool(
        self, tr: Transaction, call: StoredToolCall, args: dict[str, Any] | None
    ) -> tuple[str, str]:
        """Memory tools and send_message, inside the step's transaction."""
        if args is None:
            return "error", "the arguments were not a JSON object"
        name = call.name
        try:
            if name == "send_message":
                return "success", "Sent message successfully."
            if name == "pause_heartbeats":
                return "success", f"Pausing timed heartbeats for {args.get('minutes', 0)} min"
            label = args.get("label")
            if not isinstance(label, str):
                raise memory.ToolError("a block label is required")
            block = await self.service.block_by_label(tr, self.ctx.agent_id, label)
            limit = block.limit
            if name == "core_memory_append":
                new = memory.append(block.value, str(args.get("content", "")), limit)
            elif name == "core_memory_replace":
                old, rep = str(args.get("old_content", "")), str(args.get("new_content", ""))
                new = memory.replace(block.value, old, rep, limit)
            elif name == "memory_replace":
                old, rep = str(args.get("old_str", "")), str(args.get("new_str", ""))
                new = memory.replace_once(block.value, old, rep, limit)
            elif name == "memory_insert":
                line = args.get("insert_line", -1)
                text = str(args.get("new_str", ""))
                new = memory.insert(block.value, text, int(line), limit)
            elif name == "memory_rethink":
                new = memory.rethink(str(args.get("new_memory", "")), limit)
            else:
                return "error", f"no tool named {name!r} is attached to this agent"
        except memory.ToolError as error:
            return "error", str(error)
        except (NotFound, KeyError, ValueError, TypeError) as error:
            # A missing block, an argument of the wrong type: the model's to fix.
            return "error", f"{type(error).__name__}: {error}"
        block.value = new
        self.service.save_block(tr, block)
        return "success", "None"


async def read_history(tr: Transaction, agent_id: str, *, limit: int = 0) -> list[Message]:
    """The agent's stored messages in order: all of them, or about the last `limit`.

    One range read: each message is a blob of one or more chunk keys, read newest
    first and regrouped by message; when the read stops at its limit, the oldest
    message in it may be cut, so it is left out.
    """
    prefix = keys.MESSAGES.pack((agent_id,))
    ask = limit * 2 if limit else 0  # most messages are one chunk
    rows = await tr.get_prefix(prefix, limit=ask, reverse=True)
    chunks: dict[int, list[tuple[int, bytes]]] = {}
    for key, value in rows:
        _, seq, index = keys.MESSAGES.unpack(key)
        chunks.setdefault(seq, []).append((index, value))
    if ask and len(rows) == ask and chunks:
        del chunks[min(chunks)]
    seqs = sorted(chunks)[-limit:] if limit else sorted(chunks)
    return [
        convert.decode_record(b"".join(v for _, v in sorted(chunks[seq])), Message) for seq in seqs
    ]
