"""GET /v1/agents/count on a real server through httpx: Letta's count_agents with its
filters (letta-client 1.12.1 has no method for it; the reference OpenAPI has the route).
A count agrees with the list given the same filters."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url) as client:
        yield client


def _agent(http: httpx.Client, **fields: object) -> str:
    answer = http.post("/v1/agents/", json=fields)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _count(http: httpx.Client, **params: object) -> int:
    answer = http.get("/v1/agents/count", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _listed(http: httpx.Client, **params: object) -> int:
    return len(http.get("/v1/agents/", params={"limit": 1000, **params}).json())


def test_the_count_takes_lettas_filters_and_agrees_with_the_list(http: httpx.Client) -> None:
    before = _count(http)
    _agent(http, name="count-ada", tags=["count-red", "count-big"], project_id="p1")
    _agent(http, name="count-bob", tags=["count-red"], template_id="t1")
    _agent(http, name="Count-Cy", tags=["count-blue"], base_template_id="b1")
    _agent(http, name="count-hidden", tags=["count-red"], hidden=True)
    identity = http.post(
        "/v1/identities/",
        json={"identifier_key": "count-key", "name": "K", "identity_type": "user",
              "agent_ids": [_agent(http, name="count-held")]},
    ).json()  # fmt: skip
    assert _count(http) == before + 4 == _listed(http)  # the hidden one is left out
    assert _count(http, show_hidden_agents="true") == before + 5
    cases = [
        {"name": "count-bob"},
        {"tags": ["count-red"]},
        {"tags": ["count-red", "count-big"], "match_all_tags": "true"},
        {"tags": ["count-red", "count-blue"]},
        {"query_text": "COUNT-"},
        {"project_id": "p1"},
        {"template_id": "t1"},
        {"base_template_id": "b1"},
        {"identity_id": identity["id"]},
        {"identifier_keys": ["count-key"]},
        {"last_stop_reason": "end_turn"},  # no agent records one (AgentState shows null)
        {"created_by_id": "user-1"},
    ]
    counts = [_count(http, **case) for case in cases]
    assert counts == [1, 2, 1, 3, 4, 1, 1, 1, 1, 1, 0, 0]
    assert counts == [_listed(http, **case) for case in cases]


def test_a_bad_filter_is_a_422_naming_it(http: httpx.Client) -> None:
    for params, field in (
        ({"last_stop_reason": "tired"}, "last_stop_reason"),
        ({"match_all_tags": "maybe"}, "match_all_tags"),
        ({"identity_id": "nope"}, "identity_id"),
    ):
        answer = http.get("/v1/agents/count", params=params)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["query", field]
