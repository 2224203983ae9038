"""Identities: the users and organisations of a Letta deployment, tied to agents and blocks.

Deprecated in Letta 0.16.8 but still called (client.agents.identities.attach/detach, and the
agent listing's `identity_id` and `identifier_keys` filters); kept in Letta's shapes.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "CreateIdentity",
    "Identity",
    "IdentityProperty",
    "IdentityType",
    "UpdateIdentity",
]

IdentityType = Literal["org", "user", "other"]


@attrs.define(kw_only=True)
class IdentityProperty:
    """A property of an identity: its key, value and the value's type."""

    key: str
    value: str | int | float | bool | dict[str, Any]  # matching `type` (service/identities.py)
    type: Literal["string", "number", "boolean", "json"]


@attrs.define(kw_only=True)
class CreateIdentity:
    """POST and PUT /v1/identities/: an identity is named by its `identifier_key` (unique
    with its `project_id`)."""

    identifier_key: str
    name: str
    identity_type: IdentityType
    project_id: str | None = None
    agent_ids: list[str] | None = None
    block_ids: list[str] | None = None
    properties: list[IdentityProperty] | None = None


@attrs.define(kw_only=True)
class UpdateIdentity:
    """PATCH /v1/identities/{identity_id}: only the fields given change; `properties` given
    are merged by key."""

    identifier_key: str | None = None
    name: str | None = None
    identity_type: IdentityType | None = None
    agent_ids: list[str] | None = None
    block_ids: list[str] | None = None
    properties: list[IdentityProperty] | None = None


@attrs.define(kw_only=True)
class Identity:
    """A stored identity, in Letta's Identity shape (plus `created_at`, used for ordering)."""

    id: str
    identifier_key: str
    name: str
    identity_type: IdentityType
    project_id: str | None = None
    agent_ids: list[str] = attrs.Factory(list)
    block_ids: list[str] = attrs.Factory(list)
    organization_id: str | None = None
    properties: list[IdentityProperty] = attrs.Factory(list)
    created_at: float = 0.0
