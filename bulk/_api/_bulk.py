"""The bulk-screenshot endpoints: create a job (a site's sitemaps or a URL list),
its status, its ZIP."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import attrs
import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from .._connector_hub import ROUTED_POLICY
from .._discover import DiscoverLimits, discover_all
from .._exceptions import (
    BulkError,
    DownloadExpired,
    InsufficientCredits,
    JobNotFound,
    JobNotReady,
    ValidationError,
)
from .._jobs import list_discovery, url_rows
from .._ledger import Account, JobRow, NewJob, iso
from .._openapi import (
    URL_FIELD_LIMIT,
)
from .._options import CaptureOptions
from .._paths import Layout, root_folder
from .._urllist import UrlList, prepare_url_list, raw_items
from .._urls import parse_http_url, site_candidates
from ._connectors import connector_param, own_connector, routed_connector
from ._core import (
    _IDEMPOTENCY_KEY,
    ServiceState,
    _capture_options,
    _check_target,
    _created_body,
    _doing_work,
    _json_body,
    _max_pages,
    _object,
    _string,
    job_status_body,
)

# ---- handlers -------------------------------------------------------------------------


async def create_bulk(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    body = _object(await _json_body(request), "body")
    parsed = bulk_order(body, state)
    idem = request.headers.get("idempotency-key")
    if idem is not None and not _IDEMPOTENCY_KEY.match(idem):
        raise ValidationError(
            "Idempotency-Key must be 1-255 characters of A-Z a-z 0-9 _ . : -",
            field="Idempotency-Key",
        )
    order = attrs.evolve(parsed, idempotency_key=idem, request_hash=_request_hash(body))
    job = await start_bulk_job(request, state, account, order)
    if job.replayed:
        # An earlier request (or one at the same moment) with this key and body made it.
        return await _replayed(request, state, account, job)
    balance = (await state.ledger.account(account.id)).balance
    return JSONResponse(_created_body(job, balance), status_code=202)


def bulk_order(body: dict[str, Any], state: ServiceState) -> BulkOrder:
    """The job a ``POST /bulk-screenshot`` body asks for, every field checked (and a
    URL list's every item, against the URL policy); no request is made.

    Schedules keep such a body and make each run's job from it.

    Raises:
        ValidationError: A field is unknown, missing, given twice or invalid.
        InvalidURL, URLBlocked: An item of a URL list is refused.
    """
    unknown = set(body) - {
        "url",
        "sitemap_url",
        "sitemapUrl",
        "urls",
        "options",
        "webhook_url",
        "webhookUrl",
        "connector_id",
        "connectorId",
    }
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    site_field = [k for k in ("url", "sitemap_url", "sitemapUrl", "urls") if k in body]
    if len(site_field) != 1:
        raise ValidationError("give exactly one of url, sitemap_url or urls", field="url")
    field = site_field[0]
    connector = connector_param(body)
    if connector is not None and field != "urls":
        # Discovery (robots.txt, sitemaps) runs on the service, which must not reach
        # the connector's network: a routed job names its pages.
        raise ValidationError(
            "a job routed to a connector takes a urls list (no url or sitemap_url)",
            field=field,
        )
    options_raw = _object(body.get("options", {}), "options")
    max_pages = _max_pages(options_raw)
    options = _capture_options(options_raw, "options.")
    url_list: UrlList | None = None
    target = ""
    if field == "urls":
        # Every item checked (and the whole list refused, naming each bad item)
        # before any credit is reserved or any request made.
        # Routed: syntax and scheme only; the connector's own policy rules its network.
        policy = ROUTED_POLICY if connector is not None else state.policy
        url_list = prepare_url_list(raw_items(body["urls"]), options, policy)
    else:
        target = _string(body[field], field, limit=URL_FIELD_LIMIT)
    webhook_fields = [k for k in ("webhook_url", "webhookUrl") if k in body]
    if len(webhook_fields) > 1:
        raise ValidationError("webhook_url given twice", field="webhook_url")
    webhook = (
        _string(body[webhook_fields[0]], "webhook_url", limit=URL_FIELD_LIMIT)
        if webhook_fields
        else None
    )
    return BulkOrder(
        target=target,
        field=field,
        max_pages=max_pages,
        options=options,
        url_list=url_list,
        webhook_url=webhook,
        connector_id=connector,
    )


@attrs.frozen(kw_only=True)
class BulkOrder:
    """A bulk job asked for, its fields already parsed (the API's JSON body, the
    dashboard's form): what ``start_bulk_job`` needs.

    Args:
        target: The site or sitemap URL, as given (empty for a URL list).
        field: The request field ``target`` came from (``url``, ``sitemap_url``,
            ``urls``...): a refusal names it, and ``sitemap_url`` means "a sitemap".
        max_pages: At most this many pages (and credits) found by discovery.
        options: The capture options.
        url_list: A URL list (``prepare_url_list``: every item already checked):
            captured as given, one row and one credit per distinct URL, no discovery.
        webhook_url: Called when the job ends.
        idempotency_key, request_hash: The same key and hash as an earlier job
            answer that job (``replayed``); the same key with another hash is
            refused (``IDEMPOTENCY_KEY_REUSED``).
        connector_id: Capture every URL on this connector only (a URL list).
    """

    target: str
    field: str
    max_pages: int
    options: CaptureOptions
    url_list: UrlList | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    connector_id: str | None = None


async def start_bulk_job(
    request: Request | None, state: ServiceState, account: Account, order: BulkOrder
) -> JobRow:
    """Check, discover and create a bulk job, and wake the runner: the one way a job
    is made over HTTP (the JSON API and the dashboard both call it).

    Checks run in the documented order after validation: URL policy, an earlier job
    with the same idempotency key, credits; then discovery runs in the request
    (``_doing_work``: the request keeps its rate-limit slots from here on) and the
    ledger reserves one credit per URL. A schedule's run (``request`` None) is made
    the same way, outside any request: no rate limit applies to it.

    Returns:
        The new job, or (``replayed`` set) the earlier job of the same key and hash.

    Raises:
        InvalidURL, URLBlocked: The policy refuses the target or the webhook.
        InsufficientCredits: The account cannot pay for one page, or for every URL found.
        IdempotencyKeyReused: The key was used with another request.
        RateLimitExceeded: The key already runs its cap of discoveries.
        DiscoveryError, FetchError: Discovery found nothing to capture.
    """
    if order.connector_id is not None:
        # Whose it is, before anything else about it (CONNECTOR_NOT_FOUND).
        await own_connector(state, account, order.connector_id)
    # URL policy, before any request is made.
    if order.url_list is None:
        _check_target(state.policy, order.target, order.field)
    if order.webhook_url is not None:
        state.policy.check_url(order.webhook_url)
    idem = order.idempotency_key
    if idem is not None:
        earlier = await state.ledger.find_idempotent(account.id, idem, order.request_hash or "")
        if earlier is not None:
            return attrs.evolve(earlier, replayed=True)
    if account.balance < 1:
        raise InsufficientCredits(
            "no credits remaining", details={"required": 1, "available": account.balance}
        )
    if order.connector_id is not None:
        await routed_connector(state, account, order.connector_id)  # CONNECTOR_OFFLINE
    if order.url_list is not None:
        job = await _create_list_job(state, account, order.url_list, order)
        if not job.replayed:
            state.runner.wake()
        return job
    working = (
        _doing_work(request, state, account, "discovery")
        if request is not None
        else contextlib.nullcontext()
    )
    with working:
        # The default budget (100 sitemap documents); past maxPages, only a little
        # counting for discovery.found, so one request's parsing stays small.
        limits = DiscoverLimits(
            max_pages=order.max_pages,
            total_timeout=state.config.discovery_timeout,
            count_limit=10_000,
        )
        urls, found = await discover_all(
            order.target, state.fetcher, limits, sitemap=True if order.field != "url" else None
        )
        layout = Layout(order.options.extension)
        entries = [(u, layout.assign(u)) for u in urls]
        site = found.site or site_candidates(order.target)[0].origin
        job = await state.ledger.create_job(
            NewJob(
                kind="bulk",
                site=site,
                urls=entries,
                account_id=account.id,
                api_key_id=account.api_key_id,
                sitemap_urls=found.sitemaps,
                options=order.options.to_json(),
                root=root_folder(site, date.today()),
                idempotency_key=idem,
                request_hash=order.request_hash,
                webhook_url=order.webhook_url,
                discovery=found.to_json(),
            )
        )
    if not job.replayed:
        state.runner.wake()
    return job


async def _create_list_job(
    state: ServiceState, account: Account, url_list: UrlList, order: BulkOrder
) -> JobRow:
    """A URL-list job: one row (and one credit) per distinct URL, no discovery."""
    layout = Layout(order.options.extension)
    site = parse_http_url(url_list.first_url).origin
    return await state.ledger.create_job(
        NewJob(
            kind="bulk",
            site=site,
            urls=url_rows(url_list, layout),
            account_id=account.id,
            api_key_id=account.api_key_id,
            options=order.options.to_json(),
            root=root_folder(url_list.first_url, date.today()),
            idempotency_key=order.idempotency_key,
            request_hash=order.request_hash,
            webhook_url=order.webhook_url,
            discovery=list_discovery(url_list, kept=len(url_list.items), truncated=False),
            connector_id=order.connector_id,
        )
    )


def _request_hash(body: Any) -> str:
    """What makes two requests with one Idempotency-Key the same request."""
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


async def _replayed(
    request: Request, state: ServiceState, account: Account, job: JobRow
) -> Response:
    """The answer to a replay: the original job, marked ``Idempotent-Replayed``."""
    # A replay makes no new job: it must not use the endpoint's job quota.
    request.state.bulk_replay = True
    balance = (await state.ledger.account(account.id)).balance
    return JSONResponse(
        _created_body(job, balance), status_code=202, headers={"Idempotent-Replayed": "true"}
    )


async def bulk_replay(request: Request, state: ServiceState, account: Account) -> Response | None:
    """``POST /bulk-screenshot`` repeating an earlier one (same Idempotency-Key and body).

    Answered before the bulk rate limit: the original job again, with no new work, so
    that a client retrying a create it is unsure about always learns its job. Anything
    else (no key, another body, a body that is not JSON) returns ``None`` and goes
    through the full checks, in their order, which then say what is wrong.
    """
    idem = request.headers.get("idempotency-key")
    if idem is None or not _IDEMPOTENCY_KEY.match(idem):
        return None
    try:
        body = await _json_body(request)
        earlier = await state.ledger.find_idempotent(account.id, idem, _request_hash(body))
    except BulkError:
        return None
    if earlier is None:
        return None
    return await _replayed(request, state, account, earlier)


async def job_status(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    job = _own_job(request)
    return JSONResponse(
        {"success": True, "data": job_status_body(job)}, headers=_connector_header(job)
    )


def _connector_header(job: JobRow) -> dict[str, str]:
    """``X-Connector-Used`` for a job routed to a connector."""
    return {"X-Connector-Used": job.connector_id} if job.connector_id else {}


def _own_job(request: Request) -> JobRow:
    """The job the path names, as ``_authenticate_with_job`` read it with the key.

    Raises:
        JobNotFound: A malformed id, no such job, another account's or not a bulk job.
    """
    job_id = request.path_params["job_id"]
    job: JobRow | None = request.state.bulk_job
    if job is None or job.kind != "bulk":
        raise JobNotFound(f"job {job_id[:40]} not found")
    return job


async def download(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    job = _own_job(request)
    now = state.config.clock()
    if job.status == "expired" or (
        job.status == "completed" and job.expires_at is not None and job.expires_at <= now
    ):
        raise DownloadExpired(
            "the download window of this job has passed",
            details={"expiredAt": iso(job.expires_at)},
        )
    if job.status != "completed" or not job.zip_path:
        raise JobNotReady(
            f"the job is {job.status}; its ZIP is not ready",
            details={"status": job.status},
        )
    path = Path(job.zip_path)
    if not await trio.Path(path).is_file():
        raise DownloadExpired("the job's files are gone")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"{job.root}.zip",
        headers={
            "ETag": f'"{job.zip_sha256}"',
            "Cache-Control": "private, no-store",
            **_connector_header(job),
        },
        content_disposition_type="attachment",
    )
