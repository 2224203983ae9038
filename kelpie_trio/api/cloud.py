"""Routes of Letta Cloud that a self-hosted server does not have.

letta-client 1.12.1 offers them (templates, environments, client-side access tokens), and
the reference server answers them with a bare 404 that leaves a user guessing. Here they
get a 404 whose `detail` says why, so the user knows the call is fine and the server is
the wrong kind. Listed in the README's SDK table (tests/api/sdk_table.py keeps it true).
"""

from __future__ import annotations

from quart import Blueprint, Response

from kelpie_trio.api.common import json_response
from kelpie_trio.api.spec import documented

__all__ = ["CLOUD_ONLY_PATHS", "cloud", "cloud_only_detail"]

# (method, path) as the SDK calls them; a path's `{name}` is any one segment.
CLOUD_ONLY_PATHS: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/templates"),
    ("PATCH", "/v1/templates/{template_name}"),
    ("DELETE", "/v1/templates/{template_name}"),
    ("POST", "/v1/templates/{template_name}/rollback"),
    ("POST", "/v1/templates/{template_name}/save"),
    ("POST", "/v1/templates/{template_version}/agents"),
    ("GET", "/v1/environments"),
    ("GET", "/v1/environments/{device_id}"),
    ("POST", "/v1/environments/{connection_id}/messages"),
    ("GET", "/v1/client-side-access-tokens"),
    ("POST", "/v1/client-side-access-tokens"),
    ("DELETE", "/v1/client-side-access-tokens/{token}"),
    # Letta's own server says of it: "This is a cloud-only feature" (it needs Cloud's
    # message index); a self-hosted Letta fails it.
    ("POST", "/v1/messages/search"),
)

cloud = Blueprint("cloud", __name__)


def cloud_only_detail(method: str, path: str) -> str:
    return (
        f"{method} {path} belongs to Letta Cloud and is not part of a self-hosted "
        "Letta server (kelpie-trio serves the self-hosted API only)"
    )


def _register(method: str, path: str) -> None:
    rule = path.replace("{", "<").replace("}", ">")

    @documented(f"Letta Cloud only: always a 404 saying so ({method} {path})")
    async def answer(**_: str) -> Response:
        return json_response({"detail": cloud_only_detail(method, path)}, 404)

    name = f"{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"
    answer.__name__ = name
    cloud.add_url_rule(rule, name, answer, methods=[method])
    if not path.endswith("}"):  # collections are called with and without the slash
        cloud.add_url_rule(rule + "/", name, answer, methods=[method])


for _method, _path in CLOUD_ONLY_PATHS:
    _register(_method, _path)
