"""The dashboard's pages and form actions.

Every action calls the same library code as the JSON API: ``start_bulk_job`` makes a
job, ``register_account`` an account, the ledger's own methods make and deactivate
keys, and the download is the API's own ``download``. What is here is reading forms
and choosing what to show.
"""

from __future__ import annotations

import math
import mimetypes
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import attrs
import trio
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._api import register_account, start_bulk_job
from .._api._bulk import _own_job, download
from .._api._core import _JOB_ID, _subject, _work_began, job_status_body
from .._exceptions import BulkError, InvalidAPIKey, JobNotFound, ValidationError
from .._jobs import job_dir
from .._ledger import TERMINAL_JOB, JobRow, UrlRow
from ._account import ACCOUNT_SECTIONS
from ._app import Dashboard, Visitor
from ._forms import ArchiveForm, estimate, field_of_error, order_from_form

__all__ = ["routes"]

#: Jobs per page of the jobs list.
JOBS_PER_PAGE: Final = 20
#: Thumbnails per page of a job's gallery (keeps a page under 100 KB of HTML).
GALLERY_PER_PAGE: Final = 100
#: Failed URLs listed on a job's page (the ZIP's manifest has them all).
FAILED_SHOWN: Final = 200


async def _visitor_job(request: Request, dash: Dashboard, visitor: Visitor) -> JobRow:
    """The bulk job the path names, if it is the visitor's (read once per request,
    kept where the API's own job handlers look for it).

    Raises:
        JobNotFound: A malformed id, no such job, another account's or not a bulk job.
    """
    assert visitor.account is not None
    job_id = request.path_params["job_id"]
    job: JobRow | None = None
    if _JOB_ID.fullmatch(job_id):
        try:
            job = await dash.state.ledger.job(job_id, account_id=visitor.account.id)
        except JobNotFound:
            job = None
    request.state.bulk_job = job
    return _own_job(request)


def _page_number(request: Request, name: str = "page") -> int:
    raw = request.query_params.get(name, "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


def _next_target(raw: str | None) -> str:
    """Where to go after signing in: only a path of this dashboard (no open redirect)."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        parts = urlsplit(raw)
        if not parts.scheme and not parts.netloc:
            return raw
    return "/jobs"


# ---- signing in and out ------------------------------------------------------------------


async def home(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    return RedirectResponse("/jobs" if visitor.account else "/signin", status_code=303)


async def signin_page(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    if visitor.account is not None:
        return RedirectResponse("/jobs", status_code=303)
    return dash.render(
        request,
        visitor,
        "signin.html",
        {"errors": {}, "values": {}, "next": _next_target(request.query_params.get("next"))},
    )


async def signin(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    key = visitor.form.get("api_key", "").strip()
    target = _next_target(visitor.form.get("next"))
    try:
        if not key:
            raise ValidationError("give your API key", field="api_key")
        account = await dash.state.ledger.authenticate(key)
    except (ValidationError, InvalidAPIKey) as exc:
        return dash.render(
            request,
            visitor,
            "signin.html",
            {"errors": {"api_key": exc.message}, "values": {}, "next": target},
            status=exc.api_status,
        )
    visitor.start(await dash.signer(), account.api_key_id)
    return RedirectResponse(target, status_code=303)


async def register(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    email = visitor.form.get("email", "")
    subject = f"ip:{request.client.host if request.client else '?'}"
    try:
        dash.limiter.take("register", subject)
        account, key = await register_account(dash.state, email)
    except BulkError as exc:
        field = "email" if field_of_error(exc, ("email",)) or exc.code == "EMAIL_TAKEN" else None
        return dash.render(
            request,
            visitor,
            "signin.html",
            {
                "errors": {field or "register": exc.message},
                "values": {"email": email[:254]},
                "next": "/jobs",
            },
            status=exc.api_status,
        )
    visitor.start(await dash.signer(), account.api_key_id)
    visitor.account = account
    # Shown once, on this response only (no-store): the ledger keeps only its hash.
    return dash.render(request, visitor, "welcome.html", {"new_key": key}, status=201)


async def signout(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    visitor.start(await dash.signer(), None)
    return RedirectResponse("/signin", status_code=303)


# ---- jobs --------------------------------------------------------------------------------


async def jobs_list(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    assert visitor.account is not None
    page = _page_number(request)
    jobs, total = await dash.state.ledger.jobs_page(
        visitor.account.id,
        kinds=("bulk",),
        limit=JOBS_PER_PAGE,
        offset=(page - 1) * JOBS_PER_PAGE,
    )
    pages = max(1, math.ceil(total / JOBS_PER_PAGE))
    return dash.render(
        request,
        visitor,
        "jobs.html",
        {
            "jobs": [job_status_body(j) for j in jobs],
            "page": page,
            "pages": pages,
            "total": total,
        },
    )


def _archive_page(
    dash: Dashboard,
    request: Request,
    visitor: Visitor,
    form: ArchiveForm,
    *,
    message: str | None = None,
    status: int = 200,
) -> Response:
    assert visitor.account is not None
    return dash.render(
        request,
        visitor,
        "new.html",
        {
            "form": form,
            "estimate": estimate(form.values, visitor.account.balance),
            "message": message,
        },
        status=status,
    )


async def new_job_page(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    form = ArchiveForm.blank(secrets.token_urlsafe(24))
    site = request.query_params.get("site")
    if site:
        form = attrs.evolve(form, values={**form.values, "site": site[:2048]})
    return _archive_page(dash, request, visitor, form)


async def new_job(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    """Make a job from the form: the API's checks, limits and ledger calls."""
    account = visitor.account
    assert account is not None
    values = {k: v for k, v in visitor.form.items() if k != "csrf"}
    form = ArchiveForm(values=values)
    names = ("site", "urls", "max_pages", *(f.name for f in form.fields))
    subject = _subject(account)
    taken: list[tuple[str, float]] = []
    try:
        order = order_from_form(values, dash.state.policy)
        for bucket in ("general", "bulk"):
            stamp, _ = dash.limiter.take(bucket, subject)
            taken.append((bucket, stamp))
        job = await start_bulk_job(request, dash.state, account, order)
    except BulkError as exc:
        if not _work_began(request):
            # Refused before any work: as over the API, it costs no slot.
            for bucket, stamp in taken:
                dash.limiter.give_back(bucket, subject, stamp)
        field = field_of_error(exc, names)
        errors = {field: exc.message} if field else {}
        return _archive_page(
            dash,
            request,
            visitor,
            attrs.evolve(form, errors=errors),
            message=None if field else f"{exc.code}: {exc.message}",
            status=exc.api_status,
        )
    if job.replayed:
        # The same form sent twice: one job; its second sending uses no job quota.
        for bucket, stamp in taken:
            if bucket == "bulk":
                dash.limiter.give_back(bucket, subject, stamp)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@attrs.frozen(kw_only=True)
class DownloadView:
    """The download button: whether the ZIP can be had, and until when."""

    available: bool
    expired: bool
    expires_at: str | None
    seconds_left: int
    size: int | None


def _download_view(job: JobRow, now: float) -> DownloadView | None:
    if job.status not in ("completed", "expired"):
        return None
    left = (job.expires_at or 0) - now
    expired = job.status == "expired" or left <= 0
    body = job_status_body(job)
    return DownloadView(
        available=not expired and bool(job.zip_path),
        expired=expired,
        expires_at=(body["download"] or {}).get("expiresAt"),
        seconds_left=max(0, int(left)),
        size=job.zip_size,
    )


async def _job_context(
    dash: Dashboard, request: Request, visitor: Visitor
) -> tuple[JobRow, dict[str, Any]]:
    job = await _visitor_job(request, dash, visitor)
    rows = await dash.state.ledger.urls(job.id)
    ok_rows = [r for r in rows if r.state == "ok"]
    failed_rows = [r for r in rows if r.state == "failed"]
    page = _page_number(request, "gallery")
    pages = max(1, math.ceil(len(ok_rows) / GALLERY_PER_PAGE))
    page = min(page, pages)
    start = (page - 1) * GALLERY_PER_PAGE
    files_kept = job.status != "expired"
    context = {
        "job": job,
        "status": job_status_body(job),
        "running": job.status not in TERMINAL_JOB,
        "gallery": ok_rows[start : start + GALLERY_PER_PAGE] if files_kept else [],
        "gallery_page": page,
        "gallery_pages": pages,
        "captured": len(ok_rows),
        "failed": failed_rows[:FAILED_SHOWN],
        "failed_total": len(failed_rows),
        "download": _download_view(job, dash.clock()),
        "options": _shown_options(job.options),
    }
    return job, context


def _shown_options(options: Any) -> list[tuple[str, str]]:
    """The job's capture options as shown: cookie and header values never are."""
    if not isinstance(options, dict):
        return []
    shown = []
    for name, value in options.items():
        if name == "cookies":
            text = ", ".join(f"{c.get('name')}=***" for c in value if isinstance(c, dict))
        elif name == "headers" and isinstance(value, dict):
            text = ", ".join(f"{k}: ***" for k in value)
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        if text:
            shown.append((name, text))
    return shown


async def job_page(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    _, context = await _job_context(dash, request, visitor)
    return dash.render(request, visitor, "job.html", context)


async def job_live(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    """The live part of a job's page, for its script to swap in (polling)."""
    _, context = await _job_context(dash, request, visitor)
    return dash.render(request, visitor, "job_live.html", context)


async def job_download(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    assert visitor.account is not None
    await _visitor_job(request, dash, visitor)
    return await download(request, dash.state, visitor.account)


def _media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


async def _job_file(dash: Dashboard, job: JobRow, relative: str) -> Response:
    folder = job_dir(dash.state.data_dir, job.id)
    path = folder / relative
    # Row files are named by bulk ("img/<seq>-<lease>.<ext>"); still, nothing outside
    # the job's folder is ever served.
    if (
        ".." in Path(relative).parts
        or not path.is_relative_to(folder)
        or not await trio.Path(path).is_file()
    ):
        raise JobNotFound("this image is not (or no longer) available")
    return FileResponse(
        path,
        media_type=_media_type(path),
        headers={
            # A row's files never change once it settled.
            "Cache-Control": "private, max-age=86400, immutable",
            # The browser shows a bare image in a document of its own, styled inline.
            "Content-Security-Policy": "default-src 'none'; img-src 'self'; "
            "style-src 'unsafe-inline'; sandbox",
        },
    )


async def _row(dash: Dashboard, request: Request, visitor: Visitor) -> tuple[JobRow, UrlRow]:
    job = await _visitor_job(request, dash, visitor)
    seq = request.path_params["seq"]
    for row in await dash.state.ledger.urls(job.id):
        if row.seq == seq and row.state == "ok":
            return job, row
    raise JobNotFound("no captured page with that number in this job")


async def job_thumb(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    job, row = await _row(dash, request, visitor)
    return await _job_file(dash, job, f"thumbs/{row.seq:06d}.jpg")


async def job_image(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    job, row = await _row(dash, request, visitor)
    if not row.file:
        raise JobNotFound("no image was kept for this page")
    return await _job_file(dash, job, row.file)


# ---- account -----------------------------------------------------------------------------


async def _account_page(
    dash: Dashboard,
    request: Request,
    visitor: Visitor,
    *,
    new_key: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    account = visitor.account
    assert account is not None
    account = await dash.state.ledger.account(account.id)
    sections = []
    for section in ACCOUNT_SECTIONS:
        sections.append((section.template, await section.load(dash.state, account)))
    return dash.render(
        request,
        visitor,
        "account.html",
        {
            "fresh": account,
            "current_prefix": visitor.account.key_prefix if visitor.account else None,
            "sections": sections,
            "new_key": new_key,
            "notice": notice,
            "error": error,
        },
        status=status,
    )


async def account_page(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    notice = None
    gone = request.query_params.get("deactivated")
    if gone and len(gone) <= 16 and gone.replace("_", "").isalnum():
        notice = f"The key {gone}\u2026 was deactivated."
    return await _account_page(dash, request, visitor, notice=notice)


async def create_key(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    assert visitor.account is not None
    try:
        key = await dash.state.ledger.create_key(visitor.account.id)
    except BulkError as exc:
        return await _account_page(
            dash, request, visitor, error=exc.message, status=exc.api_status
        )
    # Shown once, on this response only (no-store): the ledger keeps only its hash.
    return await _account_page(dash, request, visitor, new_key=key, status=201)


async def deactivate_key(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    assert visitor.account is not None
    prefix = visitor.form.get("prefix", "")
    if not (0 < len(prefix) <= 16) or not await dash.state.ledger.revoke_key(
        prefix, account_id=visitor.account.id
    ):
        return await _account_page(
            dash,
            request,
            visitor,
            error="No active key with that prefix on this account.",
            status=400,
        )
    if prefix == visitor.account.key_prefix:
        # The key this session stands on is gone: so is the session.
        visitor.start(await dash.signer(), None)
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(f"/account?deactivated={quote(prefix)}", status_code=303)


# ---- wiring ------------------------------------------------------------------------------


async def not_found(dash: Dashboard, request: Request, visitor: Visitor) -> Response:
    return dash.error_page(request, visitor, JobNotFound("no such page"))


def routes(dash: Dashboard) -> Sequence[BaseRoute]:
    """The dashboard's routes, at the root of ``bulk serve``."""

    def page(
        handler: Any, *, signed_in: bool = True, post: bool = False
    ) -> Any:
        async def bound(request: Request, visitor: Visitor) -> Response:
            response: Response = await handler(dash, request, visitor)
            return response

        return dash.page(bound, signed_in=signed_in, post=post)

    job = "/jobs/{job_id}"
    return [
        Route("/", page(home, signed_in=False), methods=["GET"]),
        Route("/signin", page(signin_page, signed_in=False), methods=["GET"]),
        Route("/signin", page(signin, signed_in=False, post=True), methods=["POST"]),
        Route("/register", page(register, signed_in=False, post=True), methods=["POST"]),
        Route("/signout", page(signout, signed_in=False, post=True), methods=["POST"]),
        Route("/jobs", page(jobs_list), methods=["GET"]),
        Route("/jobs/new", page(new_job_page), methods=["GET"]),
        Route("/jobs/new", page(new_job, post=True), methods=["POST"]),
        Route(job, page(job_page), methods=["GET"]),
        Route(f"{job}/live", page(job_live), methods=["GET"]),
        Route(f"{job}/download", page(job_download), methods=["GET"]),
        Route(f"{job}/thumbs/{{seq:int}}", page(job_thumb), methods=["GET"]),
        Route(f"{job}/images/{{seq:int}}", page(job_image), methods=["GET"]),
        Route("/account", page(account_page), methods=["GET"]),
        Route("/account/keys", page(create_key, post=True), methods=["POST"]),
        Route("/account/keys/deactivate", page(deactivate_key, post=True), methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("bulk._dashboard", "static")]), name="static"),
    ]


def not_found_page(dash: Dashboard) -> Any:
    """The HTML 404 of paths outside the API."""
    return dash.page(lambda request, visitor: not_found(dash, request, visitor), signed_in=False)
