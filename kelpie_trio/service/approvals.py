"""What a send carries besides user messages: a client's answers to calls that wait
(Letta's ApprovalCreate and ToolReturnCreate) and client-side tools (ClientToolSchema).

Plain parsing, with a 422 that names the field for anything malformed; whether the answers
fit the calls that wait is the agent's to say (agent/approvals.py).
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent.runs import Answer, ClientSkill, ClientTool, RunInput
from kelpie_trio.errors import Invalid

__all__ = ["client_tools", "is_answer", "parse_answer"]

Loc = list[str | int]


def is_answer(message: Any) -> bool:
    return isinstance(message, dict) and message.get("type") in ("approval", "tool_return")


def _opt_str(value: Any, where: Loc) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Invalid.field(where, "expected a string")
    return value


def _lines(value: Any, where: Loc) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid.field(where, "expected a list of strings")
    return value


def _return_text(value: Any, where: Loc) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Invalid.field([*where, i], "only text parts are supported in a tool return")
            parts.append(_opt_str(part.get("text"), [*where, i, "text"]) or "")
        return "".join(parts)
    raise Invalid.field(where, "expected a string or a list of text parts")


def _one(item: Any, where: Loc, kind: str | None = None) -> Answer:
    if not isinstance(item, dict):
        raise Invalid.field(where, "expected an object")
    kind = kind or item.get("type") or ("tool" if "tool_return" in item else "approval")
    call_id = item.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise Invalid.field([*where, "tool_call_id"], "a tool call id is required")
    if kind == "approval":
        approve = item.get("approve")
        if not isinstance(approve, bool):
            raise Invalid.field([*where, "approve"], "approve (true or false) is required")
        return Answer(tool_call_id=call_id, kind="approval", approve=approve,
                      reason=_opt_str(item.get("reason"), [*where, "reason"]))  # fmt: skip
    if kind != "tool":
        raise Invalid.field([*where, "type"], "an approval is of type 'approval' or 'tool'")
    status = item.get("status")
    if status not in ("success", "error"):
        raise Invalid.field([*where, "status"], "status is 'success' or 'error'")
    if "tool_return" not in item:
        raise Invalid.field([*where, "tool_return"], "the tool's return is required")
    return Answer(
        tool_call_id=call_id,
        kind="tool",
        status=status,
        tool_return=_return_text(item["tool_return"], [*where, "tool_return"]),
        stdout=_lines(item.get("stdout"), [*where, "stdout"]),
        stderr=_lines(item.get("stderr"), [*where, "stderr"]),
    )


def parse_answer(message: dict[str, Any], where: Loc) -> tuple[RunInput, list[tuple[Loc, str]]]:
    """An approval (or tool_return) message as a run's input, and its texts (for the
    send's size budget)."""
    otid = _opt_str(message.get("otid"), [*where, "otid"])
    legacy = _opt_str(message.get("approval_request_id"), [*where, "approval_request_id"])
    if message["type"] == "tool_return":
        raw = message.get("tool_returns")
        field, kind = "tool_returns", "tool"
    else:
        raw = message.get("approvals")
        field, kind = "approvals", None
    if raw is None and kind is None and message.get("approve") is not None:
        # Letta's legacy form: one approval, named by the request's message id.
        raw = [{"type": "approval", "tool_call_id": legacy, "approve": message.get("approve"),
                "reason": message.get("reason")}]  # fmt: skip
        field = "approve"
    if not isinstance(raw, list) or not raw:
        raise Invalid.field([*where, field], "give at least one approval or tool return")
    answers = [_one(item, [*where, field, i], kind) for i, item in enumerate(raw)]
    texts = [([*where, field, i], (a.reason or "") + (a.tool_return or ""))
             for i, a in enumerate(answers)]  # fmt: skip
    given = RunInput(text="", otid=otid, answers=answers, approval_request_id=legacy)
    return given, texts


def client_skills(raw: Any) -> list[ClientSkill]:
    """The request's client-side skills (Letta's ClientSkillSchema): name, description and
    location, each a string; a name given twice is kept once, as Letta lists it."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Invalid.field(["body", "client_skills"], "expected a list of skills")
    skills: list[ClientSkill] = []
    for i, item in enumerate(raw):
        where: Loc = ["body", "client_skills", i]
        if not isinstance(item, dict):
            raise Invalid.field(where, "expected an object")
        fields = {}
        for name in ("name", "description", "location"):
            value = item.get(name)
            if not isinstance(value, str):
                raise Invalid.field([*where, name], f"{name} is a required string", "missing")
            fields[name] = value
        if not fields["name"].strip():
            raise Invalid.field([*where, "name"], "a skill needs a name")
        if all(s.name != fields["name"] for s in skills):
            skills.append(ClientSkill(**fields))
    return skills


def client_tools(raw: Any) -> list[ClientTool]:
    """The request's client-side tools: each named once, with a JSON-object schema."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Invalid.field(["body", "client_tools"], "expected a list of tools")
    tools: list[ClientTool] = []
    for i, item in enumerate(raw):
        where: Loc = ["body", "client_tools", i]
        if not isinstance(item, dict):
            raise Invalid.field(where, "expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise Invalid.field([*where, "name"], "a tool name (1 to 256 characters) is required")
        if any(t.name == name for t in tools):
            raise Invalid.field([*where, "name"], f"{name!r} is given twice")
        parameters = item.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise Invalid.field([*where, "parameters"], "expected a JSON schema object")
        description = _opt_str(item.get("description"), [*where, "description"])
        tools.append(ClientTool(name=name, description=description, parameters=parameters))
    return tools
