"""The HTTP API (Starlette): Pixcap's bulk-screenshot shapes on top of bulk's pipeline.

Every endpoint goes through ``_Endpoint``, which does the checks in the documented
order (auth, rate limit, then the handler's validation, URL policy, credits), maps
every ``BulkError`` to the JSON error envelope with its class's ``api_status``, adds
the ``X-RateLimit-*`` headers, and gives back the rate-limit slot when the request was
refused before any work (``_doing_work`` marks where work begins: a discovery or a
capture keeps its slot even when it fails). No stack trace ever reaches a client; API
keys never reach a log line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._capture import BrowserPool
from ._discover import DiscoverLimits, discover_all
from ._exceptions import (
    APIKeyRequired,
    BulkError,
    CaptureError,
    DownloadExpired,
    EndpointNotFound,
    InsufficientCredits,
    InvalidAPIKey,
    InvalidURL,
    JobNotFound,
    JobNotReady,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimitExceeded,
    URLBlocked,
    ValidationError,
    error_table,
)
from ._fetch import Fetcher
from ._jobs import JobRunner, list_discovery, url_rows
from ._ledger import Account, JobRow, Ledger, NewJob, iso
from ._openapi import (
    EMAIL_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BODY,
    MAX_HTML_BYTES,
    MAX_LARGE_BODY,
    MAX_PAGES_API,
    URL_FIELD_LIMIT,
    openapi_document,
)
from ._options import OPTION_SPECS, CaptureOptions, lease_seconds
from ._paths import Layout, root_folder
from ._policy import EgressPolicy
from ._ratelimit import IN_FLIGHT_LIMITS, RATE_LIMITS, InFlight, Limiter, RateLimit
from ._results import failed_result, ok_result
from ._urllist import UrlList, prepare_url_list, raw_items
from ._urls import parse_http_url, site_candidates
from ._version import __version__

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

log = logging.getLogger("bulk.api")

STARTER_CREDITS: Final = 100


def status_of(code: str) -> int:
    """The HTTP status the API answers with for an error code (``error_table``)."""
    cls = error_table().get(code)
    return cls.api_status if cls is not None else BulkError.api_status


@attrs.frozen(kw_only=True)
class ApiConfig:
    """Knobs of the HTTP layer (tests shrink them)."""

    rate_limits: Mapping[str, RateLimit] = RATE_LIMITS
    #: Discoveries and single captures one key may run at once (``InFlight``).
    in_flight: Mapping[str, int] = IN_FLIGHT_LIMITS
    discovery_timeout: float = 60.0
    starter_credits: int = STARTER_CREDITS
    clock: Callable[[], float] = time.time


@attrs.define(kw_only=True)
class ServiceState:
    """What the endpoints work with (built by ``_service.serve``)."""

    ledger: Ledger
    pool: BrowserPool
    fetcher: Fetcher
    runner: JobRunner
    policy: EgressPolicy
    data_dir: Path
    config: ApiConfig = attrs.field(factory=ApiConfig)
    draining: bool = False
    in_flight: InFlight = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: InFlight(self.config.in_flight), takes_self=True),
    )


# ---- request parsing ------------------------------------------------------------------


def _error_body(exc: BulkError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details is not None:
        error["details"] = exc.details
    return {"success": False, "error": error}


def _error(exc: BulkError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimitExceeded):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(_error_body(exc), status_code=exc.api_status, headers=headers)


async def _raw_body(request: Request) -> bytes:
    """The request body, at most ``MAX_BODY`` bytes, read once per request.

    The endpoints that take a URL list (``/bulk-screenshot``) or an HTML document
    (``/screenshot``) take up to ``MAX_LARGE_BODY`` bytes.

    Kept (or the refusal kept) on ``request.state``: the replay check and the handler
    both read it, and a half-consumed stream cannot be read twice.

    Raises:
        PayloadTooLarge: Over ``MAX_BODY`` bytes.
    """
    kept = getattr(request.state, "bulk_body", None)
    if isinstance(kept, PayloadTooLarge):
        raise kept
    if isinstance(kept, bytes):
        return kept
    limit = (
        MAX_LARGE_BODY
        if request.url.path.endswith(("/bulk-screenshot", "/screenshot"))
        else MAX_BODY
    )
    try:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
    except PayloadTooLarge as exc:
        request.state.bulk_body = exc
        raise
    raw = b"".join(chunks)
    request.state.bulk_body = raw
    return raw


async def _json_body(request: Request) -> Any:
    raw = await _raw_body(request)
    if not raw.strip():
        raise ValidationError("the request body must be a JSON object", field="body")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ValidationError("the request body is not valid JSON", field="body") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    return value


def _string(value: Any, field: str, *, limit: int = 2048) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValidationError(f"{field} must be a non-empty string", field=field)
    return value.strip()


def _max_pages(options: Mapping[str, Any]) -> int:
    present = [k for k in ("maxPages", "max_pages") if k in options]
    if len(present) > 1:
        raise ValidationError("maxPages given twice", field="options.maxPages")
    if not present:
        return MAX_PAGES_API
    value = options[present[0]]
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer: 5.0 is one
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("options.maxPages must be an integer", field="options.maxPages")
    if not 1 <= value <= MAX_PAGES_API:
        raise ValidationError(
            f"options.maxPages must be between 1 and {MAX_PAGES_API}", field="options.maxPages"
        )
    return value


def _capture_options(data: Mapping[str, Any], prefix: str = "") -> CaptureOptions:
    try:
        return CaptureOptions.from_mapping(data, ignore=("maxPages", "max_pages"))
    except ValidationError as exc:
        field = f"{prefix}{exc.field}" if exc.field else None
        raise ValidationError(exc.message, field=field) from None


_GET_BOOL: Final = {"true": True, "1": True, "false": False, "0": False}
_QUERY_INT: Final = re.compile(r"-?[0-9]{1,9}(?:\.0+)?")
_QUERY_NUMBER: Final = re.compile(r"-?[0-9]{1,9}(?:\.[0-9]{1,17})?(?:[eE][-+]?[0-9]{1,3})?")


def _options_from_query(params: Mapping[str, str]) -> dict[str, Any]:
    """GET /screenshot: query strings are text; convert by the option's declared kind."""
    by_alias = {alias: spec for spec in OPTION_SPECS for alias in spec.api_names}
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key in ("url", "api_key", "response_type"):
            continue
        spec = by_alias.get(key)
        if spec is None:
            raise ValidationError(f"unknown option {key!r}", field=key)
        value: Any = raw
        # Plain ASCII forms only (Python's int() and float() also take "١٢", "1_0"
        # or " 5 "; the OpenAPI document promises numbers as JSON writes them).
        if spec.kind == "int":
            if not _QUERY_INT.fullmatch(raw):
                raise ValidationError(f"{key} must be an integer", field=key)
            value = int(float(raw))
        elif spec.kind == "float":
            if not _QUERY_NUMBER.fullmatch(raw):
                raise ValidationError(f"{key} must be a number", field=key)
            value = float(raw)
        elif spec.kind == "bool":
            if raw.lower() not in _GET_BOOL:
                raise ValidationError(f"{key} must be true or false", field=key)
            value = _GET_BOOL[raw.lower()]
        elif spec.kind == "str_list":
            # Every item counts (an empty one is refused, as in a JSON body).
            value = raw.split(",") if raw else []
        elif spec.kind in ("cookies", "headers", "actions"):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValidationError(f"{key} must be JSON in a query string", field=key) from None
        out[key] = value
    return out


def _check_target(policy: EgressPolicy, url: str, field: str) -> None:
    try:
        for cand in site_candidates(url):
            policy.check_url(cand)
    except (InvalidURL, URLBlocked) as exc:
        exc.details = {"field": field}
        raise


_IDEMPOTENCY_KEY: Final = re.compile(IDEMPOTENCY_KEY_PATTERN)
_EMAIL: Final = re.compile(EMAIL_PATTERN)


# ---- responses ------------------------------------------------------------------------


def job_status_body(job: JobRow) -> dict[str, Any]:
    """The status document of a job, in Pixcap's camelCase shape."""
    total = job.total
    body: dict[str, Any] = {
        "jobId": job.id,
        "status": job.status,
        "site": job.site,
        "sitemapUrl": job.sitemap_urls[0] if job.sitemap_urls else None,
        "progress": {
            "totalUrls": total,
            "processed": job.processed,
            "successful": job.ok,
            "failed": job.failed,
            "percentage": round(100 * job.processed / total) if total else 0,
        },
        "credits": {"reserved": job.reserved, "used": job.used, "refunded": job.refunded},
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "finishedAt": job.finished_at,
        "download": None,
    }
    if job.status == "completed":
        body["download"] = {
            "expiresAt": iso(job.expires_at),
            "fileSize": job.zip_size,
            "url": f"/api/v1/bulk-screenshot/{job.id}/download",
        }
    if job.error_code:
        body["error"] = {"code": job.error_code, "message": job.error_message}
    # What discovery found, cut and skipped (``Discovery.to_json``; null before it existed).
    body["discovery"] = job.discovery
    return body


def _created_body(job: JobRow, balance: int) -> dict[str, Any]:
    return {
        "success": True,
        "data": {
            "job_id": job.id,
            "status": job.status,
            "sitemap_url": job.sitemap_urls[0] if job.sitemap_urls else None,
            "total_urls": job.total,
            "credits_reserved": job.reserved,
            "credits_remaining": balance,
            "status_url": f"/api/v1/bulk-screenshot/{job.id}/status",
            # URL lists: items that repeated an earlier URL (captured and charged once).
            "deduplicated": int((job.discovery or {}).get("deduplicated") or 0),
        },
    }


# ---- the endpoint wrapper -------------------------------------------------------------

Handler = Callable[[Request, ServiceState, Account | None], Awaitable[Response]]


def _api_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if not key:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    if not key:
        key = request.query_params.get("api_key")
    return key or None


def _subject(account: Account) -> str:
    """Who limits count against: the API key."""
    return f"key:{account.api_key_id}"


@contextlib.contextmanager
def _doing_work(
    request: Request, state: ServiceState, account: Account, kind: str
) -> Iterator[None]:
    """The block does work that costs the service (``kind``: a discovery or a capture).

    Everything checked before it (auth, validation, URL policy, credits) refuses a
    request for free; from here on the request keeps its rate-limit slots, whatever
    its outcome, and counts against the key's cap of ``kind`` in flight.

    Raises:
        RateLimitExceeded: The key already runs its cap of ``kind`` (nothing began).
    """
    with state.in_flight.hold(kind, _subject(account)):
        request.state.bulk_work_began = True
        yield


def _work_began(request: Request) -> bool:
    return bool(getattr(request.state, "bulk_work_began", False))


Replay = Callable[[Request, ServiceState, Account], Awaitable[Response | None]]
Authenticate = Callable[[Request, ServiceState, str], Awaitable[Account]]


async def _authenticate(request: Request, state: ServiceState, key: str) -> Account:
    """The account of an active key (one ledger read)."""
    return await state.ledger.authenticate(key)


_JOB_ID: Final = re.compile(r"[0-9a-f-]{36}")


async def _authenticate_with_job(request: Request, state: ServiceState, key: str) -> Account:
    """The account of an active key and the job the path names, in one ledger read.

    The status and download endpoints need both; one read transaction on one worker
    thread instead of two is most of what a status request costs (issue 14). The key
    is still checked first (an invalid key is a 401 whatever the job), and the job is
    kept on ``request.state`` for ``_own_job`` (None: not this account's, or no such
    job). A rate-limited request has then read its job for nothing, which costs what
    the key check alone did before.
    """
    job_id = request.path_params["job_id"]
    wanted = job_id if _JOB_ID.fullmatch(job_id) else None
    account, job = await state.ledger.authenticate_job(key, wanted)
    request.state.bulk_job = job
    return account


@final
class _Endpoint:
    """Auth -> rate limits -> handler; errors to the envelope; headers; slot refunds.

    Args:
        bucket: The endpoint's own rate-limit bucket (besides ``general``), if any.
        auth: Whether an API key is required (buckets then count per key, else per
            client address).
        replay: Answers a request that repeats an earlier one (``Idempotency-Key``)
            before the endpoint's own bucket is checked, so a replay, which makes
            nothing new, neither uses nor is refused by it.
        authenticate: Checks the key (``auth``) and may read what the handler needs
            in the same ledger read (``_authenticate_with_job``).
    """

    def __init__(
        self,
        state: ServiceState,
        limiter: Limiter,
        handler: Handler,
        *,
        bucket: str | None,
        auth: bool = True,
        replay: Replay | None = None,
        authenticate: Authenticate = _authenticate,
    ) -> None:
        self.state = state
        self.limiter = limiter
        self.handler = handler
        self.bucket = bucket
        self.auth = auth
        self.replay = replay
        self.authenticate = authenticate

    async def __call__(self, request: Request) -> Response:
        taken: list[tuple[str, str, float]] = []
        headers: dict[str, str] = {}
        window_full = False
        started = time.monotonic()

        def take(bucket: str, subject: str) -> None:
            nonlocal headers, window_full
            try:
                stamp, headers = self.limiter.take(bucket, subject)
            except RateLimitExceeded:
                headers = self.limiter.peek_headers(bucket, subject)
                window_full = True
                raise
            taken.append((bucket, subject, stamp))

        try:
            account: Account | None = None
            response: Response | None = None
            if self.auth:
                key = _api_key(request)
                if key is None:
                    raise APIKeyRequired(
                        "an API key is required (X-API-Key header, Bearer token or ?api_key=)"
                    )
                account = await self.authenticate(request, self.state, key)
                subject = _subject(account)
                take("general", subject)
                if self.replay is not None:
                    response = await self.replay(request, self.state, account)
                if response is None and self.bucket is not None:
                    take(self.bucket, subject)
            elif self.bucket is not None:
                take(self.bucket, f"ip:{request.client.host if request.client else '?'}")
            if response is None:
                response = await self.handler(request, self.state, account)
        except BulkError as exc:
            response = _error(exc)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            response = _error(BulkError("internal error"))
        if response.status_code >= 400 and not _work_began(request):
            # Refused before any work: the request costs no slot.
            for bucket, subject, stamp in taken:
                self.limiter.give_back(bucket, subject, stamp)
            # After a full window the headers already describe the exhausted bucket.
            if taken and not window_full:
                headers = self.limiter.peek_headers(taken[-1][0], taken[-1][1])
        elif getattr(request.state, "bulk_replay", False) and taken:
            # A replay makes no new job: no slot of the endpoint's own bucket (one was
            # taken only when the handler, not the replay check, found the original).
            for bucket, subject, stamp in taken:
                if bucket == self.bucket:
                    self.limiter.give_back(bucket, subject, stamp)
            if self.bucket is not None:
                headers = self.limiter.peek_headers(self.bucket, taken[0][1])
        for k, v in headers.items():
            response.headers[k] = v
        response.headers.setdefault(
            "X-Response-Time", f"{round((time.monotonic() - started) * 1000)}ms"
        )
        return response


# ---- handlers -------------------------------------------------------------------------


async def create_bulk(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    body = _object(await _json_body(request), "body")
    unknown = set(body) - {
        "url",
        "sitemap_url",
        "sitemapUrl",
        "urls",
        "options",
        "webhook_url",
        "webhookUrl",
    }
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    site_field = [k for k in ("url", "sitemap_url", "sitemapUrl", "urls") if k in body]
    if len(site_field) != 1:
        raise ValidationError("give exactly one of url, sitemap_url or urls", field="url")
    field = site_field[0]
    options_raw = _object(body.get("options", {}), "options")
    max_pages = _max_pages(options_raw)
    options = _capture_options(options_raw, "options.")
    url_list: UrlList | None = None
    target = ""
    if field == "urls":
        # Every item checked (and the whole list refused, naming each bad item)
        # before any credit is reserved or any request made.
        url_list = prepare_url_list(raw_items(body["urls"]), options, state.policy)
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
    idem = request.headers.get("idempotency-key")
    if idem is not None and not _IDEMPOTENCY_KEY.match(idem):
        raise ValidationError(
            "Idempotency-Key must be 1-255 characters of A-Z a-z 0-9 _ . : -",
            field="Idempotency-Key",
        )
    order = BulkOrder(
        target=target,
        field=field,
        max_pages=max_pages,
        options=options,
        url_list=url_list,
        webhook_url=webhook,
        idempotency_key=idem,
        request_hash=_request_hash(body),
    )
    job = await start_bulk_job(request, state, account, order)
    if job.replayed:
        # An earlier request (or one at the same moment) with this key and body made it.
        return await _replayed(request, state, account, job)
    balance = (await state.ledger.account(account.id)).balance
    return JSONResponse(_created_body(job, balance), status_code=202)


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
    """

    target: str
    field: str
    max_pages: int
    options: CaptureOptions
    url_list: UrlList | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


async def start_bulk_job(
    request: Request, state: ServiceState, account: Account, order: BulkOrder
) -> JobRow:
    """Check, discover and create a bulk job, and wake the runner: the one way a job
    is made over HTTP (the JSON API and the dashboard both call it).

    Checks run in the documented order after validation: URL policy, an earlier job
    with the same idempotency key, credits; then discovery runs in the request
    (``_doing_work``: the request keeps its rate-limit slots from here on) and the
    ledger reserves one credit per URL.

    Returns:
        The new job, or (``replayed`` set) the earlier job of the same key and hash.

    Raises:
        InvalidURL, URLBlocked: The policy refuses the target or the webhook.
        InsufficientCredits: The account cannot pay for one page, or for every URL found.
        IdempotencyKeyReused: The key was used with another request.
        RateLimitExceeded: The key already runs its cap of discoveries.
        DiscoveryError, FetchError: Discovery found nothing to capture.
    """
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
    if order.url_list is not None:
        job = await _create_list_job(state, account, order.url_list, order)
        if not job.replayed:
            state.runner.wake()
        return job
    with _doing_work(request, state, account, "discovery"):
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
    return JSONResponse({"success": True, "data": job_status_body(job)})


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
        headers={"ETag": f'"{job.zip_sha256}"', "Cache-Control": "private, no-store"},
        content_disposition_type="attachment",
    )


async def _shoot(
    request: Request,
    state: ServiceState,
    account: Account,
    url: str,
    options: CaptureOptions,
    html: str | None = None,
) -> tuple[Any, int]:
    """One charged capture: reserve 1 credit, capture, use or refund it.

    With ``html``, that document is rendered instead of loading ``url`` (which then
    only labels the ledger row); its sub-resources pass the address policy in the
    browser like any page's.
    """
    if html is None:
        state.policy.check_url(url)
    # Where the capture script goes passes the same policy, before any credit.
    for target in options.goto_urls:
        state.policy.check_url(target)
    if account.balance < 1:
        raise InsufficientCredits("no credits remaining", details={"required": 1, "available": 0})
    with _doing_work(request, state, account, "capture"):
        return await _charged_capture(state, account, url, options, html)


async def _capture(state: ServiceState, url: str, options: CaptureOptions, html: str | None) -> Any:
    if html is None:
        return await state.pool.capture(url, options)
    return await state.pool.capture_html(html, options)


async def _charged_capture(
    state: ServiceState,
    account: Account,
    url: str,
    options: CaptureOptions,
    html: str | None = None,
) -> tuple[Any, int]:
    ledger = state.ledger
    # Shielded together: once the credit is reserved, this request must also hold the
    # lease, so that whatever happens next settles it (use or refund) exactly once.
    with trio.CancelScope(shield=True):
        job = await ledger.create_job(
            NewJob(
                kind="shot",
                site=url,
                urls=[(url, None)],
                account_id=account.id,
                api_key_id=account.api_key_id,
                options=options.to_json(),
                status="processing",
            )
        )
        claims = await ledger.claim(job.id, limit=1, lease_seconds=lease_seconds(options.timeout))
    claim = claims[0]
    try:
        shot = await _capture(state, url, options, html)
    except (CaptureError, URLBlocked, ValidationError) as exc:
        http_status = getattr(exc, "http_status", None)
        with trio.CancelScope(shield=True):
            await ledger.finish(claim, failed_result(exc))
            await ledger.fail_job(job.id, exc.code, exc.message)
        if isinstance(exc, (URLBlocked, ValidationError)):
            raise
        refused = _refused_input(exc)
        if refused is not None:
            raise refused from None
        # What the engine knows (a net error's name, a failed step's index) stays.
        extra = exc.details if isinstance(exc.details, dict) else {}
        raise CaptureError(
            f"failed to capture the page: {exc.message}",
            details={**extra, "reason": exc.code, "http_status": http_status},
        ) from None
    except BaseException:
        with trio.CancelScope(shield=True):
            await ledger.fail_job(job.id, CaptureError.code, "the request ended before the capture")
        raise
    digest = hashlib.sha256(shot.data).hexdigest()
    with trio.CancelScope(shield=True):
        await ledger.finish(claim, ok_result(shot, digest, "-"))
        await ledger.set_status(job.id, "completed")
    balance = (await ledger.account(account.id)).balance
    return shot, balance


#: What a rendered HTML document's ledger row is labelled with (it has no URL).
HTML_INPUT_URL: Final = "about:blank"


def _html_document(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("html must be a non-empty string", field="html")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_HTML_BYTES:
        raise ValidationError(f"html is over {MAX_HTML_BYTES // 1024} KiB of UTF-8", field="html")
    return value


def _refused_input(exc: CaptureError) -> ValidationError | None:
    """The request's own fault, found by Chromium: a value only Chromium can judge.

    An invalid CSS selector, cookie fields Chromium will not set: only Chromium's own
    parsers agree with Chromium, so the capture module tries them (before navigating)
    and names the field in ``details``. That is a 400 naming the field, not a failed
    capture (the credit is refunded either way).
    """
    details = exc.details if isinstance(exc.details, dict) else {}
    field = details.get("field")
    if type(exc) is CaptureError and isinstance(field, str):
        return ValidationError(exc.message, field=field)
    return None


def _shot_headers(shot: Any, balance: int) -> dict[str, str]:
    return {
        "X-Screenshot-Width": str(shot.width),
        "X-Screenshot-Height": str(shot.height),
        "X-Response-Time": f"{round(shot.elapsed * 1000)}ms",
        "X-Credits-Remaining": str(balance),
    }


async def screenshot_get(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    params = request.query_params
    if "url" not in params:
        raise ValidationError("url is required", field="url")
    url = _string(params["url"], "url", limit=URL_FIELD_LIMIT)
    options = _capture_options(_options_from_query(dict(params)))
    shot, balance = await _shoot(request, state, account, url, options)
    return Response(shot.data, media_type=options.mime_type, headers=_shot_headers(shot, balance))


async def screenshot_post(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    body = _object(await _json_body(request), "body")
    html: str | None = None
    if "html" in body:
        if "url" in body:
            raise ValidationError("give url or html, not both", field="html")
        html = _html_document(body["html"])
        url = HTML_INPUT_URL
    elif "url" not in body:
        raise ValidationError("url (or html) is required", field="url")
    else:
        url = _string(body["url"], "url", limit=URL_FIELD_LIMIT)
    # response_type: Pixcap's, accepted and ignored (this endpoint always answers JSON).
    rest = {
        k: v for k, v in body.items() if k not in ("url", "html", "response_type", "responseType")
    }
    options = _capture_options(rest)
    shot, balance = await _shoot(request, state, account, url, options, html)
    started = time.time() - shot.elapsed
    data = {
        "image": base64.b64encode(shot.data).decode(),
        "metadata": {
            "url": None if html is not None else url,
            "finalUrl": shot.final_url,
            "width": shot.width,
            "height": shot.height,
            "format": shot.format,
            "httpStatus": shot.http_status,
            "responseTimeMs": round(shot.elapsed * 1000),
            "timestamp": iso(started),
        },
        "credits_remaining": balance,
    }
    return JSONResponse({"success": True, "data": data}, headers=_shot_headers(shot, balance))


async def register_account(state: ServiceState, email: Any) -> tuple[Account, str]:
    """A new account with the starter credits and its first API key (``POST /register``
    and the dashboard's sign-up).

    Returns:
        The account and its API key (shown once; the ledger keeps only its hash).

    Raises:
        ValidationError: ``email`` is not a valid address.
        EmailTaken: The email is already registered.
    """
    # Checked as given (nothing stripped), as the OpenAPI document's pattern says.
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email):
        raise ValidationError("email is not a valid address", field="email")
    return await state.ledger.create_account(
        credits=state.config.starter_credits, email=email.lower()
    )


async def register(request: Request, state: ServiceState, account: Account | None) -> Response:
    body = _object(await _json_body(request), "body")
    unknown = set(body) - {"email"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    created, key = await register_account(state, body.get("email"))
    return JSONResponse(
        {
            "success": True,
            "data": {
                "message": "Account created successfully",
                "email": created.email,
                "api_key": key,
                "credits": created.balance,
            },
        },
        status_code=201,
    )


async def account_info(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    fresh = await state.ledger.account(account.id)
    in_flight = await state.ledger.jobs(
        statuses=("pending", "processing", "packaging"), kinds=("bulk",), account_id=account.id
    )
    keys = await state.ledger.keys(account.id)
    return JSONResponse(
        {
            "success": True,
            "data": {
                "email": fresh.email,
                "plan": fresh.plan,
                "credits": fresh.balance,
                "jobs_in_flight": [
                    {"job_id": j.id, "status": j.status, "total_urls": j.total} for j in in_flight
                ],
                "api_keys": [
                    {
                        "prefix": k["prefix"],
                        "active": bool(k["active"]),
                        "created_at": k["created_at"],
                        "current": k["prefix"] == account.key_prefix,
                    }
                    for k in keys
                ],
                "webhook_secret": fresh.webhook_secret,
            },
        }
    )


async def create_api_key(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    key = await state.ledger.create_key(account.id)
    return JSONResponse({"success": True, "data": {"api_key": key}}, status_code=201)


async def deactivate_api_key(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    target = request.path_params["key"]
    if not await state.ledger.revoke_key(target, account_id=account.id):
        raise InvalidAPIKey("no active key with that prefix on this account")
    return JSONResponse({"success": True, "data": {"deactivated": target[:10]}})


async def health(request: Request, state: ServiceState, account: Account | None) -> Response:
    return JSONResponse(
        {
            "success": True,
            "data": {"status": "draining" if state.draining else "ok", "version": __version__},
        },
        status_code=503 if state.draining else 200,
    )


async def openapi(request: Request, state: ServiceState, account: Account | None) -> Response:
    return JSONResponse(openapi_document(state.config.rate_limits, state.config.in_flight))


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
