"""What a use case can refuse, independent of HTTP; the API maps each to its status.

NotFound -> 404, Forbidden -> 403, Conflict -> 409, Invalid -> 422 (Letta's list of {loc, msg,
type}), TooLarge -> 413, InsufficientStorage -> 507. Raised before anything is written, so a
refused request changes nothing (a 507 that comes after a write says what was written).
"""

from __future__ import annotations

import attrs

from kelpie_trio.storage.errors import LimitExceeded, StorageFull, StoreError

__all__ = [
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "Invalid",
    "InvalidField",
    "NotFound",
    "PendingApproval",
    "Relayed",
    "ServiceError",
    "TooLarge",
    "Unavailable",
    "refused_by_store",
]


class ServiceError(Exception):
    status = 400

    def detail(self) -> object:
        return str(self)


class NotFound(ServiceError):
    status = 404

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} with id '{ident}' not found")
        self.kind = kind
        self.ident = ident


class Forbidden(ServiceError):
    status = 403


class Conflict(ServiceError):
    status = 409


class PendingApproval(Conflict):
    """A new message while the agent waits for the client to answer tool calls. The detail
    is Letta's (clients match on its code), naming the approval request to answer."""

    def __init__(self, request_id: str | None) -> None:
        super().__init__(
            "Cannot send a new message: The agent is waiting for approval on a tool call. "
            "Answer the pending approval request (a message of type 'approval') first."
        )
        self.request_id = request_id

    def detail(self) -> object:
        return {"code": "PENDING_APPROVAL", "message": str(self),
                "pending_request_id": self.request_id}  # fmt: skip


class Relayed(ServiceError):
    """A refusal an agent's actor made (possibly on another node), passed on as it was."""

    def __init__(self, status: int, detail: object) -> None:
        super().__init__(str(detail))
        self.status = status
        self._detail = detail

    def detail(self) -> object:
        return self._detail


class TooLarge(ServiceError):
    status = 413


class InsufficientStorage(ServiceError):
    """The server's disk is full: nothing more can be stored until an operator makes room."""

    status = 507


class Unavailable(ServiceError):
    """The server cannot do this now (a part of it is missing or stopping); retry later."""

    status = 503


@attrs.frozen
class InvalidField:
    loc: list[str | int]
    msg: str
    type: str = "value_error"


class Invalid(ServiceError):
    status = 422

    def __init__(self, fields: list[InvalidField]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, f.loc))}: {f.msg}" for f in fields))
        self.fields = fields

    @classmethod
    def field(cls, loc: list[str | int], msg: str, kind: str = "value_error") -> Invalid:
        return cls([InvalidField(loc, msg, kind)])

    def detail(self) -> object:
        return [{"loc": f.loc, "msg": f.msg, "type": f.type} for f in self.fields]


STORAGE_FULL = "the server's storage is full"


def refused_by_store(error: StoreError) -> ServiceError | None:
    """What to answer for a store error that no retry can cure, or None for the others.

    The service layer checks sizes before it writes (service/limits.py), so a store's
    own LimitExceeded here is a defence in depth: still the client's request, a 413.
    """
    if isinstance(error, StorageFull):
        return InsufficientStorage(f"{STORAGE_FULL}; nothing was stored. ({error})")
    if isinstance(error, LimitExceeded):
        return TooLarge(f"the request is larger than the store can take at once: {error}")
    return None
