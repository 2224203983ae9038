"""A send's request (Letta's LettaRequest / ConversationMessageRequest, what is taken of
it) and its parsing into the run's inputs, checked before anything is stored. Starting and
driving the run is service/messages.py."""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.agent.runs import RunInput
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.service import approvals, send_options
from kelpie_trio.service.content import parse_content, sized_parts
from kelpie_trio.service.limits import check_key_part, check_send

__all__ = ["CancelRequest", "MessageIn", "SendRequest", "ToolRunRequest", "parse_send"]


@attrs.define
class MessageIn:
    """Letta's MessageCreate, ApprovalCreate or ToolReturnCreate (what we use of them)."""

    content: Any = None
    role: str = "user"
    otid: str | None = None
    type: str | None = "message"
    # type "approval" (ApprovalCreate) and "tool_return" (ToolReturnCreate): service/approvals.py
    approvals: Any = None
    approve: Any = None
    approval_request_id: Any = None
    reason: Any = None
    tool_returns: Any = None


@attrs.define
class SendRequest:
    """Letta's LettaRequest / LettaStreamingRequest (what we use of it)."""

    messages: list[MessageIn] | None = None
    input: Any = None
    max_steps: int = 50
    use_assistant_message: bool = True
    streaming: bool = False
    stream_tokens: bool = False
    include_pings: bool = True
    background: bool = False
    client_tools: Any = None  # Letta's ClientToolSchema list: service/approvals.py
    client_skills: Any = None  # Letta's ClientSkillSchema list: service/approvals.py
    include_return_message_types: list[str] | None = None
    assistant_message_tool_name: str = "send_message"
    assistant_message_tool_kwarg: str = "message"
    override_model: str | None = None  # a model handle, for this run only
    include_compaction_messages: bool = False
    # Refused unless they ask for nothing (send_options.py): override_system,
    # return_logprobs, top_logprobs, return_token_ids, enable_thinking.


@attrs.define
class ToolRunRequest:
    args: dict[str, Any] | None = None


@attrs.define
class CancelRequest:
    run_ids: list[str] | None = None


def parse_send(body: Any) -> tuple[SendRequest, list[RunInput]]:
    """A send's body as its request and its inputs (messages, approvals, `input`), each
    checked: a 422 (or 413) naming what is wrong, before anything is stored."""
    request = convert.structure_api(body, SendRequest)
    send_options.check_unsupported(body)
    send_options.check_return_types(request.include_return_message_types)
    inputs: list[RunInput] = []
    texts: list[tuple[list[str | int], str]] = []
    for i, message in enumerate(request.messages or []):
        if message.type in ("approval", "tool_return"):
            if i > 0 or len(request.messages or []) > 1 or request.input is not None:
                raise Invalid.field(["body", "messages", i], "an approval is sent alone")
            answer, answer_texts = approvals.parse_answer(
                attrs.asdict(message), ["body", "messages", i]
            )
            if answer.otid is not None:
                check_key_part(["body", "messages", i, "otid"], answer.otid, "an otid")
            texts += answer_texts
            inputs.append(answer)
            continue
        if message.type not in (None, "message"):
            raise Invalid.field(
                ["body", "messages", i, "type"],
                "a message is of type 'message', 'approval' or 'tool_return'",
            )
        if message.content is None:
            raise Invalid.field(["body", "messages", i, "content"], "content is required")
        if message.role not in ("user", "system"):
            raise Invalid.field(
                ["body", "messages", i, "role"], "a message's role is 'user' or 'system'"
            )
        where: list[str | int] = ["body", "messages", i, "content"]
        text, parts = parse_content(message.content, where)
        if message.role == "system" and parts is not None:
            # Letta would drop them without a word: the model sees a system message's text
            raise Invalid.field(where, "a system message has text only, no images")
        if message.otid is not None:  # it keys the send's idempotency
            check_key_part(["body", "messages", i, "otid"], message.otid, "an otid")
        texts += sized_parts(where, text, parts)
        inputs.append(RunInput(text=text, otid=message.otid, parts=parts, role=message.role))
    if request.input is not None:
        text, parts = parse_content(request.input, ["body", "input"])
        texts += sized_parts(["body", "input"], text, parts)
        inputs.append(RunInput(text=text, parts=parts))
    check_send(texts)
    if not inputs:
        raise Invalid.field(["body", "messages"], "give at least one message (or input)")
    if not 1 <= request.max_steps <= 1000:
        raise Invalid.field(["body", "max_steps"], "max_steps must be between 1 and 1000")
    return request, inputs
