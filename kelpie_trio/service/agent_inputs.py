"""What an agent create or update carries beside its model: checked before any
transaction, so a bad value is a 422 that changes nothing (service/agents.py uses them)."""

from __future__ import annotations

from typing import Any

from kelpie_trio.errors import Invalid
from kelpie_trio.models.agents import SECRET_MASK
from kelpie_trio.service.limits import check_key_part

__all__ = ["folder_ids_of", "identity_ids_of", "secrets_of"]


def secrets_of(given: Any, current: dict[str, str]) -> dict[str, str]:
    """An agent's tool secrets from a request (`secrets`, or the older
    `tool_exec_environment_variables`): names an environment can hold, string values.
    A value sent back as the mask the API shows keeps the value already stored."""
    if given is None:
        return {}
    where = ["body", "secrets"]
    if not isinstance(given, dict):
        raise Invalid.field(where, "expected an object of variable names to string values")
    checked: dict[str, str] = {}
    for name, value in given.items():
        if not name or "=" in name or "\0" in name:
            raise Invalid.field([*where, name], "not a valid environment variable name")
        if not isinstance(value, str) or "\0" in value:
            raise Invalid.field([*where, name], "expected a string without NUL characters")
        checked[name] = current[name] if value == SECRET_MASK and name in current else value
    return checked


def identity_ids_of(body: Any) -> list[str] | None:
    """`identity_ids` of an agent create or update (None: not given), checked before any
    transaction; the identities themselves are looked up in it."""
    given = body.get("identity_ids") if isinstance(body, dict) else None
    if given is None:
        return None
    where = ["body", "identity_ids"]
    if not isinstance(given, list):
        raise Invalid.field(where, "expected a list of identity ids", "list_type")
    for index, ident in enumerate(given):
        if not isinstance(ident, str):
            raise Invalid.field([*where, index], "expected an identity id", "string_type")
        check_key_part([*where, index], ident, "an identity id")
    return given


def folder_ids_of(body: dict[str, Any]) -> list[str] | None:
    """`folder_ids` (or Letta's older `source_ids`) of an agent update, None when neither is
    given; checked before any transaction."""
    for name in ("folder_ids", "source_ids"):
        given = body.get(name)
        if given is None:
            continue
        where = ["body", name]
        if not isinstance(given, list):
            raise Invalid.field(where, "expected a list of folder ids", "list_type")
        for index, ident in enumerate(given):
            if not isinstance(ident, str):
                raise Invalid.field([*where, index], "expected a folder id", "string_type")
            check_key_part([*where, index], ident, "a folder id")
        return given
    return None
