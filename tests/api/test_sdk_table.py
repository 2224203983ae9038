"""Every letta-client method is served, answered as Letta Cloud only, or listed as not served
yet with its issue; the README's table says which, and the cloud-only answer is a 404 that
explains itself."""

from __future__ import annotations

import httpx
import letta_client
import pytest
from letta_client import Letta

from kelpie_trio.api.cloud import CLOUD_ONLY_PATHS
from tests.api import sdk_table


@pytest.fixture(scope="module")
def url_map():  # type: ignore[no-untyped-def]
    return sdk_table._app_url_map()


def test_the_walk_finds_every_method_of_the_sdk() -> None:
    methods = sdk_table.sdk_methods()
    calls = {m.call for m in methods}
    # 128 resource methods and the client's own health (as routes.md counts them).
    assert len(methods) == 129
    assert {"client.health", "client.agents.identities.attach", "client.steps.trace.retrieve",
            "client.templates.agents.create", "client.runs.steps.list"} <= calls  # fmt: skip


def test_every_sdk_method_is_accounted_for(url_map) -> None:  # type: ignore[no-untyped-def]
    unaccounted = [
        m.call for m in sdk_table.sdk_methods() if sdk_table.status_of(url_map, m) == "UNACCOUNTED"
    ]
    assert unaccounted == []


def test_a_method_listed_as_not_yet_is_not_served(url_map) -> None:  # type: ignore[no-untyped-def]
    # An entry of NOT_YET that a route now serves would hide nothing, but says something
    # false in the issue's list: drop it when the route comes.
    for method in sdk_table.sdk_methods():
        if sdk_table.served_by(url_map, method) is not None:
            continue
        assert sdk_table.not_yet_issue(method) is not None, method.call


def test_every_cloud_only_method_is_a_cloud_only_route(url_map) -> None:  # type: ignore[no-untyped-def]
    cloud = {(verb, path) for verb, path in CLOUD_ONLY_PATHS}
    for method in sdk_table.sdk_methods():
        endpoint = sdk_table.served_by(url_map, method)
        is_cloud = endpoint is not None and endpoint.startswith("cloud.")
        assert is_cloud == ((method.verb, method.path) in cloud), method.call


def test_the_readme_table_is_what_the_sdk_and_the_routes_say(url_map) -> None:  # type: ignore[no-untyped-def]
    assert sdk_table.readme_section() == sdk_table.table(url_map), (
        "README's SDK table is stale: run `python -m tests.api.sdk_table --write`"
    )


def test_the_sdk_gets_a_404_that_names_letta_cloud(letta: Letta) -> None:
    for call in (
        lambda: letta.templates.delete("my-template"),
        lambda: letta.environments.list(),
        lambda: letta.access_tokens.list(),
    ):
        with pytest.raises(letta_client.NotFoundError) as raised:
            call()
        detail = raised.value.body["detail"]  # type: ignore[index]
        assert "Letta Cloud" in detail and "not part of a self-hosted" in detail


def test_every_cloud_only_route_answers_404_with_its_reason(server_url: str) -> None:
    with httpx.Client(base_url=server_url) as http:
        for verb, path in CLOUD_ONLY_PATHS:
            concrete = path.replace("{", "").replace("}", "")  # template_name -> a segment
            answer = http.request(verb, concrete, json={} if verb != "GET" else None)
            assert answer.status_code == 404, (verb, path)
            assert "belongs to Letta Cloud" in answer.json()["detail"], (verb, path)
