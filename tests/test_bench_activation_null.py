"""`cold-activation`'s null figure: the activation statistic taken over two warm messages,
so a reader can tell the activation's own cost from the spread of the waits under load."""

from __future__ import annotations

from bench.load import Sample
from bench.scenarios import _activation_ms, _warm_pairs_ms


def _sent(start: float, latency_ms: float, agent: str) -> Sample:
    return Sample(start, start + latency_ms / 1000, 200, 1, agent=agent)


def test_warm_pairs_take_each_message_less_the_next_in_the_order_sent() -> None:
    # Sent out of order on purpose: the pairs follow the send times, (a, b) and (c, d).
    warm = [
        _sent(3.0, 12.0, "d"),
        _sent(0.0, 30.0, "a"),
        _sent(2.0, 40.0, "c"),
        _sent(1.0, 10.0, "b"),
        Sample(4.0, 4.5, 500, 0, agent="e"),  # failed: left out, as by _activation_ms
        _sent(5.0, 1.0, "f"),  # so the last one sent has no pair
    ]
    pairs = _warm_pairs_ms(warm)
    assert pairs["max"] == 28.0  # c less d; a less b is 20.0
    assert pairs["mean"] == 24.0
    assert _warm_pairs_ms(warm[:1])["p99"] is None  # no pair


def test_a_negative_difference_counts_as_zero_as_an_activations_does() -> None:
    cold = [_sent(0.0, 5.0, "a")]
    warm = [_sent(1.0, 9.0, "a")]
    assert _activation_ms(cold, warm)["max"] == 0.0
    assert _warm_pairs_ms([_sent(0.0, 5.0, "a"), _sent(1.0, 9.0, "b")])["max"] == 0.0
