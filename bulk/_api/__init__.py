"""The HTTP API (Starlette): Pixcap's bulk-screenshot shapes on top of bulk's pipeline.

Every endpoint goes through ``_Endpoint``, which does the checks in the documented
order (auth, rate limit, then the handler's validation, URL policy, credits), maps
every ``BulkError`` to the JSON error envelope with its class's ``api_status``, adds
the ``X-RateLimit-*`` headers, and gives back the rate-limit slot when the request was
refused before any work (``_doing_work`` marks where work begins: a discovery or a
capture keeps its slot even when it fails). No stack trace ever reaches a client; API
keys never reach a log line.

The package: ``_core`` (state, parsing, ``_Endpoint``), ``_bulk`` (bulk jobs),
``_shots`` (single screenshots), ``_accounts`` (accounts, keys, health),
``_schedules`` (schedules, their runs and change reports), ``_connectors``
(connectors and their tunnel's WebSocket); the routes
and the app are here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from .._exceptions import BulkError, EndpointNotFound, MethodNotAllowed
from .._ratelimit import IN_FLIGHT_LIMITS, RATE_LIMITS, Limiter, RateLimit
from ._accounts import (
    account_info,
    create_api_key,
    deactivate_api_key,
    health,
    openapi,
    register,
    register_account,
)
from ._bulk import BulkOrder, bulk_replay, create_bulk, download, job_status, start_bulk_job
from ._connectors import (
    create_connector,
    delete_connector,
    list_connectors,
    regenerate_token,
    tunnel,
)
from ._core import (
    ApiConfig,
    Authenticate,
    Handler,
    Replay,
    ServiceState,
    _authenticate,
    _authenticate_with_job,
    _Endpoint,
    _error,
    log,
    status_of,
)
from ._schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_runs,
    list_schedules,
    patch_schedule,
    run_changes,
)
from ._shots import screenshot_get, screenshot_post

__all__ = [
    "IN_FLIGHT_LIMITS",
    "RATE_LIMITS",
    "ApiConfig",
    "BulkOrder",
    "Pages",
    "RateLimit",
    "ServiceState",
    "create_app",
    "register_account",
    "start_bulk_job",
    "status_of",
]

def _by_method(
    **endpoints: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """One handler for a path whose methods have different endpoints (HEAD as GET)."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


class Pages(Protocol):
    """Another front door served beside the API (the dashboard): its routes, outside
    ``/api/v1``, and its own page for a path nothing matches."""

    @property
    def routes(self) -> Sequence[BaseRoute]: ...

    async def not_found(self, request: Request) -> Response: ...


def create_app(
    state: ServiceState,
    *,
    pages: Callable[[ServiceState, Limiter], Pages] | None = None,
) -> Starlette:
    """The Starlette application for ``state`` (mounted at the root; paths under /api/v1).

    Args:
        state: What the endpoints work with.
        pages: Makes another front door over the same state and rate limiter
            (``bulk serve`` passes the dashboard's); its routes are served beside
            the API's. The API never reads its cookies.
    """
    limiter = Limiter(state.config.rate_limits, state.config.clock)

    def ep(
        handler: Handler,
        bucket: str | None,
        *,
        auth: bool = True,
        replay: Replay | None = None,
        authenticate: Authenticate = _authenticate,
    ) -> Callable[[Request], Awaitable[Response]]:
        # A bound method (not the instance): Starlette then treats it as a request
        # handler rather than as a raw ASGI app.
        return _Endpoint(
            state,
            limiter,
            handler,
            bucket=bucket,
            auth=auth,
            replay=replay,
            authenticate=authenticate,
        ).__call__

    async def connector_tunnel(websocket: WebSocket) -> None:
        await tunnel(websocket, state)

    base = "/api/v1"
    routes: list[BaseRoute] = [
        Route(
            f"{base}/bulk-screenshot",
            ep(create_bulk, "bulk", replay=bulk_replay),
            methods=["POST"],
        ),
        Route(
            f"{base}/bulk-screenshot/{{job_id}}/status",
            ep(job_status, None, authenticate=_authenticate_with_job),
            methods=["GET"],
        ),
        Route(
            f"{base}/bulk-screenshot/{{job_id}}/download",
            ep(download, None, authenticate=_authenticate_with_job),
            methods=["GET"],
        ),
        # One route per path, so that a 405 lists every method the path has (Allow).
        Route(
            f"{base}/screenshot",
            _by_method(
                GET=ep(screenshot_get, "screenshot"), POST=ep(screenshot_post, "screenshot")
            ),
            methods=["GET", "POST"],
        ),
        Route(f"{base}/register", ep(register, "register", auth=False), methods=["POST"]),
        Route(f"{base}/account", ep(account_info, None), methods=["GET"]),
        Route(f"{base}/api-keys", ep(create_api_key, None), methods=["POST"]),
        Route(f"{base}/api-keys/{{key}}", ep(deactivate_api_key, None), methods=["DELETE"]),
        Route(
            f"{base}/schedules",
            _by_method(GET=ep(list_schedules, None), POST=ep(create_schedule, None)),
            methods=["GET", "POST"],
        ),
        Route(
            f"{base}/schedules/{{schedule_id}}",
            _by_method(
                GET=ep(get_schedule, None),
                PATCH=ep(patch_schedule, None),
                DELETE=ep(delete_schedule, None),
            ),
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route(f"{base}/schedules/{{schedule_id}}/runs", ep(list_runs, None), methods=["GET"]),
        Route(
            f"{base}/schedules/{{schedule_id}}/runs/{{run}}/changes",
            ep(run_changes, None),
            methods=["GET"],
        ),
        Route(
            f"{base}/connectors",
            _by_method(GET=ep(list_connectors, None), POST=ep(create_connector, None)),
            methods=["GET", "POST"],
        ),
        Route(
            f"{base}/connectors/{{connector_id}}",
            ep(delete_connector, None),
            methods=["DELETE"],
        ),
        Route(
            f"{base}/connectors/{{connector_id}}/regenerate-token",
            ep(regenerate_token, None),
            methods=["POST"],
        ),
        WebSocketRoute(f"{base}/connectors/tunnel", connector_tunnel),
        Route(f"{base}/health", ep(health, None, auth=False), methods=["GET"]),
        Route(f"{base}/openapi.json", ep(openapi, None, auth=False), methods=["GET"]),
    ]

    front = pages(state, limiter) if pages is not None else None
    if front is not None:
        routes += front.routes

    async def not_found(request: Request, exc: Exception) -> Response:
        path = request.url.path
        outside_api = not (path == base or path.startswith(base + "/"))
        if front is not None and outside_api and getattr(exc, "status_code", 404) == 404:
            return await front.not_found(request)
        if getattr(exc, "status_code", 404) == 405:
            response = _error(MethodNotAllowed("method not allowed"))
            # Starlette's 405 names the methods the path accepts.
            allow = (getattr(exc, "headers", None) or {}).get("Allow")
            if allow:
                response.headers["Allow"] = allow
            return response
        return _error(EndpointNotFound("no such endpoint"))

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return _error(BulkError("internal error"))

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, Exception: internal},
    )
    app.add_middleware(_AccessLog)
    return app


_SECRET_QUERY: Final = re.compile(r"(?i)(api_key=)[^&]*")


class _AccessLog:
    """One log line per request; the ``api_key`` query value is redacted (keys never
    reach a log line; headers are not logged at all)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            # Not logging (the default, without -v): no wrapper per request.
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            query = _SECRET_QUERY.sub(r"\1***", query)
            log.info(
                "%s %s%s %s %.0fms",
                scope["method"],
                scope["path"],
                f"?{query}" if query else "",
                status[0],
                (time.monotonic() - started) * 1000,
            )
