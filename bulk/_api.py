"""The HTTP API (Starlette): Pixcap's bulk-screenshot shapes on top of bulk's pipeline.

Every endpoint goes through ``_Endpoint``, which does the checks in the documented
order (auth, rate limit, then the handler's validation, URL policy, credits), maps
every ``BulkError`` to the JSON error envelope with its status, adds the
``X-RateLimit-*`` headers, and gives back the rate-limit slot when the request was
rejected. No stack trace ever reaches a client; API keys never reach a log line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import __version__
from ._capture import BrowserPool
from ._discover import DiscoverLimits, discover_all
from ._exceptions import (
    APIKeyRequired,
    BulkError,
    CaptureError,
    DownloadExpired,
    InsufficientCredits,
    InvalidAPIKey,
    InvalidURL,
    JobNotFound,
    JobNotReady,
    PayloadTooLarge,
    RateLimitExceeded,
    URLBlocked,
    ValidationError,
)
from ._fetch import Fetcher
from ._jobs import JobRunner, failed_result, ok_result
from ._ledger import Account, JobRow, Ledger, NewJob, iso
from ._options import OPTION_SPECS, CaptureOptions
from ._paths import Layout, root_folder
from ._policy import EgressPolicy
from ._urls import site_candidates

__all__ = ["RATE_LIMITS", "ApiConfig", "RateLimit", "ServiceState", "create_app", "status_of"]

log = logging.getLogger("bulk.api")

MAX_BODY: Final = 64 * 1024
STARTER_CREDITS: Final = 100
MAX_PAGES_API: Final = 100

_STATUS: Final[Mapping[str, int]] = {
    "API_KEY_REQUIRED": 401,
    "INVALID_API_KEY": 401,
    "INSUFFICIENT_CREDITS": 402,
    "VALIDATION_ERROR": 400,
    "INVALID_URL": 400,
    "URL_BLOCKED": 400,
    "NO_SITEMAP_FOUND": 400,
    "NO_URLS_FOUND": 400,
    "INVALID_SITEMAP": 400,
    "FETCH_ERROR": 400,
    "RESPONSE_TOO_LARGE": 400,
    "DISCOVERY_ERROR": 400,
    "JOB_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "JOB_NOT_READY": 409,
    "KEY_LIMIT_REACHED": 409,
    "EMAIL_TAKEN": 409,
    "DOWNLOAD_EXPIRED": 410,
    "PAYLOAD_TOO_LARGE": 413,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "RATE_LIMIT_EXCEEDED": 429,
    "CAPTURE_ERROR": 500,
    "INTERNAL_ERROR": 500,
    "CHROMIUM_NOT_FOUND": 503,
}


def status_of(code: str) -> int:
    """The HTTP status the API answers with for an error code."""
    return _STATUS.get(code, 500)


@attrs.frozen
class RateLimit:
    limit: int
    window: float  # seconds


#: Pixcap's published limits.
RATE_LIMITS: Final[Mapping[str, RateLimit]] = {
    "general": RateLimit(100, 60),
    "screenshot": RateLimit(60, 60),
    "bulk": RateLimit(10, 3600),
    "register": RateLimit(10, 900),
}


@attrs.frozen(kw_only=True)
class ApiConfig:
    """Knobs of the HTTP layer (tests shrink them)."""

    rate_limits: Mapping[str, RateLimit] = RATE_LIMITS
    discovery_timeout: float = 60.0
    starter_credits: int = STARTER_CREDITS
    clock: Callable[[], float] = time.time


@final
class _Window:
    """Sliding-window counter for one (bucket, subject)."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()


@final
class _Limiter:
    """In-memory sliding-window rate limits. A slot is taken when a request passes
    the check and given back if the request is then rejected (4xx/5xx), so rejected
    requests do not count."""

    def __init__(self, limits: Mapping[str, RateLimit], clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.windows: dict[tuple[str, str], _Window] = {}

    def take(self, bucket: str, subject: str) -> tuple[float, dict[str, str]]:
        """Take a slot; returns its timestamp and the headers to send.

        Raises:
            RateLimitExceeded: The window is full (the request takes no slot).
        """
        rule = self.limits[bucket]
        now = self.clock()
        window = self.windows.setdefault((bucket, subject), _Window())
        while window.times and window.times[0] <= now - rule.window:
            window.times.popleft()
        if len(window.times) >= rule.limit:
            reset = window.times[0] + rule.window
            retry = max(1, math.ceil(reset - now))
            raise RateLimitExceeded(
                f"rate limit of {rule.limit} requests per {_span(rule.window)} exceeded",
                retry_after=retry,
                details={"limit": rule.limit, "window_seconds": int(rule.window)},
            )
        window.times.append(now)
        return now, self._headers(rule, window, now)

    def give_back(self, bucket: str, subject: str, stamp: float) -> None:
        window = self.windows.get((bucket, subject))
        if window is not None:
            with contextlib.suppress(ValueError):
                window.times.remove(stamp)

    def peek_headers(self, bucket: str, subject: str) -> dict[str, str]:
        rule = self.limits[bucket]
        window = self.windows.setdefault((bucket, subject), _Window())
        return self._headers(rule, window, self.clock())

    @staticmethod
    def _headers(rule: RateLimit, window: _Window, now: float) -> dict[str, str]:
        reset = (window.times[0] + rule.window) if window.times else now + rule.window
        return {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Remaining": str(max(0, rule.limit - len(window.times))),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        n = int(seconds // 3600)
        return "hour" if n == 1 else f"{n} hours"
    if seconds % 60 == 0:
        n = int(seconds // 60)
        return "minute" if n == 1 else f"{n} minutes"
    return f"{seconds:g} seconds"


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
    return JSONResponse(_error_body(exc), status_code=status_of(exc.code), headers=headers)


async def _json_body(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
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
        if spec.kind == "int":
            if not re.fullmatch(r"-?\d{1,9}", raw):
                raise ValidationError(f"{key} must be an integer", field=key)
            value = int(raw)
        elif spec.kind == "float":
            try:
                value = float(raw)
            except ValueError:
                raise ValidationError(f"{key} must be a number", field=key) from None
        elif spec.kind == "bool":
            if raw.lower() not in _GET_BOOL:
                raise ValidationError(f"{key} must be true or false", field=key)
            value = _GET_BOOL[raw.lower()]
        elif spec.kind == "str_list":
            value = [s for s in raw.split(",") if s.strip()]
        elif spec.kind in ("cookies", "headers"):
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


# URL fields take more than the URL limit so that an over-long URL is judged by the
# URL rules (INVALID_URL), not by the generic string check.
_URL_FIELD_LIMIT: Final = 16 * 1024
_IDEMPOTENCY_KEY: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


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


@final
class _Endpoint:
    """Auth -> rate limits -> handler; errors to the envelope; headers; slot refunds."""

    def __init__(
        self,
        state: ServiceState,
        limiter: _Limiter,
        handler: Handler,
        *,
        bucket: str | None,
        auth: bool = True,
    ) -> None:
        self.state = state
        self.limiter = limiter
        self.handler = handler
        self.bucket = bucket
        self.auth = auth

    async def __call__(self, request: Request) -> Response:
        taken: list[tuple[str, str, float]] = []
        headers: dict[str, str] = {}
        started = time.monotonic()
        try:
            account: Account | None = None
            if self.auth:
                key = _api_key(request)
                if key is None:
                    raise APIKeyRequired(
                        "an API key is required (X-API-Key header, Bearer token or ?api_key=)"
                    )
                account = await self.state.ledger.authenticate(key)
                subject = f"key:{account.api_key_id}"
                for bucket in ("general", self.bucket):
                    if bucket is None:
                        continue
                    try:
                        stamp, hdrs = self.limiter.take(bucket, subject)
                    except RateLimitExceeded:
                        headers = self.limiter.peek_headers(bucket, subject)
                        raise
                    taken.append((bucket, subject, stamp))
                    headers = hdrs
            elif self.bucket is not None:
                subject = f"ip:{request.client.host if request.client else '?'}"
                try:
                    stamp, headers = self.limiter.take(self.bucket, subject)
                except RateLimitExceeded:
                    headers = self.limiter.peek_headers(self.bucket, subject)
                    raise
                taken.append((self.bucket, subject, stamp))
            response = await self.handler(request, self.state, account)
        except BulkError as exc:
            response = _error(exc)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            response = _error(BulkError("internal error"))
        if response.status_code >= 400:
            for bucket, subject, stamp in taken:
                self.limiter.give_back(bucket, subject, stamp)
            # After a 429 the headers already describe the exhausted bucket.
            if taken and response.status_code != 429:
                headers = self.limiter.peek_headers(taken[-1][0], taken[-1][1])
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
        "options",
        "webhook_url",
        "webhookUrl",
    }
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    site_field = [k for k in ("url", "sitemap_url", "sitemapUrl") if k in body]
    if len(site_field) != 1:
        raise ValidationError("give exactly one of url or sitemap_url", field="url")
    field = site_field[0]
    target = _string(body[field], field, limit=_URL_FIELD_LIMIT)
    options_raw = _object(body.get("options", {}), "options")
    max_pages = _max_pages(options_raw)
    options = _capture_options(options_raw, "options.")
    webhook_fields = [k for k in ("webhook_url", "webhookUrl") if k in body]
    if len(webhook_fields) > 1:
        raise ValidationError("webhook_url given twice", field="webhook_url")
    webhook = (
        _string(body[webhook_fields[0]], "webhook_url", limit=_URL_FIELD_LIMIT)
        if webhook_fields
        else None
    )
    idem = request.headers.get("idempotency-key")
    if idem is not None and not _IDEMPOTENCY_KEY.match(idem):
        raise ValidationError(
            "Idempotency-Key must be 1-255 characters of A-Z a-z 0-9 _ . : -",
            field="Idempotency-Key",
        )
    # URL policy, before any request is made.
    _check_target(state.policy, target, field)
    if webhook is not None:
        state.policy.check_url(webhook)
    request_hash = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    if idem is not None:
        earlier = await state.ledger.find_idempotent(account.id, idem, request_hash)
        if earlier is not None:
            balance = (await state.ledger.account(account.id)).balance
            return JSONResponse(
                _created_body(earlier, balance),
                status_code=202,
                headers={"Idempotent-Replayed": "true"},
            )
    if account.balance < 1:
        raise InsufficientCredits(
            "no credits remaining", details={"required": 1, "available": account.balance}
        )
    limits = DiscoverLimits(max_pages=max_pages, total_timeout=state.config.discovery_timeout)
    urls, found = await discover_all(
        target, state.fetcher, limits, sitemap=True if field != "url" else None
    )
    layout = Layout(options.extension)
    entries = [(u, layout.assign(u)) for u in urls]
    site = found.site or site_candidates(target)[0].origin
    job = await state.ledger.create_job(
        NewJob(
            kind="bulk",
            site=site,
            urls=entries,
            account_id=account.id,
            api_key_id=account.api_key_id,
            sitemap_urls=found.sitemaps,
            options=options.to_json(),
            root=root_folder(site, date.today()),
            idempotency_key=idem,
            request_hash=request_hash,
            webhook_url=webhook,
        )
    )
    state.runner.wake()
    balance = (await state.ledger.account(account.id)).balance
    headers = {"Idempotent-Replayed": "true"} if job.replayed else {}
    return JSONResponse(_created_body(job, balance), status_code=202, headers=headers)


async def job_status(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    job = await _own_job(request, state, account)
    return JSONResponse({"success": True, "data": job_status_body(job)})


async def _own_job(request: Request, state: ServiceState, account: Account) -> JobRow:
    job_id = request.path_params["job_id"]
    if not re.fullmatch(r"[0-9a-f-]{36}", job_id):
        raise JobNotFound(f"job {job_id[:40]} not found")
    job = await state.ledger.job(job_id, account_id=account.id)
    if job.kind != "bulk":
        raise JobNotFound(f"job {job_id} not found")
    return job


async def download(request: Request, state: ServiceState, account: Account | None) -> Response:
    assert account is not None
    job = await _own_job(request, state, account)
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
    state: ServiceState, account: Account, url: str, options: CaptureOptions
) -> tuple[Any, int]:
    """One charged capture: reserve 1 credit, capture, use or refund it."""
    state.policy.check_url(url)
    if account.balance < 1:
        raise InsufficientCredits("no credits remaining", details={"required": 1, "available": 0})
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
        claims = await ledger.claim(job.id, limit=1, lease_seconds=options.timeout / 1000 * 3 + 60)
    claim = claims[0]
    try:
        shot = await state.pool.capture(url, options)
    except (CaptureError, URLBlocked) as exc:
        http_status = getattr(exc, "http_status", None)
        with trio.CancelScope(shield=True):
            await ledger.finish(claim, failed_result(exc))
            await ledger.fail_job(job.id, exc.code, exc.message)
        if isinstance(exc, URLBlocked):
            raise
        raise CaptureError(
            f"failed to capture the page: {exc.message}",
            details={"reason": exc.code, "http_status": http_status},
        ) from None
    except BaseException:
        with trio.CancelScope(shield=True):
            await ledger.fail_job(job.id, "CAPTURE_ERROR", "the request ended before the capture")
        raise
    digest = hashlib.sha256(shot.data).hexdigest()
    with trio.CancelScope(shield=True):
        await ledger.finish(claim, ok_result(shot, digest, "-"))
        await ledger.set_status(job.id, "completed")
    balance = (await ledger.account(account.id)).balance
    return shot, balance


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
    url = _string(params["url"], "url", limit=_URL_FIELD_LIMIT)
    options = _capture_options(_options_from_query(dict(params)))
    shot, balance = await _shoot(state, account, url, options)
    return Response(shot.data, media_type=options.mime_type, headers=_shot_headers(shot, balance))


async def screenshot_post(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    body = _object(await _json_body(request), "body")
    if "url" not in body:
        raise ValidationError("url is required", field="url")
    url = _string(body["url"], "url", limit=_URL_FIELD_LIMIT)
    rest = {k: v for k, v in body.items() if k not in ("url", "response_type", "responseType")}
    options = _capture_options(rest)
    shot, balance = await _shoot(state, account, url, options)
    started = time.time() - shot.elapsed
    data = {
        "image": base64.b64encode(shot.data).decode(),
        "metadata": {
            "url": url,
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


async def register(request: Request, state: ServiceState, account: Account | None) -> Response:
    body = _object(await _json_body(request), "body")
    unknown = set(body) - {"email"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    email = _string(body.get("email"), "email", limit=254).lower()
    if not _EMAIL.match(email):
        raise ValidationError("email is not a valid address", field="email")
    created, key = await state.ledger.create_account(
        credits=state.config.starter_credits, email=email
    )
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
    from ._openapi import openapi_document

    return JSONResponse(openapi_document(state.config))


def create_app(state: ServiceState) -> Starlette:
    """The Starlette application for ``state`` (mounted at the root; paths under /api/v1)."""
    limiter = _Limiter(state.config.rate_limits, state.config.clock)

    def ep(
        handler: Handler, bucket: str | None, *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        # A bound method (not the instance): Starlette then treats it as a request
        # handler rather than as a raw ASGI app.
        return _Endpoint(state, limiter, handler, bucket=bucket, auth=auth).__call__

    base = "/api/v1"
    routes = [
        Route(f"{base}/bulk-screenshot", ep(create_bulk, "bulk"), methods=["POST"]),
        Route(f"{base}/bulk-screenshot/{{job_id}}/status", ep(job_status, None), methods=["GET"]),
        Route(f"{base}/bulk-screenshot/{{job_id}}/download", ep(download, None), methods=["GET"]),
        Route(f"{base}/screenshot", ep(screenshot_get, "screenshot"), methods=["GET"]),
        Route(f"{base}/screenshot", ep(screenshot_post, "screenshot"), methods=["POST"]),
        Route(f"{base}/register", ep(register, "register", auth=False), methods=["POST"]),
        Route(f"{base}/account", ep(account_info, None), methods=["GET"]),
        Route(f"{base}/api-keys", ep(create_api_key, None), methods=["POST"]),
        Route(f"{base}/api-keys/{{key}}", ep(deactivate_api_key, None), methods=["DELETE"]),
        Route(f"{base}/health", ep(health, None, auth=False), methods=["GET"]),
        Route(f"{base}/openapi.json", ep(openapi, None, auth=False), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        code = "METHOD_NOT_ALLOWED" if status == 405 else "NOT_FOUND"
        err = BulkError("no such endpoint" if status == 404 else "method not allowed")
        body = _error_body(err)
        body["error"]["code"] = code
        return JSONResponse(body, status_code=status)

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
        if scope["type"] != "http":
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
