"""An agent's context window, seen and compacted: Letta's ContextWindowOverview
(`GET /v1/agents/{agent_id}/context`) and its compaction on demand
(`POST /v1/agents/{agent_id}/summarize`).

The overview is a read: the agent, its stored context record and its history in one
transaction, and from them the request the first step of its next turn would send
(agent/window.py builds it as a step does), cut into Letta's sections and counted with
the context window's own token counter (agent/context.py). So its total is the number
eviction compares with the window, and it needs no actor.

A compaction runs in the agent's actor, between turns (`{"kind": "compact"}`,
window.py), so it never races one.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from kelpie_trio.agent import runs
from kelpie_trio.agent.content import letta_content
from kelpie_trio.agent.context import TARGET, count_text, estimate_tokens, summary_message
from kelpie_trio.agent.conversations import is_conversation, load_conversation
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.tool_rules import rules_of, rules_prompt
from kelpie_trio.agent.window import (
    first_step_request,
    in_prompt,
    read_context,
    window_budget,
)
from kelpie_trio.errors import Invalid, InvalidField, NotFound, Relayed, Unavailable
from kelpie_trio.models import convert
from kelpie_trio.models.convert import iso
from kelpie_trio.service.passages import PASSAGE_INDEX
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["CompactionRequest", "CompactionResponse", "CompactionSettings", "ContextCases"]

# The conversation a request names when it means the agent's own (Letta's agent-direct mode).
DEFAULT_CONVERSATION = "default"
Mode = Literal["all", "sliding_window", "self_compact_all", "self_compact_sliding_window"]


@attrs.define
class CompactionSettings:
    """Letta's CompactionSettings: what this server honours of it is in `_compaction`."""

    model: str | None = None
    model_settings: dict[str, Any] | None = None
    prompt: str | None = None
    prompt_acknowledgement: bool | None = None
    clip_chars: int | None = None
    mode: Mode | None = None
    sliding_window_percentage: float | None = None


@attrs.define
class CompactionRequest:
    compaction_settings: CompactionSettings | None = None
    # A conversation route's `default` names the agent's own by its id (Letta's agent-direct
    # mode); the agent route's path names it already.
    agent_id: str | None = None


@attrs.define
class CompactionResponse:
    """Letta's answer to a compaction (documentation; the actor's reply has its fields)."""

    summary: str
    num_messages_before: int
    num_messages_after: int


def _compaction(body: Any) -> dict[str, Any]:
    """The compaction a request asks for, as the actor's message takes it; a 422 naming
    each setting this server cannot honour (its own summarizer model and prompt, the
    agent summarizing itself)."""
    request = convert.structure_api(body if body is not None else {}, CompactionRequest)
    settings = request.compaction_settings or CompactionSettings()
    at = ["body", "compaction_settings"]
    refused = []
    why = {
        "model": "the summary is written by the agent's own model",
        "model_settings": "the summary is written with the agent's own model settings",
        "prompt": "the summary prompt is the server's",
    }
    for name, reason in why.items():
        if getattr(settings, name) is not None:
            refused.append(InvalidField([*at, name], f"{name} is not supported here: {reason}"))
    if settings.prompt_acknowledgement:
        refused.append(InvalidField([*at, "prompt_acknowledgement"],
                                    "prompt_acknowledgement is not supported here: the summary "
                                    "prompt is the server's"))  # fmt: skip
    mode = settings.mode or "sliding_window"
    if mode.startswith("self_compact"):
        refused.append(InvalidField([*at, "mode"], f"mode {mode} is not supported here: the "
                                    "summary is asked of the model apart from the agent's "
                                    "context; use sliding_window or all"))  # fmt: skip
    share = settings.sliding_window_percentage
    if share is not None and not 0 < share <= 1:
        refused.append(
            InvalidField(
                [*at, "sliding_window_percentage"],
                "sliding_window_percentage must be above 0 and at most 1",
            )
        )
    clip = settings.clip_chars
    if clip is not None and clip < 1:
        refused.append(InvalidField([*at, "clip_chars"], "clip_chars must be at least 1"))
    if refused:
        raise Invalid(refused)
    if mode == "all":
        share = 1.0
    return {"share": 1 - TARGET if share is None else share, "clip_chars": clip}


def _section(text: str, start: str, end: str) -> str:
    """The part of `text` from tag `start` through tag `end`, or "" without it."""
    begin = text.find(start)
    stop = text.rfind(end)
    return text[begin : stop + len(end)] if begin != -1 and stop > begin else ""


def _letta_message(message: Message) -> dict[str, Any]:
    """A stored message in Letta's Message shape (what ContextWindowOverview lists)."""
    if message.role == "user" and message.parts:
        content = letta_content(message.parts)
    else:
        content = [{"type": "text", "text": message.content}] if message.content else []
    if message.role == "assistant" and message.reasoning:
        content.insert(0, {"type": "reasoning", "is_native": False,
                           "reasoning": message.reasoning, "signature": None})  # fmt: skip
    calls = [{"id": c.id, "type": "function",
              "function": {"name": c.name, "arguments": c.arguments}}
             for c in message.tool_calls]  # fmt: skip
    shown: dict[str, Any] = {
        "id": message.id, "agent_id": message.agent_id, "role": message.role,
        "content": content, "name": message.tool_name if message.role == "tool" else None,
        "tool_calls": calls or None, "tool_call_id": message.tool_call_id,
        "run_id": message.run_id, "otid": message.otid, "created_at": iso(message.created_at),
    }  # fmt: skip
    if message.role == "tool":
        shown["tool_returns"] = [{"tool_call_id": message.tool_call_id,
                                  "status": message.tool_status or "success",
                                  "func_response": message.content,
                                  "stdout": message.tool_stdout,
                                  "stderr": message.tool_stderr}]  # fmt: skip
    return shown


def _function(tool: Any) -> dict[str, Any]:
    """A tool as the request offers it, in OpenAI's FunctionTool shape (as Letta lists it)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description,
                     "parameters": dict(tool.parameters)},
    }  # fmt: skip


def _unstored(role: str, text: str, agent_id: str) -> dict[str, Any]:
    # The system prompt and the summary are compiled for each step, not stored messages:
    # they have no id to show.
    return {"role": role, "agent_id": agent_id, "content": [{"type": "text", "text": text}]}


def overview(view: Any, context: Any, history: list[Message], *, recall: int,
             archival: int) -> dict[str, Any]:  # fmt: skip
    """Letta's ContextWindowOverview of the request the agent's next step sends."""
    agent = view.agent
    shown = in_prompt(history)
    request = first_step_request(view, shown, context)
    system = request.messages[0].content or ""
    prompt = agent.system.rstrip()  # compile_system (step.py) puts it first, then memory
    rules = rules_prompt(rules_of(agent.tool_rules))
    # Cut where compile_system put them, so a tag quoted in a block's value or in the
    # agent's system text is not taken for a section.
    rest = system[len(prompt) :]
    core = _section(rest, "<memory_blocks>", "</memory_blocks>")
    after = rest[rest.find(core) + len(core) :] if core else rest
    rules_text = _section(after, "<tool_usage_rules>", "</tool_usage_rules>") if rules else ""
    summary = summary_message(context)
    summary_text = summary.content or "" if summary is not None else None
    tokens = {
        "num_tokens_system": count_text(prompt),
        "num_tokens_core_memory": count_text(core),
        "num_tokens_tool_usage_rules": count_text(rules_text),
        "num_tokens_summary_memory": count_text(summary_text or ""),
        "num_tokens_messages": estimate_tokens(request.messages[-len(shown) :] if shown else ()),
        "num_tokens_functions_definitions": estimate_tokens([], request.tools),
    }
    window, _ = window_budget(agent.llm_config or {})
    listed = [_unstored("system", system, agent.id)]
    if summary_text is not None:
        listed.append(_unstored("user", summary_text, agent.id))
    listed += [_letta_message(m) for m in shown]
    return {
        "context_window_size_max": window,
        # The counter on the whole request, as eviction counts it (the sections are
        # counted one by one, so they add up to this within a few tokens of framing).
        "context_window_size_current": estimate_tokens(request.messages, request.tools),
        "num_messages": len(request.messages),
        "num_archival_memory": archival,
        "num_recall_memory": recall,
        # The prompt carries no metadata of archival and recall memory.
        "num_tokens_external_memory_summary": 0,
        "external_memory_summary": "",
        "system_prompt": prompt,
        "core_memory": core,
        "num_tokens_memory_filesystem": 0,
        "memory_filesystem": None,
        "tool_usage_rules": rules_text or None,
        # The agent's folders and open files (service/agent_files.py), as the prompt has them.
        "num_tokens_directories": count_text(view.directories or ""),
        "directories": view.directories,
        "summary_memory": summary_text,
        "functions_definitions": [_function(t) for t in request.tools],
        "messages": listed,
        **tokens,
    }


class ContextCases:
    store: Any
    dispatcher: Any
    env: Any
    view_in: Any

    async def context_overview(
        self, agent_id: str, conversation_id: str | None = None
    ) -> dict[str, Any]:
        """Letta's ContextWindowOverview of one of the agent's threads (its default
        conversation unless `conversation_id` names another of its conversations), read in
        one transaction (no actor involved)."""

        async def read(tr: Transaction) -> dict[str, Any]:
            thread, isolated = agent_id, {}
            if conversation_id not in (None, DEFAULT_CONVERSATION, agent_id):
                found = await load_conversation(tr, conversation_id or "")
                if found is None or found.agent_id != agent_id:
                    raise NotFound("Conversation", conversation_id or "")
                thread, isolated = found.id, found.isolated_blocks
            view = await self.view_in(tr, agent_id, isolated)
            context, history = await read_context(tr, thread)  # as a step reads them
            # Every stored message, for the count (a message may take several chunk keys).
            stored = await tr.get_prefix(keys.MESSAGES.pack((thread,)))
            recall = len({keys.MESSAGES.unpack(key)[1] for key, _ in stored})
            archival = len(await tr.get_prefix(PASSAGE_INDEX.pack((agent_id,))))
            return overview(view, context, history, recall=recall, archival=archival)

        return await self.store.transact(read)

    async def compact_messages(
        self, agent_id: str, body: Any, *, actor_key: str | None = None
    ) -> dict[str, Any]:
        """Compact the in-context history of the agent's actor `actor_key` (the agent's
        own, by default) now; Letta's CompactionResponse."""
        asked = _compaction(body)

        async def exists(tr: Transaction) -> None:
            await runs.require_agent(tr, agent_id)

        await self.store.transact(exists)
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        message = {"kind": "compact", "request_id": self.env.new_id("compaction"), **asked}
        reply = await self.dispatcher.invoke(actor_key or agent_id, message)
        if "gone" in reply:
            gone = actor_key or agent_id
            raise NotFound("Conversation" if is_conversation(gone) else "Agent", gone)
        if "refused" in reply:
            raise Relayed(reply["refused"]["status"], reply["refused"]["detail"])
        return reply["compaction"]
