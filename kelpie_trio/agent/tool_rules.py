"""Tool rules: what a step may call, which call it must make, and when the turn may end.

An agent's `tool_rules` (Letta's JSON shapes, stored as given) shape its loop. This module
is the solver, with no I/O: from the rules, the tools the agent has, and what the turn has
done so far (the tools it ran, the text the last one returned) it says which tools the next
request offers and whether it forces a call (`offer`); from one step's calls it says whether
the turn goes on (`step_outcome`). The actor keeps `TurnState` in the run's checkpoint, so a
resumed turn decides exactly as the first attempt would have.

Semantics follow Letta 0.16.8's ToolRulesSolver and its agent loops:

- `run_first`: before any tool ran in the turn only these tools are offered, and a call is
  required (one tool: that tool is forced).
- `constrain_child_tools`: right after the parent ran, only its children are offered (and a
  call is required); `parent_last_tool`: its children are offered only right after it.
- `conditional`: right after the tool ran, the child mapped to its output (else
  `default_child`, else anything; with `require_output_mapping`, nothing matches nothing).
- `max_count_per_step`: the tool is no longer offered once it ran that many times in the turn.
- `exit_loop`: a call ends the turn (stop reason `tool_rule`); `continue_loop`: a call keeps
  it going (for heartbeat agents, without asking for a heartbeat).
- `required_before_exit`: the turn does not end until each of these tools has run.
- `requires_approval`: the call waits for a human (`Offer.approval` names these tools); the
  run parks until the client answers (approvals.py).

The constraints intersect; when they leave nothing, every tool is offered (Letta does the
same rather than offering none). A call to a tool not offered is not run: it gets a
`[ToolConstraintError]` result and the turn goes on, and it does not count as a call made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "RULE_TYPES",
    "Offer",
    "RuleError",
    "StepOutcome",
    "ToolRule",
    "TurnState",
    "constraint_error",
    "offer",
    "parse_rules",
    "prefill",
    "rules_prompt",
    "step_outcome",
]

RULE_TYPES = frozenset(
    {
        "run_first",
        "exit_loop",
        "continue_loop",
        "constrain_child_tools",
        "parent_last_tool",
        "conditional",
        "max_count_per_step",
        "required_before_exit",
        "requires_approval",
    }
)
# The rules that constrain which tool comes next (the others act on the loop).
_SEQUENCE_RULES = frozenset(
    {"constrain_child_tools", "parent_last_tool", "conditional", "max_count_per_step"}
)
# A call to their tool keeps the turn going (Letta's "child-based" rules).
_CHILD_RULES = frozenset({"constrain_child_tools", "conditional", "max_count_per_step"})
# Right after their tool ran, these require a call (Letta's requires_force_tool_call).
_FORCING_RULES = frozenset({"constrain_child_tools", "parent_last_tool", "conditional"})

HIDDEN = "[This is an automated system message hidden from the user] "


class RuleError(ValueError):
    """A rule that cannot be read: `where` is its place in the list and the field."""

    def __init__(self, where: list[str | int], message: str) -> None:
        super().__init__(message)
        self.where = where


@attrs.frozen
class ToolRule:
    type: str
    tool_name: str
    children: tuple[str, ...] = ()
    child_args: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, eq=False)
    args: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    default_child: str | None = None
    # (key, child): keys compared with the tool's output as text (JSON object keys are text)
    output_mapping: tuple[tuple[str, str], ...] = ()
    require_output_mapping: bool = False
    max_count_limit: int = 0


@attrs.frozen
class TurnState:
    """What the solver knows of the turn so far; kept in the run's checkpoint."""

    called: tuple[str, ...] = ()  # tools run in this turn, in order (refused calls excluded)
    last_result: str | None = None  # what the last tool call returned (its text)

    def after(self, names: Iterable[str], last_result: str | None) -> TurnState:
        return TurnState((*self.called, *names), last_result)


@attrs.frozen
class Offer:
    """What the next request offers."""

    allowed: tuple[str, ...]  # tool names, in the agent's order
    required: bool  # the model must call a tool (tool_choice "required")
    forced: str | None  # the model must call this tool
    prefilled: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, eq=False)
    approval: frozenset[str] = frozenset()  # allowed tools whose calls wait for approval


@attrs.frozen
class StepOutcome:
    goes_on: bool
    stop_reason: str | None  # when it stops: "tool_rule", "end_turn" or "max_steps"
    heartbeat: str | None = None  # a note to the model to store before the next step


# -- reading rules -------------------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str, where: list[str | int], *, required: bool) -> Any:
    value = raw.get(key)
    if value is None:
        if required:
            raise RuleError([*where, key], "Field required")
        return None
    if not isinstance(value, str) or not value:
        raise RuleError([*where, key], "expected a non-empty string")
    return value


def _names(raw: Mapping[str, Any], key: str, where: list[str | int]) -> tuple[str, ...]:
    value = raw.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError([*where, key], "expected a list of tool names")
    return tuple(value)


def _args(value: Any, where: list[str | int]) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RuleError(where, "expected an object of argument values")
    return dict(value)


def parse_rule(raw: Any, where: list[str | int]) -> ToolRule:
    if not isinstance(raw, dict):
        raise RuleError(where, "expected a tool rule object")
    kind = raw.get("type")
    if kind not in RULE_TYPES:
        raise RuleError(
            [*where, "type"], f"unknown tool rule type {kind!r}; one of {sorted(RULE_TYPES)}"
        )
    name = _text(raw, "tool_name", where, required=True)
    if kind in ("constrain_child_tools", "parent_last_tool"):
        children = _names(raw, "children", where)
        child_args: dict[str, Mapping[str, Any]] = {}
        for i, node in enumerate(raw.get("child_arg_nodes") or []):
            at = [*where, "child_arg_nodes", i]
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                raise RuleError(at, "expected {name, args}")
            if node["name"] not in children:
                raise RuleError([*at, "name"], f"{node['name']!r} is not one of the children")
            node_args = _args(node.get("args"), [*at, "args"])
            if node_args:
                child_args[node["name"]] = node_args
        return ToolRule(kind, name, children=children, child_args=child_args)
    if kind == "conditional":
        mapping = raw.get("child_output_mapping")
        if not isinstance(mapping, dict) or not mapping:
            raise RuleError(
                [*where, "child_output_mapping"],
                "Conditional tool rule must have at least one child tool.",
            )
        pairs = []
        for key, child in mapping.items():
            if not isinstance(child, str) or not child:
                raise RuleError([*where, "child_output_mapping", key], "expected a tool name")
            pairs.append((str(key), child))
        require = raw.get("require_output_mapping", False)
        if not isinstance(require, bool):
            raise RuleError([*where, "require_output_mapping"], "expected a boolean")
        return ToolRule(
            kind,
            name,
            default_child=_text(raw, "default_child", where, required=False),
            output_mapping=tuple(pairs),
            require_output_mapping=require,
        )
    if kind == "max_count_per_step":
        limit = raw.get("max_count_limit")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise RuleError([*where, "max_count_limit"], "expected an integer")
        return ToolRule(kind, name, max_count_limit=limit)
    if kind == "run_first":
        return ToolRule(kind, name, args=_args(raw.get("args"), [*where, "args"]))
    return ToolRule(kind, name)


def parse_rules(raw: Sequence[Any] | None) -> tuple[ToolRule, ...]:
    """The rules of an agent's stored `tool_rules` (Letta's JSON); RuleError if one is bad."""
    return tuple(parse_rule(r, [i]) for i, r in enumerate(raw or []))


def rules_of(raw: Sequence[Any] | None) -> tuple[ToolRule, ...]:
    """The readable ones of stored rules: a stored rule was checked when it was written; one
    written before the checks existed is skipped rather than stopping the agent."""
    out = []
    for i, r in enumerate(raw or []):
        try:
            out.append(parse_rule(r, [i]))
        except RuleError:
            continue
    return tuple(out)


# -- the solver ----------------------------------------------------------------------


def _output_matches(output: str, key: str) -> bool:
    return output == key


def _valid_after(rule: ToolRule, state: TurnState, available: frozenset[str]) -> frozenset[str]:
    """The tools `rule` lets the next call use (`available` when it does not apply)."""
    last = state.called[-1] if state.called else None
    if rule.type == "constrain_child_tools":
        return frozenset(rule.children) if last == rule.tool_name else available
    if rule.type == "parent_last_tool":
        if last == rule.tool_name:
            return frozenset(rule.children)
        return available - frozenset(rule.children)
    if rule.type == "max_count_per_step":
        if state.called.count(rule.tool_name) >= rule.max_count_limit:
            return available - {rule.tool_name}
        return available
    if rule.type == "conditional":
        if last != rule.tool_name:
            return available
        output = state.last_result if state.last_result is not None else ""
        for key, child in rule.output_mapping:
            if _output_matches(output, key):
                return frozenset({child})
        if rule.require_output_mapping:
            return frozenset()
        return frozenset({rule.default_child}) if rule.default_child else available
    return available


def offer(
    rules: Sequence[ToolRule],
    available: Sequence[str],
    state: TurnState,
    *,
    always_force_single: bool = False,
) -> Offer:
    """The tools the next request offers, and whether (and which) a call is forced.

    `always_force_single`: heartbeat agents (Letta's v2 loop) force the only tool offered even
    when no rule requires a call; letta_v1_agent forces it only when a rule does."""
    have = frozenset(available)
    first = [r for r in rules if r.type == "run_first"]
    last = state.called[-1] if state.called else None
    if not state.called and first:
        allowed = frozenset(r.tool_name for r in first) & have
        required = True
    else:
        allowed = have
        for rule in rules:
            if rule.type in _SEQUENCE_RULES:
                allowed &= _valid_after(rule, state, have)
        required = any(r.type in _FORCING_RULES and r.tool_name == last for r in rules)
    if not allowed:  # the rules leave nothing: offer everything rather than nothing
        allowed = have
    names = tuple(n for n in dict.fromkeys(available) if n in allowed)
    forced = names[0] if len(names) == 1 and (required or always_force_single) else None
    return Offer(
        allowed=names,
        required=required and bool(names),
        forced=forced,
        prefilled=_prefilled(rules, state, frozenset(names)),
        approval=frozenset(
            r.tool_name for r in rules if r.type == "requires_approval" and r.tool_name in have
        ),
    )


def _prefilled(
    rules: Sequence[ToolRule], state: TurnState, allowed: frozenset[str]
) -> dict[str, dict[str, Any]]:
    """Arguments the rules fix for the tools offered: a run_first rule's `args` at the start,
    a child's `child_arg_nodes` args right after its parent. Later rules win per key."""
    out: dict[str, dict[str, Any]] = {}
    last = state.called[-1] if state.called else None
    for rule in rules:
        first = rule.type == "run_first" and not state.called
        if first and rule.args and rule.tool_name in allowed:
            out.setdefault(rule.tool_name, {}).update(rule.args)
        if rule.type == "constrain_child_tools" and last == rule.tool_name:
            for child, child_args in rule.child_args.items():
                if child in allowed:
                    out.setdefault(child, {}).update(child_args)
    return out


def prefill(
    args: Mapping[str, Any], fixed: Mapping[str, Any] | None, schema: Mapping[str, Any]
) -> dict[str, Any]:
    """The call's arguments with the rule's fixed ones over them; ValueError when a fixed one
    is not a parameter of the tool or does not fit its type."""
    if not fixed:
        return dict(args)
    properties = (schema.get("parameters") or {}).get("properties") or {}
    problems = []
    for key, value in fixed.items():
        if key not in properties:
            problems.append(f"Unknown argument '{key}' for tool '{schema.get('name')}'.")
        elif not _fits(properties[key], value):
            expected = properties[key].get("type")
            problems.append(
                f"Invalid value for '{key}': {value!r} does not match expected schema type "
                f"{expected!r}."
            )
    if problems:
        raise ValueError("; ".join(problems))
    return {**args, **fixed}


_JSON_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _fits(schema: Mapping[str, Any], value: Any) -> bool:
    if "const" in schema:
        return bool(value == schema["const"])
    if "enum" in schema:
        return value in schema["enum"]
    for union in ("anyOf", "oneOf"):
        if isinstance(schema.get(union), list):
            return any(_fits(s, value) for s in schema[union])
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    return not kinds or any(_JSON_TYPES.get(k, lambda v: True)(value) for k in kinds)


def uncalled_required(
    rules: Sequence[ToolRule], available: Sequence[str], called: Sequence[str]
) -> list[str]:
    """The required_before_exit tools the agent has and the turn has not run yet."""
    have = set(available)
    ran = set(called)
    return [
        n
        for n in dict.fromkeys(r.tool_name for r in rules if r.type == "required_before_exit")
        if n in have and n not in ran
    ]


def _is(rules: Sequence[ToolRule], kind: str, name: str) -> bool:
    return any(r.type == kind and r.tool_name == name for r in rules)


def step_outcome(
    rules: Sequence[ToolRule],
    available: Sequence[str],
    state: TurnState,
    calls: Sequence[tuple[str, bool]],
    *,
    heartbeat_agent: bool,
    wants_heartbeat: bool = False,
    any_failed: bool = False,
    implicit_terminal: frozenset[str] = frozenset(),
    final_step: bool = False,
) -> StepOutcome:
    """Whether the turn goes on after a step that made `calls` ((tool name, refused by the
    rules) each, in order); `state` is the turn before this step.

    letta_v1_agent goes on after any tool call and ends on a reply without one; heartbeat
    agents go on when a call asks for it (or a tool failed). Over either: an exit_loop tool
    ends the turn, a continue_loop tool or a child rule keeps it going, a refused call keeps
    it going (the model is told and tries again), and the turn does not end while a
    required_before_exit tool has not run. `implicit_terminal` tools end the turn like an
    exit_loop rule but with stop reason end_turn (send_message, for agents without rules).
    """
    if not calls:
        missing = uncalled_required(rules, available, state.called)
        if missing and not final_step:
            note = f"{HIDDEN}ToolRuleViolated: You must call {', '.join(missing)} at least once "
            return StepOutcome(True, None, note + "to exit the loop.")
        # Out of steps with a required tool not run: the step limit ended it, not the model.
        return StepOutcome(False, "max_steps" if missing else "end_turn")
    ran = [name for name, refused in calls if not refused]
    called = (*state.called, *ran)
    terminal = [n for n in ran if _is(rules, "exit_loop", n)]
    implicit = [n for n in ran if n in implicit_terminal]
    keeps_going = any(refused for _, refused in calls) or any(
        _is(rules, "continue_loop", n)
        or any(r.type in _CHILD_RULES and r.tool_name == n for r in rules)
        for n in ran
    )
    stop: str | None = None
    if heartbeat_agent:
        goes_on = wants_heartbeat or any_failed or keeps_going
        if terminal:  # Letta's v2 loop names the rule only when it cut a heartbeat short
            goes_on, stop = False, "tool_rule" if wants_heartbeat else None
    else:
        goes_on = True  # letta_v1: on after tool calls
        if terminal:
            goes_on, stop = False, "tool_rule"
        elif implicit and not keeps_going:
            goes_on = False
    if final_step:
        return StepOutcome(False, "max_steps")
    if not goes_on and uncalled_required(rules, available, called):
        return StepOutcome(True, None)  # not done until the required tools ran
    if goes_on:
        return StepOutcome(True, None)
    return StepOutcome(False, stop or "end_turn")


def constraint_error(
    rules: Sequence[ToolRule], name: str, allowed: Sequence[str], state: TurnState
) -> str:
    """What the model is told when it calls a tool the rules do not allow now."""
    previous = state.called[-1] if state.called else None
    hints = [
        h
        for r in rules
        if r.tool_name == name or (previous is not None and r.tool_name == previous)
        if (h := _describe(r)) is not None
    ]
    text = f"[ToolConstraintError] Cannot call {name}, valid tools include: {list(allowed)}."
    if hints:
        text += "\n** Hint: Possible rules that were violated:\n" + "\n".join(
            f"\t- {h}" for h in hints
        )
    return text


def _describe(rule: ToolRule) -> str | None:
    """One rule in words, for the model (the system prompt and constraint errors)."""
    if rule.type == "run_first":
        return f"Start your response by calling {rule.tool_name}."
    if rule.type == "exit_loop":
        return f"Calling {rule.tool_name} ends your response."
    if rule.type == "continue_loop":
        return f"After {rule.tool_name} you keep going: your response continues."
    if rule.type == "constrain_child_tools":
        return f"Right after {rule.tool_name}, call one of: {', '.join(rule.children)}."
    if rule.type == "parent_last_tool":
        return f"Call {', '.join(rule.children)} only right after {rule.tool_name}."
    if rule.type == "conditional":
        return f"What {rule.tool_name} returns decides which tool comes next."
    if rule.type == "max_count_per_step":
        return f"Call {rule.tool_name} at most {rule.max_count_limit} time(s) per response."
    if rule.type == "required_before_exit":
        return f"Call {rule.tool_name} before you finish your response."
    return None


def rules_prompt(rules: Sequence[ToolRule]) -> str | None:
    """The rules in words for the system prompt, or None when there are none to tell."""
    lines = [d for r in rules if (d := _describe(r)) is not None]
    return "\n".join(lines) if lines else None
