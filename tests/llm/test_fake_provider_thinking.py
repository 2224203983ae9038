"""The fake Anthropic refuses extended thinking as the real API does: a budget under 1,024
or not under max_tokens, thinking with a forced tool or another temperature, a tool-use
loop whose last assistant turn does not open with its thinking, an unsigned thinking block."""

from __future__ import annotations

from typing import Any

import pytest

from tests.llm.test_fake_providers import ANTHROPIC_HEADERS, fake, messages, post

__all__ = ["fake"]  # the fixture, shared with test_fake_providers.py

THINK = {"type": "enabled", "budget_tokens": 1024}
USER = {"role": "user", "content": "hi"}
USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
RESULT = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                       "content": "done"}]}  # fmt: skip
SIGNED = {"type": "thinking", "thinking": "hm", "signature": "sig"}
TOOLS = [{"name": "f", "input_schema": {"type": "object"}}]


async def test_anthropic_accepts_thinking_with_its_signed_block_sent_back(fake) -> None:
    body = messages(USER, {"role": "assistant", "content": [SIGNED, USE]}, RESULT,
                    thinking=THINK, max_tokens=2000, tools=TOOLS)  # fmt: skip
    assert (await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)).status_code == 200


@pytest.mark.parametrize(
    ("fields", "turns", "words"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 500}, "max_tokens": 2000}, [USER],
         "greater than or equal to 1024"),
        ({"thinking": THINK, "max_tokens": 1024}, [USER], "must be greater than"),
        ({"thinking": THINK, "max_tokens": 2000, "tools": TOOLS,
          "tool_choice": {"type": "any"}}, [USER], "forces tool use"),
        ({"thinking": THINK, "max_tokens": 2000, "temperature": 0.5}, [USER], "temperature"),
        ({"thinking": {"type": "adaptive"}, "max_tokens": 2000}, [USER], "adaptive"),
        ({"thinking": THINK, "max_tokens": 2000, "tools": TOOLS},
         [USER, {"role": "assistant", "content": [USE]}, RESULT], "must start with a thinking"),
        ({"max_tokens": 2000, "tools": TOOLS},
         [USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}, USE]},
          RESULT], "signature"),
    ],
    ids=["small-budget", "budget-over-max", "forced-tool", "temperature", "adaptive-on-4-5",
         "loop-without-thinking", "unsigned"],
)  # fmt: skip
async def test_anthropic_refuses_thinking_its_api_refuses(fake, fields, turns, words) -> None:
    body: dict[str, Any] = messages(*turns, **fields)
    refused = await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert refused.status_code == 400
    assert words in refused.json()["error"]["message"]
