"""The dashboard: HTML pages served by ``bulk serve`` at ``/``, another front door
over the same library calls as the JSON API (never a second implementation of jobs
or credits).

    _session   the signed session cookie (HttpOnly, SameSite=Strict) and CSRF tokens
    _app       Dashboard: templates, the visitor, the wrapper every page goes through
    _forms     reading forms; the new-archive form, generated from OPTION_SPECS
    _views     the pages and form actions, and their routes
    _account   the account page's sections (schedules, connectors: one more each)
    templates/ Jinja2, autoescaped; static/ the stylesheet and the one small script

Pages are rendered on the server and read fine with JavaScript off; the script only
makes a running job's page live (it polls the page's live part and swaps it in),
counts the download's expiry down and updates the credit estimate as it is typed.
The session cookie authenticates the dashboard only: the JSON API under ``/api/v1``
reads API keys from headers and the query string, never cookies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .._api import ServiceState
from .._ratelimit import Limiter
from ._app import Dashboard
from ._views import not_found_page, routes

__all__ = ["DashboardPages", "dashboard"]


@final
class DashboardPages:
    """The dashboard as ``create_app`` takes it (``Pages``): routes and a 404 page."""

    def __init__(self, state: ServiceState, limiter: Limiter) -> None:
        self._dashboard = Dashboard(state, limiter)
        self._routes = routes(self._dashboard)
        self._not_found = not_found_page(self._dashboard)

    @property
    def routes(self) -> Sequence[BaseRoute]:
        return self._routes

    async def not_found(self, request: Request) -> Response:
        response: Response = await self._not_found(request)
        response.status_code = 404
        return response


def dashboard(state: ServiceState, limiter: Limiter) -> DashboardPages:
    """The dashboard over ``state`` (``create_app(state, pages=dashboard)``)."""
    return DashboardPages(state, limiter)
