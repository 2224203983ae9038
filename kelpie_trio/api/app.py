"""The Quart-Trio application. Thin: parse the request, call the service, render JSON.

So far: health, metrics, and the internal route by which one node hands a
message to the node that owns the agent. The Letta resource routes are their
own issue.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from kelpie_trio import __version__
from kelpie_trio.api.agentfile import agentfile
from kelpie_trio.api.agents import agents
from kelpie_trio.api.archives import archives
from kelpie_trio.api.blocks import blocks
from kelpie_trio.api.cloud import cloud
from kelpie_trio.api.console import console
from kelpie_trio.api.context import context
from kelpie_trio.api.conversations import conversations
from kelpie_trio.api.edge import BodyGuard
from kelpie_trio.api.folders import folders
from kelpie_trio.api.groups import groups
from kelpie_trio.api.identities import identities
from kelpie_trio.api.mcp_servers import mcp_servers
from kelpie_trio.api.messages import messages
from kelpie_trio.api.messages_all import messages_all
from kelpie_trio.api.middleware import bearer_token
from kelpie_trio.api.middleware import install as install_middleware
from kelpie_trio.api.models import models
from kelpie_trio.api.passages import passages
from kelpie_trio.api.prompt import prompt
from kelpie_trio.api.routing import best_methods, misfit, misfits
from kelpie_trio.api.runs import runs
from kelpie_trio.api.schedules import schedules
from kelpie_trio.api.spec import Health, build_openapi, documented
from kelpie_trio.api.steps import steps
from kelpie_trio.api.tools import tools
from kelpie_trio.env import Env, RealEnv
from kelpie_trio.errors import ServiceError, refused_by_store
from kelpie_trio.llm.catalog import ModelCatalog
from kelpie_trio.models import convert
from kelpie_trio.nursery.dispatcher import Dispatcher
from kelpie_trio.nursery.errors import ActorFailed, MailboxFull, RuntimeFailure
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.nursery.transport import reply_bytes, serve_forwarded
from kelpie_trio.service import AgentService
from kelpie_trio.storage import Store, StoreError

log = logging.getLogger("kelpie_trio.api")

MAX_BODY_BYTES = 16 * 1024 * 1024  # a request body above this gets 413

# The Letta API version this server implements: Letta's clients compare the health route's
# `version` with a minimum they support; kelpie-trio's own version has a field of its own.
LETTA_API_VERSION = "0.16.8"

__all__ = ["create_app"]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def create_app(
    store: Store,
    dispatcher: Dispatcher | None = None,
    metrics: RuntimeMetrics | None = None,
    *,
    env: Env | None = None,
    catalog: ModelCatalog | None = None,
    cluster_token: str | None = None,
    password: str | None = None,
    service: AgentService | None = None,
    sandbox_status: Any = None,  # tools/isolation.py's SandboxStatus, shown in health
) -> QuartTrio:
    app = QuartTrio("kelpie_trio")
    app.config["KELPIE_STORE"] = store
    service = service or AgentService(store, env or RealEnv(), catalog)
    service.dispatcher = dispatcher
    app.config["KELPIE_SERVICE"] = service
    app.config["KELPIE_METRICS"] = metrics
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    install_middleware(app, password=password)
    install_method_checks(app)
    app.asgi_app = BodyGuard(app.asgi_app)  # type: ignore[method-assign]
    # Without a cluster token of its own, the internal route is guarded by the password.
    cluster_token = cluster_token or password
    app.register_blueprint(agentfile)
    app.register_blueprint(conversations)
    app.register_blueprint(blocks)
    app.register_blueprint(agents)
    app.register_blueprint(groups)
    app.register_blueprint(models)
    app.register_blueprint(passages)
    app.register_blueprint(archives)
    app.register_blueprint(folders)
    app.register_blueprint(tools)
    app.register_blueprint(messages)
    app.register_blueprint(runs)
    app.register_blueprint(mcp_servers)
    app.register_blueprint(cloud)
    app.register_blueprint(identities)
    app.register_blueprint(messages_all)
    app.register_blueprint(context)
    app.register_blueprint(steps)
    app.register_blueprint(prompt)
    app.register_blueprint(console)
    app.register_blueprint(schedules)

    @app.before_serving
    async def background() -> None:
        # Turns that outlive their request (streams, async runs) run in the app's nursery.
        if service.background is None:
            service.background = app.nursery

    # Every error in Letta's shape: {"detail": ...}, never an HTML page.
    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError) -> Response:
        response = _json({"detail": error.detail()}, error.status)
        if error.status in (409, 507):
            # The SDK retries 409s and 5xx by default; these do not go away by retrying.
            response.headers["x-should-retry"] = "false"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        if isinstance(error, MethodNotAllowed):
            return method_not_allowed(app)
        return _json({"detail": error.name}, error.code or 500)

    @app.errorhandler(RuntimeFailure)
    async def runtime_error(error: RuntimeFailure) -> Response:
        if isinstance(error, MailboxFull):
            response = _json({"detail": str(error)}, 429)
            response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
            return response
        if isinstance(error, ActorFailed):
            log.warning("agent failed: %s", error)
            return _json({"detail": str(error)}, 500)
        response = _json({"detail": str(error)}, 503)  # unavailable now: retry
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> Response:
        refused = refused_by_store(error)
        if refused is not None:  # the request's size, or a full disk: a retry cannot help
            log.warning("store refused a request: %r", error)
            return await service_error(refused)
        # The store gave up after its retries: nothing was written; the client may retry.
        log.warning("store unavailable: %r", error)
        response = _json({"detail": "storage is unavailable; retry shortly"}, 503)
        response.headers["Retry-After"] = "1"
        return response

    # Letta's SDK calls /v1/health/ with the slash; serve both forms without a redirect.
    @app.get("/v1/health/")
    @app.get("/v1/health")
    @documented("Health: the Letta API version served, and kelpie-trio's own", response=Health)
    async def health() -> dict[str, Any]:
        answer: dict[str, Any] = {
            "status": "ok",
            "version": LETTA_API_VERSION,
            "kelpie_trio_version": __version__,
        }
        if sandbox_status is not None:  # how this host runs custom tools
            answer["details"] = {"tool_sandbox": sandbox_status.details()}
        return answer

    @app.get("/openapi.json")
    @documented("This API, described from its routes and models")
    async def openapi() -> Response:
        """This API, described from its routes and models."""
        if "openapi" not in spec_cache:
            spec_cache["openapi"] = orjson.dumps(build_openapi(app))
        return Response(spec_cache["openapi"], content_type="application/json")

    spec_cache: dict[str, bytes] = {}

    @app.get("/metrics")
    @documented("The node's metrics, in Prometheus' text format", media_type="text/plain")
    async def prometheus_metrics() -> Response:
        body = metrics.render() if metrics is not None else b""
        return Response(body, content_type=RuntimeMetrics.content_type)

    @app.post("/internal/v1/agents/<agent_id>/invoke")
    async def invoke_forwarded(agent_id: str) -> Response:
        """A message another node forwarded here, because this node holds the agent's lease."""
        if cluster_token is not None:
            given = bearer_token(request.headers.get("authorization", ""))
            if not hmac.compare_digest(given.encode(), cluster_token.encode()):
                return _json({"detail": "Unauthorized"}, 401)
        if dispatcher is None:
            return _json({"detail": "this node runs no agents"}, 503)
        raw = await request.get_data()
        body = convert.parse_body(raw) if raw else None
        if not isinstance(body, dict) or "message" not in body:
            return _json({"detail": "expected a JSON object with a 'message'"}, 422)
        message = body["message"]
        wire = await serve_forwarded(dispatcher, {"agent_id": agent_id, "message": message})
        return Response(reply_bytes(wire), content_type="application/json")

    return app


def method_not_allowed(app: QuartTrio) -> Response:
    """No route serves the request's method here: 405 with `Allow` when routes serve the
    path with other methods, 404 when they would only through a malformed id."""
    fits = misfits(app.url_map, request.path)
    if not fits or min(fits.values()) > 0:
        return _json({"detail": "Not Found"}, 404)
    return _method_not_allowed(best_methods(fits))


def _method_not_allowed(allowed: set[str]) -> Response:
    response = _json({"detail": "Method Not Allowed"}, 405)
    response.headers["Allow"] = ", ".join(sorted(allowed | {"OPTIONS"}))
    return response


def install_method_checks(app: QuartTrio) -> None:
    """OPTIONS answers the methods that serve the path (see api/routing.py); a request that
    reached its route only through a malformed id, while another route fits the path
    better (GET /v1/tools/search), is a 405 rather than that route's 422."""

    @app.before_request
    async def check_method() -> Response | None:
        if request.url_rule is None:
            return None
        if request.method != "OPTIONS" and misfit(request.view_args or {}) == 0:
            return None  # every id well-formed: no route fits better (the common case)
        fits = misfits(app.url_map, request.path)
        if request.method == "OPTIONS":
            allowed = best_methods(fits) | {"OPTIONS"}
            return Response(b"", status=200, headers={"Allow": ", ".join(sorted(allowed))})
        if request.method not in fits or fits[request.method] == min(fits.values()):
            return None
        return _method_not_allowed(best_methods(fits))
