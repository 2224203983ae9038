"""One agent step as plain functions: the prompt, the request, and what the reply means.

Given the agent (system text, blocks, tools) and its history, `build_request`
makes the LLM request; `interpret` turns the LLM's reply into the assistant
message to store, the tool calls to run, and whether the turn goes on. No I/O
here: the actor awaits the LLM and the store around these.

Continuation follows the agent type: memgpt-style agents go on only when a
tool call asks for it (`request_heartbeat`) or a tool failed; letta_v1_agent
goes on after any tool call and ends on a reply of plain text. Either way the
turn ends at `max_steps`. The agent's tool rules (tool_rules.py) narrow what a
request offers and force calls; `judge_calls` refuses the calls they forbid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from kelpie_trio.agent import tool_rules
from kelpie_trio.agent.content import llm_parts
from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.agent.runs import Answer, ClientTool
from kelpie_trio.agent.tool_rules import Offer, ToolRule, TurnState
from kelpie_trio.llm.chat_log import ChatRun, Prompt
from kelpie_trio.llm.types import ChatMessage, LlmRequest, LlmResponse, ToolCall, ToolSchema

__all__ = [
    "Interpretation",
    "build_request",
    "chat_message",
    "compile_system",
    "interpret",
    "judge_calls",
    "parse_calls",
    "tool_schemas",
]

# Tools that end a letta_v1_agent's turn without a rule saying so (Letta's base rules make
# send_message an exit_loop tool).
TERMINAL_TOOLS = frozenset({"send_message"})
HEARTBEAT_TYPES = frozenset({"memgpt_agent", "memgpt_v2_agent", "sleeptime_agent"})
HEARTBEAT_PARAM = {
    "type": "boolean",
    "description": "Request an immediate follow-up step after this tool runs.",
}


def compile_system(
    system: str, blocks: list[Any], rules_text: str | None = None, directories: str | None = None
) -> str:
    """The system prompt: the agent's system text, then its core memory, block by block,
    then its folders and open files (when it has any: service/agent_files.py), then its
    tool rules in words (when it has any)."""
    parts = [system.rstrip(), "", "<memory_blocks>"]
    for block in blocks:
        parts.append(f"<{block.label}>")
        if block.description:
            parts.append(f"<description>{block.description}</description>")
        parts.append(
            f"<metadata>chars_current={len(block.value)} chars_limit={block.limit}</metadata>"
        )
        parts.append(f"<value>\n{block.value}\n</value>")
        parts.append(f"</{block.label}>")
    parts.append("</memory_blocks>")
    if directories:
        parts += ["", directories]
    if rules_text:
        parts += ["", "<tool_usage_rules>", rules_text, "</tool_usage_rules>"]
    return "\n".join(parts)


def skills_prompt(skills: Sequence[Any]) -> str:
    """The request's client-side skills as the system prompt lists them (after the agent's
    system text): one line each, its name, what it does (first line) and where it is."""
    lines = ["<available_skills>"]
    for skill in skills:
        about = (skill.description or "").strip().split("\n")[0].strip()
        lines.append(f"- {skill.name}: {about} ({skill.location.strip()})")
    lines.append("</available_skills>")
    return "\n".join(lines)


def tool_schemas(tools: list[Any], agent_type: str) -> tuple[ToolSchema, ...]:
    out = []
    for tool in tools:
        schema = tool.json_schema or {}
        parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
        if agent_type in HEARTBEAT_TYPES:
            properties = dict(parameters.get("properties") or {})
            properties["request_heartbeat"] = HEARTBEAT_PARAM
            parameters["properties"] = properties
        out.append(ToolSchema(tool.name, tool.description or "", parameters))
    return tuple(out)


def chat_message(message: Message) -> ChatMessage:
    """A stored message as the model is shown it. (A client's answers, role "approval",
    are not shown to the model: the results are.)"""
    if message.role == "tool":
        return ChatMessage("tool", message.content, tool_call_id=message.tool_call_id)
    if message.role == "assistant":
        calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls)
        return ChatMessage("assistant", message.content or message.reasoning, tool_calls=calls,
                           thinking=message.thinking,
                           thinking_signature=message.thinking_signature)  # fmt: skip
    parts = llm_parts(message.parts) if message.parts else ()
    return ChatMessage(message.role, message.content, parts=parts)  # type: ignore[arg-type]


def build_request(
    *,
    model: str,
    system: str,
    blocks: list[Any],
    tools: list[Any],
    agent_type: str,
    history: list[Message],
    max_tokens: int | None = None,
    summary: ChatMessage | None = None,
    rules: tuple[ToolRule, ...] = (),
    offer: Offer | None = None,
    client_tools: Sequence[ClientTool] = (),
    thinking_budget: int | None = None,
    directories: str | None = None,
    chats: Sequence[ChatMessage] | None = None,
) -> LlmRequest:
    """The request for one step: the system prompt with core memory, the summary of
    evicted history if there is one (context.py), then the in-context history. With an
    `offer` (tool_rules.py), only the tools it allows, and the call it forces. The
    request's client-side tools are always offered, and hide agent tools of their name.

    `chats`: the history's chat messages made already (`chat_message` of each one shown,
    as the actor's window keeps them: history_window.py), used instead of `history`."""
    prompt = compile_system(system, blocks, tool_rules.rules_prompt(rules), directories)
    head = (ChatMessage("system", prompt),)
    if summary is not None:
        head += (summary,)
    if chats is None:
        chats = [chat_message(m) for m in history if m.role != "approval"]
    # A window's run stays one (not copied): its provider encodes only what is new in it.
    messages = Prompt(head, chats) if isinstance(chats, ChatRun) else (*head, *chats)
    if offer is not None:
        tools = [t for t in tools if t.name in offer.allowed]
    client = {c.name for c in client_tools}
    schemas = tool_schemas([t for t in tools if t.name not in client], agent_type)
    schemas += tool_schemas([_ClientSchema(c) for c in client_tools], agent_type)
    return LlmRequest(
        model=model,
        messages=messages,
        tools=schemas,
        tool_choice="required" if offer is not None and offer.required else "auto",
        forced_tool=offer.forced if offer is not None else None,
        max_tokens=max_tokens,
        thinking_budget=thinking_budget,
    )


@attrs.frozen
class _ClientSchema:
    """A client-side tool in the shape tool_schemas reads."""

    tool: ClientTool

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str | None:
        return self.tool.description

    @property
    def json_schema(self) -> dict[str, Any]:
        return {"parameters": self.tool.parameters or {"type": "object", "properties": {}}}


def turn_offer(rules: tuple[ToolRule, ...], tools: list[Any], state: TurnState,
               agent_type: str) -> Offer:  # fmt: skip
    """What the next step offers, for an agent of this type with these tools."""
    return tool_rules.offer(
        rules, [t.name for t in tools], state, always_force_single=agent_type in HEARTBEAT_TYPES
    )


def waiting_tools(
    offer: Offer, tools: list[Any], client_tools: Sequence[ClientTool]
) -> frozenset[str]:
    """The tools whose calls wait for the client (an approval, or a client-side tool)."""
    needs_approval = {t.name for t in tools if getattr(t, "default_requires_approval", None)}
    return frozenset(offer.approval | needs_approval | {c.name for c in client_tools})


def judge_calls(
    interpretation: Interpretation,
    *,
    rules: tuple[ToolRule, ...],
    offer: Offer,
    state: TurnState,
    tools: list[Any],
    client_tools: Sequence[ClientTool] = (),
    answers: dict[str, Answer] | None = None,
    resumed: bool = False,
) -> Judged:
    """The step's calls as the rules let them run. A refused call is never run; a call
    that needs the client (an approval, or a client-side tool) waits until it answers,
    and then runs (approved), gets the denial as its error, or gets the client's return."""
    answers = answers or {}
    client = {c.name for c in client_tools}
    by_name = {t.name: t for t in tools if t.name not in client}
    needs_approval = waiting_tools(offer, tools, ())
    refusals: dict[str, str] = {}
    refused: set[str] = set()
    waiting: dict[str, str] = {}
    given: dict[str, tuple[str, str]] = {}
    halt: str | None = None
    calls = []
    for call, args in interpretation.calls:
        name = call.name
        answer = answers.get(call.id)
        if answer is not None:
            if answer.kind == "tool":  # the client ran it: its return is the result
                given[call.id] = (answer.status or "success", answer.tool_return or "")
            elif not answer.approve:
                refusals[call.id] = denial(name, answer.reason)
                refused.add(call.id)
            elif name not in by_name:  # never run here: not a tool of this server
                refusals[call.id] = f"{name} is a client-side tool: it was not run."
                refused.add(call.id)
            # else approved: it runs (past the rules it passed when it was asked for)
        elif name in client:
            waiting[call.id] = "client"
        elif name not in by_name:
            refusals[call.id] = (
                f"[ToolConstraintError] Cannot call {name}: no tool named {name!r} is attached "
                f"to this agent. Valid tools include: {list(offer.allowed)}."
            )
            refused.add(call.id)
        elif name not in offer.allowed:
            refusals[call.id] = tool_rules.constraint_error(rules, name, offer.allowed, state)
            refused.add(call.id)
        elif name in needs_approval:
            waiting[call.id] = "approval"  # never run before the client approves it
        runs_here = not ({call.id} & (refusals.keys() | given.keys() | waiting.keys()))
        if runs_here and args is not None and name in offer.prefilled:
            try:
                args = tool_rules.prefill(args, offer.prefilled[name], by_name[name].json_schema)
            except ValueError as error:
                refusals[call.id] = f"Invalid prefilled tool arguments from tool rules: {error}"
                halt = halt or "invalid_tool_call"  # the rule is wrong, not the model: stop
        calls.append((call, args))
    if resumed:  # the step's reply is stored: what did not wait then cannot start to now
        for call_id in waiting:
            refusals[call_id] = (
                "Not run: the call did not wait for the client when it was made, and needs "
                "its answer now (its tool's approval setting changed)."
            )
            refused.add(call_id)
        waiting = {}
    return Judged(
        attrs.evolve(interpretation, calls=calls), refusals, frozenset(refused), halt,
        waiting=waiting, given=given,
    )  # fmt: skip


def denial(name: str, reason: str | None) -> str:
    """What the model is told of a call the client denied."""
    return f"Error: the user denied the call to {name}. Reason given: {reason or 'none'}"


@attrs.frozen
class Judged:
    interpretation: Interpretation  # allowed calls with their arguments (fixed ones applied)
    refusals: dict[str, str]  # call id -> the error the model gets instead of a result
    refused: frozenset[str]  # calls the rules refused: not counted as calls made
    halt: str | None  # a stop reason when a refusal ends the turn
    waiting: dict[str, str] = attrs.Factory(dict)  # call id -> "approval" | "client"
    given: dict[str, tuple[str, str]] = attrs.Factory(dict)  # the client's (status, return)


def step_end(
    judged: Judged,
    results: list[Message],
    *,
    rules: tuple[ToolRule, ...],
    tools: list[Any],
    state: TurnState,
    agent_type: str,
    final_step: bool,
) -> tuple[tool_rules.StepOutcome, TurnState]:
    """Whether the turn goes on after this step, and the turn's state after it."""
    calls = judged.interpretation.calls
    ran = [c.name for c, _ in calls if c.id not in judged.refused]
    last = results[-1].content if results else state.last_result
    after = state.after(ran, last)
    if judged.halt is not None:
        return tool_rules.StepOutcome(False, judged.halt), after
    heartbeat = agent_type in HEARTBEAT_TYPES
    outcome = tool_rules.step_outcome(
        rules,
        [t.name for t in tools],
        state,
        [(c.name, c.id in judged.refused) for c, _ in calls],
        heartbeat_agent=heartbeat,
        wants_heartbeat=judged.interpretation.wants_heartbeat,
        any_failed=any(r.tool_status == "error" for r in results),
        implicit_terminal=frozenset() if heartbeat else TERMINAL_TOOLS,
        final_step=final_step,
    )
    return outcome, after


@attrs.frozen
class Interpretation:
    assistant: Message  # what to store for the reply
    calls: list[tuple[StoredToolCall, dict[str, Any] | None]]  # parsed arguments, None if bad
    wants_heartbeat: bool  # some call asked for a follow-up step


def parse_calls(
    calls: Sequence[StoredToolCall],
) -> tuple[list[tuple[StoredToolCall, dict[str, Any] | None]], bool]:
    """Each call with its parsed arguments (None if not a JSON object), and whether
    any asked for a heartbeat (the `request_heartbeat` argument is taken out)."""
    parsed = []
    heartbeat = False
    for call in calls:
        try:
            args = orjson.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                args = None
        except orjson.JSONDecodeError:
            args = None
        if args is not None and args.pop("request_heartbeat", False) is True:
            heartbeat = True
        parsed.append((call, args))
    return parsed, heartbeat


def interpret(reply: LlmResponse, *, message_id: str, agent_id: str, seq: int, step: int,
              created_at: float, run_id: str | None) -> Interpretation:  # fmt: skip
    stored = [
        StoredToolCall(id=call.id, name=call.name, arguments=call.arguments)
        for call in reply.message.tool_calls
    ]
    calls, heartbeat = parse_calls(stored)
    text = reply.message.content
    assistant = Message(
        id=message_id,
        agent_id=agent_id,
        seq=seq,
        role="assistant",
        content=None if stored else text,
        reasoning=text if stored else None,
        tool_calls=stored,
        run_id=run_id,
        step=step,
        created_at=created_at,
        thinking=reply.message.thinking,
        thinking_signature=reply.message.thinking_signature,
    )
    return Interpretation(assistant, calls, heartbeat)
