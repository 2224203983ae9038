"""When a scheduled message falls due, and what a node does when it finds one due: plain
functions over attrs values, no store and no trio (the firer in service/schedules.py is the
shell that reads, decides with these, and writes).

A schedule is one-time (Letta's `scheduled_at`, Unix milliseconds, in the future) or
recurring (a five-field cron expression, read in a time zone: UTC unless the schedule
names an IANA zone in `timezone`). Times inside kelpie-trio are integer microseconds since
the epoch, so a due time is exact and can be part of a key.

The missed-firing policy lives in `claim`: a firing's identity is (schedule, due time); a
recurring schedule's next due time is the first cron time after *now*, not after the due
time being fired, so however many periods passed while no node was up, they fire once,
as the one stored due time, and the schedule goes on from the present.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any, Literal

import attrs
from cronsim import CronSim, CronSimError

from kelpie_trio.errors import Invalid, ServiceError

__all__ = [
    "Claim",
    "ScheduleSpec",
    "claim",
    "first_due",
    "idempotency_key",
    "next_cron_time",
    "parse_spec",
]

Loc = list[str | int]
Kind = Literal["one-time", "recurring"]
# Far enough that a typo in milliseconds-versus-seconds is caught either way: a time in
# seconds reads as January 1970 (past), one in microseconds as a year past 9999.
_MAX_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z


@attrs.frozen
class ScheduleSpec:
    """Letta's schedule object, checked: `scheduled_at` in ms for one-time, the cron
    expression and its time zone for recurring."""

    type: Kind
    scheduled_at: float | None = None
    cron_expression: str | None = None
    timezone: str | None = None


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _zone(name: str, where: Loc) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid.field(where, f"unknown time zone {name!r} (an IANA name, e.g. "
                            "'Europe/Paris' or 'UTC')") from None  # fmt: skip


def next_cron_time(expression: str, zone: str | None, after_us: int) -> int | None:
    """The first time the cron expression matches strictly after `after_us` (microseconds),
    as read on the wall clock of `zone`; None if it never matches again."""
    tz = zoneinfo.ZoneInfo(zone or "UTC")
    # cronsim works on whole seconds: start from the second `after_us` falls in, and a
    # match in that same second is not strictly after it.
    start = dt.datetime.fromtimestamp(after_us // 1_000_000, tz)
    try:
        found = next(CronSim(expression, start))
    except StopIteration:
        return None
    return int(found.timestamp()) * 1_000_000


def parse_spec(raw: Any, now: float, where: Loc | None = None) -> ScheduleSpec:
    """Letta's `schedule` object, or Invalid (422) naming the field: an unknown type, a
    one-time in the past, a cron expression cronsim refuses, an unknown time zone."""
    where = where or ["body", "schedule"]
    if not isinstance(raw, dict):
        raise Invalid.field(where, "schedule must be an object", "model_attributes_type")
    kind = raw.get("type")
    if kind is None:
        kind = "recurring" if "cron_expression" in raw else "one-time"
    if kind == "one-time":
        at = raw.get("scheduled_at")
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise Invalid.field([*where, "scheduled_at"],
                                "scheduled_at (Unix time in milliseconds) is required")  # fmt: skip
        if not 0 < at <= _MAX_MS:
            raise Invalid.field([*where, "scheduled_at"],
                                "scheduled_at is Unix time in milliseconds")  # fmt: skip
        if at / 1000 <= now:  # Letta answers 400 here
            raise ServiceError(
                "schedule.scheduled_at is in the past; a one-time message is "
                "scheduled for a time to come (Unix time in milliseconds)"
            )
        if raw.get("timezone") is not None:
            raise Invalid.field(
                [*where, "timezone"], "a one-time schedule is an instant; timezone is for cron"
            )
        return ScheduleSpec(type="one-time", scheduled_at=float(at))
    if kind != "recurring":
        raise Invalid.field([*where, "type"], "type is 'one-time' or 'recurring'", "enum")
    expression = raw.get("cron_expression")
    if not isinstance(expression, str) or not expression.strip():
        raise Invalid.field([*where, "cron_expression"], "cron_expression is required")
    zone = raw.get("timezone")
    if zone is not None:
        if not isinstance(zone, str):
            raise Invalid.field([*where, "timezone"], "timezone must be a string")
        _zone(zone, [*where, "timezone"])
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5:
        raise Invalid.field([*where, "cron_expression"],
                            "a cron expression has five fields: minute hour day-of-month "
                            "month day-of-week")  # fmt: skip
    try:
        found = next_cron_time(expression, zone, _us(now))
    except CronSimError as error:
        raise Invalid.field([*where, "cron_expression"],
                            f"not a cron expression: {error}") from None  # fmt: skip
    if found is None:
        raise Invalid.field([*where, "cron_expression"], "this cron expression never matches")
    return ScheduleSpec(type="recurring", cron_expression=expression, timezone=zone)


def first_due(spec: ScheduleSpec, now: float) -> int:
    """The first due time of a new schedule, in microseconds."""
    if spec.type == "one-time":
        assert spec.scheduled_at is not None
        return round(spec.scheduled_at * 1000)
    assert spec.cron_expression is not None
    found = next_cron_time(spec.cron_expression, spec.timezone, _us(now))
    assert found is not None  # parse_spec checked it matches
    return found


@attrs.frozen
class Claim:
    """What a node does with a schedule it found due: fire `due_us`, and store
    `next_due_us` as the schedule's next due time (None: the schedule is done)."""

    due_us: int
    next_due_us: int | None


def claim(
    spec: ScheduleSpec, stored_due_us: int | None, seen_due_us: int, now: float
) -> Claim | None:
    """Whether the firing the node saw in the due index is still its to make: the schedule
    still waits on that due time (no other node fired it since) and, by this node's clock,
    it has come. A recurring schedule's next time is the first after now (the policy above)."""
    if stored_due_us is None or stored_due_us != seen_due_us or seen_due_us > _us(now):
        return None
    if spec.type == "one-time":
        return Claim(seen_due_us, None)
    assert spec.cron_expression is not None
    after = max(seen_due_us, _us(now))
    return Claim(seen_due_us, next_cron_time(spec.cron_expression, spec.timezone, after))


def idempotency_key(schedule_id: str, due_us: int) -> str:
    """The send's key: the firing's identity, so a firing sent again joins its run."""
    return f"schedule:{schedule_id}:{due_us}"
