"""/v1/agents/{id}/export and /v1/agents/import: agents in Letta's agent file format (v2).

Import takes the file as Letta does, in the multipart field `file` with the
options as form fields (what `client.agents.import_file(file=...)` sends); for
curl, the file may also be the JSON body itself, with the options in the query:

    curl -X POST $URL/v1/agents/import -F file=@agent.af -F name=copy
    curl -X POST "$URL/v1/agents/import?name=copy" \\
         -H 'content-type: application/json' --data-binary @agent.af

Options acted on: `name` (or the deprecated `override_name`), `model` (or
`override_model_handle`), `embedding` (or `override_embedding_handle`, or the
`x-override-embedding-model` header), `override_existing_tools` (default true),
`append_copy_suffix`, `project_id` and `strip_messages`. Letta defaults the deprecated
`append_copy_suffix` to true; here a name changes only when the client asks.
Other fields (`secrets`, `env_vars_json`...) are accepted and have nothing to act on:
no secrets are imported. `embedding` applies to the file's folders too, as Letta's does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from quart import Blueprint, Response, request

from kelpie_trio.api.common import check_id, int_arg, service
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import (
    AgentFileSchema,
    ImportedAgentsResponse,
    ImportOptions,
    Loc,
)

agentfile = Blueprint("agentfile", __name__)

_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_OPTIONS = ("name", "override_name", "model", "override_model_handle", "embedding",
            "override_embedding_handle", "override_existing_tools", "append_copy_suffix",
            "project_id", "strip_messages", "secrets", "env_vars_json")  # fmt: skip


def _flag(fields: Mapping[str, str], name: str, default: bool, where: str) -> bool:
    raw = fields.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise Invalid.field([where, name], f"{name} must be true or false", "bool_parsing")
    return raw in _TRUE


def _text(fields: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` given with a value (the SDK's and the deprecated spelling)."""
    return next((fields[n] for n in names if fields.get(n)), None)


def _parse_file(raw: bytes, at: Loc) -> Any:
    try:
        value = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as error:
        raise Invalid.field(at, f"the agent file is not JSON: {error}", "json_invalid") from None
    if convert.json_depth(value) > convert.MAX_JSON_DEPTH:
        raise Invalid.field(
            at, f"the agent file nests deeper than {convert.MAX_JSON_DEPTH} levels", "json_invalid"
        )
    return value


async def _upload() -> tuple[Any, dict[str, str], Loc, str]:
    """The parsed file, the option fields, where the file was and where the options were."""
    query = request.args.to_dict()
    if request.mimetype not in _FORMS:
        return convert.parse_body(await request.get_data()), query, ["body"], "query"
    form = await request.form
    files = await request.files
    fields = {**query, **form.to_dict()}
    at: Loc = ["body", "file"]
    if "file" in files:
        raw = files["file"].read()
    elif "file" in form:  # curl -F 'file=<agent.af' sends the file as a text field
        raw = form["file"].encode()
    else:
        raise Invalid.field(
            at, "Field required: the agent file, in the form field `file`", "missing"
        )
    return _parse_file(raw, at), fields, at, "body"


@agentfile.get("/v1/agents/<agent_id>/export")
@documented(
    "Export an agent as a Letta agent file (v2): the agent, its blocks and its tools",
    response=AgentFileSchema,
    query=("use_legacy_format", "scrub_messages", "conversation_id", "max_steps"),
)
async def export_agent(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    scrub = _flag(request.args, "scrub_messages", False, "query")
    int_arg("max_steps", low=0)  # deprecated in Letta, and without effect there
    if _flag(request.args, "use_legacy_format", False, "query"):
        raise Invalid.field(
            ["query", "use_legacy_format"],
            "the legacy single-agent (v1) format is not supported; export the v2 format",
        )
    conversation_id = request.args.get("conversation_id") or None
    exported = await service().export_agent_file(
        agent_id, conversation_id=conversation_id, scrub_messages=scrub
    )
    # Indented, as Letta sends it: the SDK hands the text to the caller to save as a file.
    body = orjson.dumps(convert.api.unstructure(exported), option=orjson.OPT_INDENT_2)
    return Response(body, content_type="application/json")


@agentfile.post("/v1/agents/import")
@documented(
    "Import an agent file as new agents: the multipart field `file` (options as form "
    "fields), or the file as the JSON body (options in the query)",
    request=AgentFileSchema,
    response=ImportedAgentsResponse,
    query=_OPTIONS,
)
async def import_agent() -> Response:
    data, fields, at, where = await _upload()
    embedding = _text(fields, "embedding") or request.headers.get("x-override-embedding-model")
    options = ImportOptions(
        name=_text(fields, "name", "override_name"),
        model=_text(fields, "model", "override_model_handle"),
        embedding=embedding or _text(fields, "override_embedding_handle"),
        override_existing_tools=_flag(fields, "override_existing_tools", True, where),
        append_copy_suffix=_flag(fields, "append_copy_suffix", False, where),
        project_id=_text(fields, "project_id"),
        strip_messages=_flag(fields, "strip_messages", False, where),
    )
    agent_ids = await service().import_agent_file(data, options, at, where)
    body = convert.api.unstructure(ImportedAgentsResponse(agent_ids))
    return Response(orjson.dumps(body), content_type="application/json")
