"""Around every request: access control and one structured log line.

With a server password set (`--password` / KELPIE_SERVER_PASSWORD), every
route but health and the web console's files (which hold no data) needs
`Authorization: Bearer <password>`, as letta-client sends its token; a wrong or
missing one gets a bare 401 that reveals nothing.
Each request is logged once, as JSON: method, path, status, duration, request
id (the client's X-Request-Id, or a new one, echoed back in the response).
"""

from __future__ import annotations

import hmac
import logging

import orjson
import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from kelpie_trio.api.console import is_console_path

__all__ = ["bearer_token", "install"]

log = logging.getLogger("kelpie_trio.requests")

_OPEN_PATHS = ("/v1/health", "/v1/health/")
_INTERNAL_PREFIX = "/internal/"  # guarded by the cluster token instead


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header ("" for any other); the scheme
    is matched case-insensitively, as RFC 7235 says."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def install(app: QuartTrio, *, password: str | None) -> None:
    expected = password.encode() if password else None

    @app.before_request
    async def start() -> Response | None:
        g.started = trio.current_time()
        g.request_id = request.headers.get("x-request-id") or app.config[
            "KELPIE_SERVICE"
        ].env.new_id("req")
        if expected is None or request.path in _OPEN_PATHS:
            return None
        if is_console_path(request.path):
            return None  # the console's files hold no data; it sends the token for /v1
        if request.path.startswith(_INTERNAL_PREFIX):
            return None
        given = bearer_token(request.headers.get("authorization", "")).encode()
        if not hmac.compare_digest(given, expected):
            return Response(
                orjson.dumps({"detail": "Unauthorized"}),
                status=401,
                content_type="application/json",
                headers={"www-authenticate": "Bearer"},
            )
        return None

    @app.after_request
    async def finish(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers["x-request-id"] = request_id
        started = getattr(g, "started", None)
        duration_ms = (trio.current_time() - started) * 1000 if started is not None else None
        log.info(
            "%s",
            orjson.dumps(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round(duration_ms, 3) if duration_ms is not None else None,
                    "request_id": request_id,
                }
            ).decode(),
        )
        return response
