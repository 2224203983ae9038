"""What a use case can refuse, independent of HTTP; the API maps each to its status.

NotFound -> 404, Forbidden -> 403, Conflict -> 409, Invalid -> 422 (Letta's list of {loc, msg,
type}), TooLarge -> 413. Raised before anything is written, so a refused
request changes nothing.
"""

from __future__ import annotations

import attrs

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "InvalidField",
    "NotFound",
    "ServiceError",
    "TooLarge",
    "Unavailable",
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


class TooLarge(ServiceError):
    status = 413


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
