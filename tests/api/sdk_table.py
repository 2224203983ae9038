"""Every method of the installed letta-client, and whether this server serves it.

The SDK's resource classes are read (an AST walk, as /work/shared/letta/routes.md was made):
each public method of a sync resource -> the HTTP verb and path it calls. Each is then
matched against the app's routes: served, answered as Letta Cloud only (api/cloud.py), or
not served yet with the issue that adds it (NOT_YET below).

`python -m tests.api.sdk_table` prints the README's table; `--write` puts it in README.md
between the sdk-table markers. tests/api/test_sdk_table.py checks the README holds exactly
what this computes, so the table cannot go stale.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import attrs
import letta_client
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- sdk-table -->", "<!-- /sdk-table -->"

_VERBS = {"get": "GET", "_get": "GET", "_get_api_list": "GET", "_post": "POST", "_patch": "PATCH",
          "_put": "PUT", "_delete": "DELETE"}  # fmt: skip

# Routes letta-client calls that a later issue will serve: (path prefix, issue).
NOT_YET: tuple[tuple[str, int], ...] = ()


@attrs.frozen(order=True)
class SdkMethod:
    resource: str  # "agents.identities"
    method: str  # "attach"
    verb: str
    path: str  # "/v1/agents/{agent_id}/identities/attach/{identity_id}"

    @property
    def call(self) -> str:
        return f"client.{self.resource}.{self.method}" if self.resource else f"client.{self.method}"


def _path_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "path_template":
        return _path_of(node.args[0])
    if isinstance(node, ast.JoinedStr):  # f"/v1/x/{x_id}"
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
            for part in node.values
        )
    return None


def _calls(fn: ast.FunctionDef) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
            and node.func.attr in _VERBS
            and node.args
        ):
            path = _path_of(node.args[0])
            if path is not None:
                found.append((_VERBS[node.func.attr], path))
    return found


def _resource_name(file: Path, root: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if len(parts) >= 2 and parts[-1] == parts[-2]:  # agents/agents.py is client.agents
        parts.pop()
    return ".".join(parts)


def _sync_classes(tree: ast.Module, suffix: str) -> list[ast.ClassDef]:
    # The client itself is `Letta`, whose health() calls self.get(); resources end in
    # `Resource` (their raw and streaming wrappers do not).
    return [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and (node.name == suffix or node.name.endswith(suffix))
        and not node.name.startswith("Async")
    ]


def sdk_methods() -> list[SdkMethod]:
    """Every public method of letta-client's sync resources and the client's own."""
    package = Path(letta_client.__file__).parent
    root = package / "resources"
    found: set[SdkMethod] = set()
    sources = [(f, _resource_name(f, root), "Resource") for f in sorted(root.rglob("*.py"))]
    sources.append((package / "_client.py", "", "Letta"))
    for file, resource, suffix in sources:
        tree = ast.parse(file.read_text())
        for cls in _sync_classes(tree, suffix):
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
                    continue
                for verb, path in _calls(fn):
                    found.add(SdkMethod(resource, fn.name, verb, path))
    return sorted(found)


_PARAM = re.compile(r"\{([a-z_]+)\}")


def _example(path: str) -> str:
    """The path with each parameter filled by an example of its kind."""
    from kelpie_trio.api.spec import ID_PREFIXES

    def fill(match: re.Match[str]) -> str:
        prefix = ID_PREFIXES.get(match.group(1))
        return f"{prefix}-00000000-0000-4000-8000-000000000000" if prefix else "example"

    return _PARAM.sub(fill, path)


def served_by(url_map: Map, method: SdkMethod) -> str | None:
    """The endpoint that serves the SDK method's verb and path, or None."""
    adapter = url_map.bind("localhost")
    try:
        endpoint, _ = adapter.match(_example(method.path), method=method.verb)
    except HTTPException:
        return None
    return endpoint


def not_yet_issue(method: SdkMethod) -> int | None:
    return next((issue for prefix, issue in NOT_YET if method.path.startswith(prefix)), None)


def status_of(url_map: Map, method: SdkMethod) -> str:
    endpoint = served_by(url_map, method)
    if endpoint is not None and endpoint.startswith("cloud."):
        return "Letta Cloud only (404 saying so)"
    if endpoint is not None:
        return "served"
    issue = not_yet_issue(method)
    return f"not served yet (issue {issue})" if issue else "UNACCOUNTED"


def table(url_map: Map) -> str:
    rows = ["| SDK method | HTTP | status |", "|---|---|---|"]
    for method in sdk_methods():
        rows.append(
            f"| `{method.call}` | `{method.verb} {method.path}` | {status_of(url_map, method)} |"
        )
    return "\n".join(rows) + "\n"


def _app_url_map() -> Map:
    from kelpie_trio.api.app import create_app
    from kelpie_trio.storage import MemoryStore

    return create_app(MemoryStore()).url_map


def readme_section() -> str:
    text = README.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_readme(rendered: str) -> None:
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    README.write_text(f"{head}{BEGIN}\n{rendered}{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    rendered = table(_app_url_map())
    if "--write" in sys.argv:
        write_readme(rendered)
    else:
        print(rendered, end="")
