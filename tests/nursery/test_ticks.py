"""The node's timer grid (env.Ticks): a poll rounded to it never ends early, the heartbeat's
next beat is always later, and both give the same float for the same tick (trio expires
equal deadlines in one pass: one wake-up)."""

from __future__ import annotations

import math
import random

import trio
import trio.testing

from kelpie_trio.env import SimEnv, Ticks


def test_a_poll_ends_on_the_first_tick_at_or_after_its_deadline_never_before() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        ticks = Ticks(rng.choice([1.0, 10.0 / 3, 0.7, 5.0]), phase=rng.uniform(0.0, 5.0))
        deadline = rng.uniform(-1e3, 1e6)
        tick = ticks.at_or_after(deadline)
        assert deadline <= tick < deadline + ticks.period
        assert ticks.at_or_after(tick) == tick  # a tick is its own


def test_the_next_beat_is_after_the_moment_and_a_tick_a_poll_lands_on() -> None:
    rng = random.Random(8)
    for _ in range(20_000):
        ticks = Ticks(10.0 / 3, phase=rng.uniform(0.0, 10.0 / 3))
        moment = rng.uniform(0.0, 1e6)
        beat = ticks.after(moment)
        assert moment < beat <= moment + ticks.period
        # A poll due anywhere in the beat's period ends at that very float.
        assert ticks.at_or_after(beat - rng.uniform(0.0, ticks.period * 0.999)) == beat
        # Woken on the beat, the next one is a whole period on.
        assert math.isclose(ticks.after(beat) - beat, ticks.period)


async def test_without_ticks_a_poll_ends_at_its_deadline_and_inf_is_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    env = SimEnv(random.Random(1))
    await trio.sleep(1.3)
    assert env.poll_time(10.0) == trio.current_time() + 10.0
    env.ticks = Ticks(3.0, phase=0.5)
    assert env.poll_time(10.0) == 12.5  # 11.3 rounded up to 0.5 + 4 * 3
    assert env.poll_time(math.inf) == math.inf  # "no poll" stays so
