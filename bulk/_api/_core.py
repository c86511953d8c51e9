"""What every endpoint shares: the service's state, request parsing, the response
bodies, and ``_Endpoint`` (auth, rate limits and the error envelope, in the documented
order)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._capture import BrowserPool
from .._connector_hub import ConnectorHub
from .._exceptions import (
    APIKeyRequired,
    BulkError,
    InvalidURL,
    PayloadTooLarge,
    RateLimitExceeded,
    URLBlocked,
    ValidationError,
    error_table,
)
from .._fetch import Fetcher
from .._jobs import JobRunner
from .._ledger import Account, JobRow, Ledger, iso
from .._openapi import (
    EMAIL_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BODY,
    MAX_LARGE_BODY,
    MAX_PAGES_API,
)
from .._options import OPTION_SPECS, CaptureOptions
from .._policy import EgressPolicy
from .._ratelimit import IN_FLIGHT_LIMITS, RATE_LIMITS, InFlight, Limiter, RateLimit
from .._urls import site_candidates

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
    #: Seconds between every schedule's slots (``BULK_SCHEDULE_SECONDS``, tests and
    #: operators only); None: as each schedule's ``every`` says.
    schedule_seconds: float | None = None


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
    #: The connectors whose tunnels this process serves.
    hub: ConnectorHub = attrs.field(factory=ConnectorHub)
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

    The endpoints that take a URL list (``/bulk-screenshot``, ``/schedules``) or an
    HTML document (``/screenshot``) take up to ``MAX_LARGE_BODY`` bytes.

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
        if request.url.path.endswith(("/bulk-screenshot", "/screenshot", "/schedules"))
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
