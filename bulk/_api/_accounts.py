"""Accounts and keys: register, account info, API keys; health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._exceptions import (
    InvalidAPIKey,
    ValidationError,
)
from .._ledger import Account
from .._openapi import (
    openapi_document,
)
from .._version import __version__
from ._core import (
    _EMAIL,
    ServiceState,
    _json_body,
    _object,
)


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
            "data": {
                "status": "draining" if state.draining else "ok",
                "version": __version__,
                # Each browser source: slots, captures in flight, up or not, last error.
                "browsers": [source.to_json() for source in state.pool.sources()],
            },
        },
        status_code=503 if state.draining else 200,
    )


async def openapi(request: Request, state: ServiceState, account: Account | None) -> Response:
    return JSONResponse(openapi_document(state.config.rate_limits, state.config.in_flight))
