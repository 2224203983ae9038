"""SimLlmClient: a deterministic LLM, with the LLM faults.

It implements the same `LlmClient` interface as the real providers. Replies
are either scripted by a test (a list of replies, or a function of the
request) or drawn from the seed: plain text, `send_message`, memory tools with
`request_heartbeat` (so heartbeat chains happen), archival inserts. Latency
runs on the virtual clock. Faults fire from the world's fault table:
LlmLatency (a slow reply), LlmTimeout (no reply until the client's timeout),
LlmFailure (a 5xx), LlmRateLimited (a 429 with Retry-After); a stream can
fail midway.

It is as strict about the model name as a real provider: it serves one model, `agent` (the
catalog's name for the handle `sim/agent`), and answers any other name, a handle included, with
the 404 OpenAI gives for an unknown model. A regression that sends the handle fails every
simulated turn instead of passing unseen.

It is a simulation, and says so: replies are not language, only shapes.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import trio

from kelpie_trio.llm.catalog import SIM_CHAT_MODEL
from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    LlmClient,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmResponse,
    LlmStreamEvent,
    LlmTimeout,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from kelpie_trio.sim.faults import FaultConfig, FaultInjector, FaultType
from kelpie_trio.sim.trace import Trace

__all__ = ["Reply", "SimLlmClient", "send_message", "text", "tool_call"]

# A scripted reply: a ready response, or a function of the request.
Reply = LlmResponse | Callable[[LlmRequest], LlmResponse]

_VOCABULARY = (
    "the agent remembers what matters and forgets the rest while the user "
    "asks about memory blocks archival passages tools and heartbeats today"
)
_WORDS = _VOCABULARY.split()


def _tokens(text: str | None) -> int:
    return 0 if not text else max(1, len(text) // 4)


def text(content: str, *, model: str = "sim/llm") -> LlmResponse:
    """A reply of plain assistant text."""
    return LlmResponse(
        message=ChatMessage(role="assistant", content=content),
        finish_reason="stop",
        usage=Usage(completion_tokens=_tokens(content)),
        model=model,
    )


def tool_call(
    name: str,
    arguments: dict[str, Any],
    *,
    call_id: str = "call-sim",
    reasoning: str | None = None,
    model: str = "sim/llm",
) -> LlmResponse:
    """A reply that calls one tool (put `request_heartbeat` in `arguments` to chain)."""
    args = json.dumps(arguments, sort_keys=True)
    return LlmResponse(
        message=ChatMessage(
            role="assistant",
            content=reasoning,
            tool_calls=(ToolCall(id=call_id, name=name, arguments=args),),
        ),
        finish_reason="tool_calls",
        usage=Usage(completion_tokens=_tokens(args) + _tokens(reasoning)),
        model=model,
    )


def tool_calls(*calls: tuple[str, str, dict[str, Any]], model: str = "sim/llm") -> LlmResponse:
    """A reply that calls several tools at once: (call id, tool name, arguments) each."""
    wire = tuple(ToolCall(id=i, name=n, arguments=json.dumps(a, sort_keys=True))
                 for i, n, a in calls)  # fmt: skip
    return LlmResponse(
        message=ChatMessage(role="assistant", content=None, tool_calls=wire),
        finish_reason="tool_calls",
        usage=Usage(completion_tokens=sum(_tokens(c.arguments) for c in wire)),
        model=model,
    )


def send_message(message: str, **kw: Any) -> LlmResponse:
    """The Letta way of answering the user: a send_message tool call."""
    return tool_call("send_message", {"message": message}, **kw)


class SimLlmClient(LlmClient):
    def __init__(
        self,
        rng: random.Random,
        *,
        faults: FaultInjector | None = None,
        trace: Trace | None = None,
        script: Iterable[Reply] | None = None,
        latency: tuple[float, float] = (0.05, 0.3),
        timeout: float = 30.0,
        name: str = "llm",
        model: str | None = SIM_CHAT_MODEL,
    ) -> None:
        """`model`: the one model name served (None: any, for tests of other layers)."""
        self._rng = rng
        self._faults = faults or FaultInjector(FaultConfig(), rng)
        self._trace = trace
        self._script = list(script) if script is not None else None
        self.latency = latency
        self.timeout = timeout
        self.name = name
        self.model = model
        self.requests: list[LlmRequest] = []  # every request received, for assertions
        # The delay each request drew (same index as `requests`), so a test can hold what
        # the server measured to what it waited.
        self.latencies: list[float] = []

    @classmethod
    def for_world(cls, world: Any, name: str = "llm", **kw: Any) -> SimLlmClient:
        """A client drawing from `world`'s seed and fault table."""
        rng = world.rng(f"llm:{name}")
        return cls(rng, faults=world.faults, trace=world.trace, name=name, **kw)

    # -- the interface -------------------------------------------------------

    async def complete(self, request: LlmRequest) -> LlmResponse:
        await self._before_reply(request, "llm.complete")
        return self._reply(request)

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        await self._before_reply(request, "llm.stream")
        response = self._reply(request)
        content = response.message.content or ""
        pieces = [w + " " for w in content.split(" ")] if content else []
        if pieces:
            pieces[-1] = pieces[-1][:-1]
        for piece in pieces:
            await trio.sleep(self._rng.uniform(0.005, 0.03))
            if self._fault(FaultType.LLM_FAILURE, "llm.stream.chunk"):
                raise LlmFailure("simulated stream broken midway", status=502)
            yield ContentDelta(piece)
        for index, call in enumerate(response.message.tool_calls):
            half = len(call.arguments) // 2
            await trio.sleep(self._rng.uniform(0.005, 0.03))
            yield ToolCallDelta(index, call.id, call.name, call.arguments[:half])
            await trio.sleep(self._rng.uniform(0.005, 0.03))
            yield ToolCallDelta(index, None, None, call.arguments[half:])
        yield Completed(response)

    # -- internals -----------------------------------------------------------

    def _fault(self, fault: FaultType, op: str) -> bool:
        fired = self._faults.fires(fault, op)
        if fired and self._trace is not None:
            self._trace.record(f"fault {fault.value} llm={self.name} op={op}")
        return fired

    async def _before_reply(self, request: LlmRequest, op: str) -> None:
        index = len(self.requests)
        self.requests.append(request)
        self.latencies.append(0.0)
        if self.model is not None and request.model != self.model:
            # OpenAI's answer to a model it does not serve: a 4xx, so nothing retries it.
            raise LlmFailure(
                f"sim answered 404: The model `{request.model}` does not exist or you do not "
                f"have access to it (this simulated provider serves `{self.model}`)",
                status=404,
            )
        self.latencies[index] = self._rng.uniform(*self.latency)
        await trio.sleep(self.latencies[index])
        if self._fault(FaultType.LLM_LATENCY, op):
            extra = self._faults.uniform(1.0, 10.0)
            self.latencies[index] += extra
            await trio.sleep(extra)
        if self._fault(FaultType.LLM_TIMEOUT, op):
            await trio.sleep(self.timeout)
            raise LlmTimeout(f"simulated: no reply within {self.timeout:g} s")
        if self._fault(FaultType.LLM_RATE_LIMITED, op):
            raise LlmRateLimited(
                "simulated 429", retry_after=round(self._faults.uniform(0.5, 5.0), 3)
            )
        if self._fault(FaultType.LLM_FAILURE, op):
            raise LlmFailure("simulated provider error", status=500)

    def _reply(self, request: LlmRequest) -> LlmResponse:
        if self._script is not None:
            if not self._script:
                raise AssertionError(f"{self.name}: the test's script ran out of replies")
            reply = self._script.pop(0)
            response = reply(request) if callable(reply) else reply
        else:
            response = self._seeded_reply(request)
        if self._trace is not None:
            calls = ",".join(c.name for c in response.message.tool_calls) or "-"
            self._trace.record(f"llm={self.name} reply={response.finish_reason} tools={calls}")
        prompt = sum(_tokens(m.content) for m in request.messages)
        usage = Usage(prompt_tokens=prompt, completion_tokens=response.usage.completion_tokens)
        return LlmResponse(response.message, response.finish_reason, usage, request.model)

    def _sentence(self) -> str:
        count = self._rng.randint(3, 12)
        return " ".join(self._rng.choice(_WORDS) for _ in range(count)).capitalize() + "."

    def _call_id(self) -> str:
        return f"call_{self._rng.getrandbits(64):016x}"

    def _seeded_reply(self, request: LlmRequest) -> LlmResponse:
        """A plausible agent step drawn from the seed, given the tools on offer."""
        tools = {t.name for t in request.tools}
        # Tool results since the user last spoke: how deep the heartbeat chain is.
        depth = 0
        for message in reversed(request.messages):
            if message.role == "user":
                break
            depth += message.role == "tool"
        roll = self._rng.random()
        kw = {"call_id": self._call_id(), "reasoning": self._sentence()}
        if depth < 3 and roll < 0.25 and "core_memory_append" in tools:
            args = {"label": "human", "content": self._sentence(), "request_heartbeat": True}
            return tool_call("core_memory_append", args, **kw)
        if depth < 3 and roll < 0.4 and "archival_memory_insert" in tools:
            args = {"content": self._sentence(), "request_heartbeat": True}
            return tool_call("archival_memory_insert", args, **kw)
        if "send_message" in tools:
            return send_message(self._sentence(), **kw)
        return text(self._sentence())
