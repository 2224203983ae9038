"""POST /v1/agents/{agent_id}/recompile: the agent's system prompt, compiled from its memory.

kelpie-trio compiles the system prompt afresh at every step (agent/step.py), so there is
nothing stale to rebuild or to store: the route answers the prompt the next step would
send, as Letta's answers the one it rebuilt (`dry_run` and `update_timestamp` change nothing).
"""

from __future__ import annotations

from quart import Blueprint, Response

from kelpie_trio.agent.step import compile_system
from kelpie_trio.agent.tool_rules import parse_rules, rules_prompt
from kelpie_trio.api.common import bool_arg, check_id, json_response, service
from kelpie_trio.api.spec import documented

prompt = Blueprint("prompt", __name__)


@prompt.post("/v1/agents/<agent_id>/recompile")
@documented(
    "The agent's system prompt as its next step sends it",
    response=str,
    query=("update_timestamp", "dry_run"),
)
async def recompile(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    bool_arg("update_timestamp", False)  # checked, as Letta does; nothing to update here
    bool_arg("dry_run", False)
    view = await service().get_agent(agent_id)
    rules = rules_prompt(parse_rules(view.agent.tool_rules))
    return json_response(compile_system(view.agent.system, view.blocks, rules, view.directories))
