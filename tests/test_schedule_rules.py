"""The decisions behind scheduled messages (service/schedule_rules.py), without a store or
trio: parsing Letta's schedule object, due times in time zones across DST changes, and
what a node does with a firing it finds due."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from kelpie_trio.errors import Invalid, ServiceError
from kelpie_trio.service.schedule_rules import (
    Claim,
    ScheduleSpec,
    claim,
    first_due,
    idempotency_key,
    next_cron_time,
    parse_spec,
)
from kelpie_trio.service.schedules import ScheduleSettings

US = 1_000_000
NOW = dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC).timestamp()
EVERY_MINUTE = ScheduleSpec(type="recurring", cron_expression="* * * * *")


def us(when: dt.datetime) -> int:
    return int(when.timestamp()) * US


def local(zone: str, *fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=zoneinfo.ZoneInfo(zone))  # type: ignore[misc]


def test_a_one_time_schedule_is_due_at_its_millisecond_instant() -> None:
    spec = parse_spec({"type": "one-time", "scheduled_at": (NOW + 90) * 1000 + 250}, NOW)
    assert first_due(spec, NOW) == round((NOW + 90.25) * US)
    assert parse_spec({"scheduled_at": (NOW + 1) * 1000}, NOW).type == "one-time"  # Letta's default


def test_a_time_in_the_past_or_in_seconds_is_refused_with_letta_s_400() -> None:
    for at in ((NOW - 1) * 1000, NOW * 1000, NOW + 60):  # the last: seconds, not ms
        with pytest.raises(ServiceError) as refused:
            parse_spec({"type": "one-time", "scheduled_at": at}, NOW)
        assert refused.value.status == 400 and "past" in str(refused.value)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"type": "recurring", "cron_expression": "61 * * * *"}, "cron_expression"),
        ({"type": "recurring", "cron_expression": "0 0 30 2 *"}, "cron_expression"),
        ({"type": "recurring", "cron_expression": "@hourly"}, "cron_expression"),
        ({"type": "recurring", "cron_expression": "*/5 * * * * *"}, "cron_expression"),
        ({"type": "recurring"}, "cron_expression"),
        ({"type": "recurring", "cron_expression": "0 9 * * *", "timezone": "UTC+2"}, "timezone"),
        ({"type": "recurring", "cron_expression": "0 9 * * *", "timezone": 2}, "timezone"),
        ({"type": "one-time"}, "scheduled_at"),
        ({"type": "one-time", "scheduled_at": True}, "scheduled_at"),
        ({"type": "one-time", "scheduled_at": 10**20}, "scheduled_at"),
        ({"type": "one-time", "scheduled_at": (NOW + 60) * 1000, "timezone": "UTC"}, "timezone"),
        ({"type": "hourly"}, "type"),
    ],
)
def test_bad_schedules_are_422_naming_the_field(schedule: dict, field: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_spec(schedule, NOW)
    assert refused.value.fields[0].loc == ["body", "schedule", field]


def test_a_cron_is_read_in_its_time_zone_and_defaults_to_utc() -> None:
    spec = parse_spec({"type": "recurring", "cron_expression": "30 9 * * *",
                       "timezone": "Asia/Kolkata"}, NOW)  # fmt: skip
    assert first_due(spec, NOW) == us(local("Asia/Kolkata", 2026, 3, 29, 9, 30))
    utc = parse_spec({"type": "recurring", "cron_expression": "0  9 * * *"}, NOW)
    assert utc.cron_expression == "0 9 * * *" and utc.timezone is None
    assert first_due(utc, NOW) == us(dt.datetime(2026, 3, 29, 9, 0, tzinfo=dt.UTC))


def test_a_cron_time_skipped_by_spring_forward_fires_once_after_the_gap() -> None:
    # Paris skips 02:00-03:00 on 2026-03-29: the 02:30 run happens at 03:00, once.
    start = us(local("Europe/Paris", 2026, 3, 28, 3, 0))
    times = [next_cron_time("30 2 * * *", "Europe/Paris", start)]
    for _ in range(2):
        times.append(next_cron_time("30 2 * * *", "Europe/Paris", times[-1]))  # type: ignore[arg-type]
    assert times == [us(local("Europe/Paris", 2026, 3, 29, 3, 0)),
                     us(local("Europe/Paris", 2026, 3, 30, 2, 30)),
                     us(local("Europe/Paris", 2026, 3, 31, 2, 30))]  # fmt: skip


def test_a_cron_time_repeated_by_fall_back_fires_once() -> None:
    # Paris lives 02:00-03:00 twice on 2026-10-25: a 02:30 cron fires once that day.
    start = us(local("Europe/Paris", 2026, 10, 24, 12, 0))
    first = next_cron_time("30 2 * * *", "Europe/Paris", start)
    second = next_cron_time("30 2 * * *", "Europe/Paris", first)  # type: ignore[arg-type]
    assert (second - first) / US > 23 * 3600  # type: ignore[operator]
    assert dt.datetime.fromtimestamp(second / US, zoneinfo.ZoneInfo("Europe/Paris")).day == 26  # type: ignore[operator]


def test_a_due_firing_is_claimed_and_the_next_time_is_the_first_after_now() -> None:
    due = us(dt.datetime(2026, 3, 28, 12, 1, tzinfo=dt.UTC))
    assert claim(EVERY_MINUTE, due, due, due / US + 0.4) == Claim(due, due + 60 * US)
    # Missed for five minutes (every node down): it fires once, and goes on from now.
    late = due / US + 5 * 60 + 10
    assert claim(EVERY_MINUTE, due, due, late) == Claim(due, due + 6 * 60 * US)
    once = ScheduleSpec(type="one-time", scheduled_at=due / 1000)
    assert claim(once, due, due, late) == Claim(due, None)


def test_a_firing_another_node_claimed_or_not_yet_due_is_left_alone() -> None:
    due = us(dt.datetime(2026, 3, 28, 12, 1, tzinfo=dt.UTC))
    assert claim(EVERY_MINUTE, due + 60 * US, due, due / US + 1) is None  # advanced already
    assert claim(EVERY_MINUTE, None, due, due / US + 1) is None  # ended already
    assert claim(EVERY_MINUTE, due, due, due / US - 0.5) is None  # this clock says: not yet


def test_a_firing_s_key_is_its_identity() -> None:
    assert idempotency_key("scheduled_message-1", 5) == "schedule:scheduled_message-1:5"
    assert idempotency_key("scheduled_message-1", 5) != idempotency_key("scheduled_message-1", 6)


def test_settings_come_from_the_environment() -> None:
    assert ScheduleSettings.from_env({}) == ScheduleSettings()
    got = ScheduleSettings.from_env({"KELPIE_SCHEDULE_POLL": "1.5", "KELPIE_SCHEDULE_RETRY": "9",
                                     "KELPIE_SCHEDULES": "off"})  # fmt: skip
    assert (got.poll, got.retry_after, got.enabled) == (1.5, 9.0, False)
    for bad in ({"KELPIE_SCHEDULE_POLL": "soon"}, {"KELPIE_SCHEDULE_RETRY": "0"},
                {"KELPIE_SCHEDULES": "maybe"}):  # fmt: skip
        with pytest.raises(ValueError):
            ScheduleSettings.from_env(bad)
