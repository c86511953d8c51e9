"""The dashboard's machinery: templates, the visitor (session + account), and the
wrapper every dashboard endpoint goes through.

``Dashboard.page`` does for the dashboard what ``_Endpoint`` does for the JSON API:
it loads the visitor from the session cookie, refuses a form post that is not the
dashboard's own (CSRF token, ``Origin``), sends a signed-out visitor to the sign-in
page, renders a ``BulkError`` as an error page with its code and status, sets the
session cookie when it changed, and adds the security headers (a Content-Security-
Policy that allows only the dashboard's own files, no framing, no sniffing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, final
from urllib.parse import quote, urlsplit

import attrs
import jinja2
import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .._api import ServiceState
from .._exceptions import BulkError, InvalidAPIKey, PayloadTooLarge, ValidationError
from .._ledger import Account
from .._ratelimit import Limiter
from ._forms import read_form
from ._session import COOKIE, MAX_AGE, SECRET_NAME, Session, SessionSigner

__all__ = ["CSP", "Dashboard", "Visitor"]

log = logging.getLogger("bulk.dashboard")

#: Only the dashboard's own files; forms post only to it; no page may frame it.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show balances, keys and jobs: never kept by a shared cache or the
    # back/forward cache of a shared machine.
    "Cache-Control": "no-store",
}


@attrs.define(kw_only=True)
class Visitor:
    """Who is asking: their session, their account when signed in, the form posted."""

    session: Session
    account: Account | None
    csrf: str
    form: Mapping[str, str] = attrs.field(factory=dict)
    #: Set by a handler that signs in or out: the cookie is replaced.
    changed: bool = False

    def start(self, signer: SessionSigner, key_id: int | None) -> None:
        """A new session (new nonce, so a new CSRF token), signed in as ``key_id``."""
        self.session = Session.new(key_id)
        self.csrf = signer.csrf_token(self.session)
        self.changed = True


Handler = Callable[[Request, Visitor], Awaitable[Response]]


def filesize(size: int | None) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as file managers show them)."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def when(stamp: str | None) -> str:
    """An API timestamp (``2026-01-02T03:04:05.678Z``) as ``2026-01-02 03:04 UTC``."""
    if not stamp:
        return ""
    return f"{stamp[:10]} {stamp[11:16]} UTC"


def duration(seconds: float) -> str:
    """``90061`` -> ``1 d 1 h 1 min``: how long until a download expires."""
    left = max(0, int(seconds))
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes = left // 60
    parts = [f"{days} d"] if days else []
    if hours or days:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min")
    return " ".join(parts)


@final
class Dashboard:
    """The dashboard's shared parts, over the service's state.

    Args:
        state: The service's state (ledger, runner, policy, config).
        limiter: The JSON API's rate limiter: a job made here counts like one made there.
    """

    def __init__(self, state: ServiceState, limiter: Limiter) -> None:
        self.state = state
        self.limiter = limiter
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("bulk._dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(filesize=filesize, when=when, duration=duration)
        self.templates = Jinja2Templates(env=env)
        self._signer: SessionSigner | None = None
        self._signer_lock = trio.Lock()

    @property
    def clock(self) -> Callable[[], float]:
        return self.state.config.clock

    async def signer(self) -> SessionSigner:
        """The session signer, its key read from (or made in) the ledger once."""
        if self._signer is None:
            async with self._signer_lock:
                if self._signer is None:
                    secret = await self.state.ledger.server_secret(SECRET_NAME)
                    self._signer = SessionSigner(secret)
        return self._signer

    async def visitor(self, request: Request) -> Visitor:
        """The visitor of ``request``: a new anonymous session if the cookie is absent,
        forged, expired, or its key was deactivated."""
        signer = await self.signer()
        session = signer.loads(request.cookies.get(COOKIE))
        account = None
        if session is not None and session.key_id is not None:
            try:
                account = await self.state.ledger.account_of_key_id(session.key_id)
            except InvalidAPIKey:
                session = None
        if session is None:
            session = Session.new()
        return Visitor(session=session, account=account, csrf=signer.csrf_token(session))

    # ---- rendering -------------------------------------------------------------------

    def render(
        self,
        request: Request,
        visitor: Visitor,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
    ) -> Response:
        """A page from ``template`` with the layout's context (visitor, CSRF token)."""
        base: dict[str, Any] = {
            "visitor": visitor,
            "account": visitor.account,
            "csrf": visitor.csrf,
            "path": request.url.path,
        }
        base.update(context or {})
        return self.templates.TemplateResponse(request, template, base, status_code=status)

    def error_page(self, request: Request, visitor: Visitor, exc: BulkError) -> Response:
        return self.render(
            request,
            visitor,
            "error.html",
            {"code": exc.code, "message": exc.message, "status": exc.api_status},
            status=exc.api_status,
        )

    # ---- the wrapper -----------------------------------------------------------------

    def page(
        self, handler: Handler, *, signed_in: bool = True, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler``: visitor, CSRF (``post``), sign-in (``signed_in``), errors,
        cookie, headers."""

        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            visitor = await self.visitor(request)
            try:
                response = await self._handle(request, visitor, handler, signed_in, post)
            except BulkError as exc:
                response = self.error_page(request, visitor, exc)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                response = self.error_page(request, visitor, BulkError("internal error"))
            if visitor.session.fresh or visitor.changed:
                signer = await self.signer()
                response.set_cookie(
                    COOKIE,
                    signer.dumps(visitor.session),
                    max_age=MAX_AGE,
                    path="/",
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                )
            for name, value in _HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault(
                "X-Response-Time", f"{round((time.monotonic() - started) * 1000)}ms"
            )
            return response

        return endpoint

    async def _handle(
        self, request: Request, visitor: Visitor, handler: Handler, signed_in: bool, post: bool
    ) -> Response:
        if post:
            refused = await self._refuse_post(request, visitor)
            if refused is not None:
                return refused
        if signed_in and visitor.account is None:
            if post or request.method != "GET":
                return RedirectResponse("/signin", status_code=303)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        return await handler(request, visitor)

    async def _refuse_post(self, request: Request, visitor: Visitor) -> Response | None:
        """The refusal of a form post that is not this dashboard's own, or None.

        Refused: an ``Origin`` other than this server's (a page of another origin,
        same-site ones included, which ``SameSite`` would let through), and a missing
        or wrong CSRF token (the token of this session's forms).
        """
        origin = request.headers.get("origin")
        # Host against Host: behind a proxy that ends TLS the scheme seen here is not
        # the browser's, but the host (and port) it asked for is.
        foreign = origin is not None and urlsplit(origin).netloc != request.headers.get("host")
        form: dict[str, str] = {}
        if not foreign:
            try:
                form = await read_form(request)
            except PayloadTooLarge as exc:
                return self.error_page(request, visitor, exc)
            except ValidationError:
                pass  # not a form: it carries no token either
        signer = await self.signer()
        if foreign or not signer.csrf_ok(visitor.session, form.get("csrf")):
            return self.render(request, visitor, "refused.html", status=403)
        visitor.form = form
        return None
