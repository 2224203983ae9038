"""The edge's decisions without a socket: what an answer says about its connection, and
what a request's head says about its body."""

from __future__ import annotations

from kelpie_trio.api.edge import BodyProgress, DrainPolicy, answer_headers

JSON = [(b"content-type", b"application/json")]


def test_an_answer_after_the_whole_body_keeps_the_connection() -> None:
    assert answer_headers(JSON, 422, body_complete=True) == JSON


def test_an_answer_before_the_whole_body_closes_the_connection() -> None:
    assert answer_headers(JSON, 422, body_complete=False) == [*JSON, (b"connection", b"close")]


def test_a_413_always_closes_and_says_so_once() -> None:
    headers = [*JSON, (b"Connection", b"keep-alive")]
    assert answer_headers(headers, 413, body_complete=True) == [*JSON, (b"connection", b"close")]


def test_a_request_without_a_body_has_nothing_to_drain() -> None:
    assert BodyProgress.from_headers([]).complete.is_set()
    assert BodyProgress.from_headers([(b"content-length", b"0")]).complete.is_set()


def test_only_a_known_remainder_within_the_policy_is_drained() -> None:
    policy = DrainPolicy(max_bytes=100)
    body = BodyProgress.from_headers([(b"content-length", b"150")])
    assert not body.complete.is_set() and not body.may_drain(policy)
    body.received = 60
    assert body.may_drain(policy)  # 90 bytes still to come
    chunked = BodyProgress.from_headers([(b"transfer-encoding", b"chunked")])
    assert not chunked.may_drain(policy)  # no length: it could go on for ever
    garbled = BodyProgress.from_headers([(b"content-length", b"many")])
    assert not garbled.may_drain(policy)
