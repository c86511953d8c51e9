"""The connector endpoints (Pixcap's "VPN connectors"): create one (its token shown
once), list them (online/offline, last seen), delete one, give one a new token; and
``routed_connector``, the check a capture request with ``connector_id`` passes.

Another account's connector id is ``CONNECTOR_NOT_FOUND``, exactly as a missing one.
Deleting a connector or replacing its token ends its tunnel at once
(``ConnectorHub.drop``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from .._exceptions import ConnectorNotFound, ConnectorOffline, ValidationError
from .._ledger import Account, ConnectorRow
from ._core import ServiceState, _json_body, _object, _string

__all__ = [
    "CONNECTOR_ID_PATTERN",
    "connector_param",
    "create_connector",
    "delete_connector",
    "list_connectors",
    "regenerate_token",
    "routed_connector",
    "tunnel",
]

CONNECTOR_ID_PATTERN: Final = r"^conn_[0-9a-f]{16}$"
_CONNECTOR_ID: Final = re.compile(CONNECTOR_ID_PATTERN)
#: A connector's name, at most this many characters.
MAX_NAME: Final = 200


def _body(row: ConnectorRow, state: ServiceState) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": "online" if state.hub.online(row.id) else "offline",
        "last_seen": row.last_seen,
        "created_at": row.created_at,
    }


async def _own(request: Request, state: ServiceState, account: Account) -> ConnectorRow:
    return await own_connector(state, account, request.path_params["connector_id"])


async def own_connector(state: ServiceState, account: Account, connector_id: str) -> ConnectorRow:
    """The account's connector ``connector_id``.

    Raises:
        ConnectorNotFound: Malformed, missing, deleted or another account's.
    """
    row = None
    if _CONNECTOR_ID.match(connector_id):
        row = await state.ledger.connector(account.id, connector_id)
    if row is None:
        raise ConnectorNotFound(f"connector {connector_id[:40]} not found")
    return row


def connector_param(data: Mapping[str, Any]) -> str | None:
    """The ``connector_id`` (or ``connectorId``) of a request, if it names one.

    Raises:
        ValidationError: Given twice, or not a non-empty string.
    """
    present = [k for k in ("connector_id", "connectorId") if k in data]
    if not present:
        return None
    if len(present) > 1:
        raise ValidationError("connector_id given twice", field="connector_id")
    return _string(data[present[0]], "connector_id", limit=64)


async def routed_connector(state: ServiceState, account: Account, connector_id: str) -> str:
    """Check that a capture may be routed to ``connector_id`` now; its id.

    Raises:
        ConnectorNotFound: Not the caller's account's connector.
        ConnectorOffline: Its tunnel is not up.
    """
    row = await own_connector(state, account, connector_id)
    if not state.hub.online(row.id):
        raise ConnectorOffline(f"connector {row.id} is not connected")
    return row.id


async def create_connector(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    body = _object(await _json_body(request), "body")
    unknown = set(body) - {"name"}
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"unknown field {name!r}", field=name)
    if "name" not in body:
        raise ValidationError("name is required", field="name")
    name = _string(body["name"], "name", limit=MAX_NAME)
    row, token = await state.ledger.create_connector(account.id, name)
    data = {**_body(row, state), "token": token}
    return JSONResponse({"success": True, "data": data}, status_code=201)


async def list_connectors(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    rows = await state.ledger.connectors(account.id)
    return JSONResponse({"success": True, "data": [_body(r, state) for r in rows]})


async def delete_connector(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    row = await _own(request, state, account)
    if not await state.ledger.delete_connector(account.id, row.id):
        raise ConnectorNotFound(f"connector {row.id} not found")
    state.hub.drop(row.id)
    return JSONResponse({"success": True, "data": {"id": row.id, "deleted": True}})


async def regenerate_token(
    request: Request, state: ServiceState, account: Account | None
) -> Response:
    assert account is not None
    row = await _own(request, state, account)
    token = await state.ledger.regenerate_connector_token(account.id, row.id)
    if token is None:
        raise ConnectorNotFound(f"connector {row.id} not found")
    # The old token's tunnel ends now, not at its next reconnect.
    state.hub.drop(row.id)
    return JSONResponse({"success": True, "data": {"id": row.id, "token": token}})


async def tunnel(websocket: WebSocket, state: ServiceState) -> None:
    """``/api/v1/connectors/tunnel``: a connector's WebSocket (``ConnectorHub``)."""
    await state.hub.serve_tunnel(websocket, state.ledger, state.pool)
