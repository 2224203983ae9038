"""Memory blocks: the core memory an agent sees in its context, shareable between agents."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["DEFAULT_BLOCK_LIMIT", "Block", "CreateBlock"]

DEFAULT_BLOCK_LIMIT = 100_000  # characters, Letta's default


@attrs.define(kw_only=True)
class _BlockFields:
    """What a client may set on a block, beside its value and label."""

    limit: int = DEFAULT_BLOCK_LIMIT
    description: str | None = None
    read_only: bool = False
    hidden: bool | None = None
    metadata: dict[str, Any] | None = attrs.Factory(dict)
    tags: list[str] | None = attrs.Factory(list)
    project_id: str | None = None
    template_name: str | None = None
    is_template: bool = False
    template_id: str | None = None
    base_template_id: str | None = None
    deployment_id: str | None = None
    entity_id: str | None = None
    preserve_on_migration: bool | None = False


@attrs.define(kw_only=True)
class Block(_BlockFields):
    """A stored block, in Letta's Block shape (plus `created_at`, used for ordering)."""

    id: str
    value: str
    label: str | None = None
    created_by_id: str | None = None
    last_updated_by_id: str | None = None
    created_at: float = 0.0


@attrs.define(kw_only=True)
class CreateBlock(_BlockFields):
    """POST /v1/blocks/ and an agent's `memory_blocks`: value and label are required."""

    value: str
    label: str


# Fields a PATCH may change (everything the client sees but the id).
UPDATABLE_BLOCK_FIELDS = frozenset(
    f.name for f in attrs.fields(Block) if f.name not in ("id", "created_at")
)
