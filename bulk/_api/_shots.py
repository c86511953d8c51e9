"""The single-screenshot endpoint: one charged capture of a URL or an HTML document."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._connector_hub import ROUTED_POLICY
from .._exceptions import (
    CaptureError,
    ConnectorOffline,
    ConnectorTimeout,
    InsufficientCredits,
    URLBlocked,
    ValidationError,
)
from .._ledger import Account, NewJob, iso
from .._openapi import (
    MAX_HTML_BYTES,
    URL_FIELD_LIMIT,
)
from .._options import CaptureOptions, lease_seconds
from .._results import failed_result, ok_result
from ._connectors import connector_param, own_connector, routed_connector
from ._core import (
    ServiceState,
    _capture_options,
    _doing_work,
    _json_body,
    _object,
    _options_from_query,
    _string,
)


async def _shoot(
    request: Request,
    state: ServiceState,
    account: Account,
    url: str,
    options: CaptureOptions,
    html: str | None = None,
    connector: str | None = None,
) -> tuple[Any, int]:
    """One charged capture: reserve 1 credit, capture, use or refund it.

    With ``html``, that document is rendered instead of loading ``url`` (which then
    only labels the ledger row); its sub-resources pass the address policy in the
    browser like any page's.

    With ``connector`` (the request's ``connector_id``), the capture runs only on that
    connector, which must be the caller's (``CONNECTOR_NOT_FOUND``) and connected
    (``CONNECTOR_OFFLINE``, before any credit); the URL then passes the service's
    syntax and scheme checks only: the connector's own policy rules its network.
    """
    policy = state.policy
    if connector is not None:
        await own_connector(state, account, connector)
        policy = ROUTED_POLICY
    if html is None:
        policy.check_url(url)
    # Where the capture script goes passes the same policy, before any credit.
    for target in options.goto_urls:
        policy.check_url(target)
    if account.balance < 1:
        raise InsufficientCredits("no credits remaining", details={"required": 1, "available": 0})
    if connector is not None:
        connector = await routed_connector(state, account, connector)
    with _doing_work(request, state, account, "capture"):
        return await _charged_capture(state, account, url, options, html, connector)


async def _capture(
    state: ServiceState,
    url: str,
    options: CaptureOptions,
    html: str | None,
    connector: str | None = None,
) -> Any:
    if html is None:
        return await state.pool.capture(url, options, route=connector)
    return await state.pool.capture_html(html, options, route=connector)


async def _charged_capture(
    state: ServiceState,
    account: Account,
    url: str,
    options: CaptureOptions,
    html: str | None = None,
    connector: str | None = None,
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
                connector_id=connector,
            )
        )
        claims = await ledger.claim(job.id, limit=1, lease_seconds=lease_seconds(options.timeout))
    claim = claims[0]
    try:
        shot = await _capture(state, url, options, html, connector)
    except (CaptureError, URLBlocked, ValidationError) as exc:
        http_status = getattr(exc, "http_status", None)
        with trio.CancelScope(shield=True):
            await ledger.finish(claim, failed_result(exc))
            await ledger.fail_job(job.id, exc.code, exc.message)
        if isinstance(exc, (URLBlocked, ValidationError, ConnectorOffline, ConnectorTimeout)):
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


def _shot_headers(shot: Any, balance: int, connector: str | None = None) -> dict[str, str]:
    headers = {
        "X-Screenshot-Width": str(shot.width),
        "X-Screenshot-Height": str(shot.height),
        "X-Response-Time": f"{round(shot.elapsed * 1000)}ms",
        "X-Credits-Remaining": str(balance),
    }
    if connector is not None:
        headers["X-Connector-Used"] = connector
    return headers


async def screenshot_get(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    params = request.query_params
    if "url" not in params:
        raise ValidationError("url is required", field="url")
    url = _string(params["url"], "url", limit=URL_FIELD_LIMIT)
    query = dict(params)
    connector = connector_param(query)
    query.pop("connector_id", None)
    query.pop("connectorId", None)
    options = _capture_options(_options_from_query(query))
    shot, balance = await _shoot(request, state, account, url, options, connector=connector)
    return Response(
        shot.data, media_type=options.mime_type, headers=_shot_headers(shot, balance, connector)
    )


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
    connector = connector_param(body)
    skip = ("url", "html", "response_type", "responseType", "connector_id", "connectorId")
    rest = {k: v for k, v in body.items() if k not in skip}
    options = _capture_options(rest)
    shot, balance = await _shoot(request, state, account, url, options, html, connector)
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
    return JSONResponse(
        {"success": True, "data": data}, headers=_shot_headers(shot, balance, connector)
    )
