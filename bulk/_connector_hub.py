"""The service's side of connectors: their tunnels, and which ones are up.

A connector (``bulk connector``, ``_connector.py``) dials one WebSocket to
``/api/v1/connectors/tunnel`` with its token (``Authorization: Bearer pxc_...``).
``serve_tunnel`` checks the token before it accepts the WebSocket, then the
connector's hello (its node token) before any frame. While the tunnel is up, a
listener on this machine's loopback (port 0, registered as bulk's own, so no page
may reach it) forwards each TCP connection through the tunnel to the connector's
Playwright browser server; the pool connects to it as to any ``bulk node``
(``BrowserPool.add_remote``), with the connector's id as the source's route, so only
that connector's account's routed captures run there (and none other).

``ConnectorHub.drop`` ends a connector's tunnel at once (its token was replaced or
it was deleted): the WebSocket is closed, the pool source removed.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ._capture import RemoteEndpoint
from ._ledger import CONNECTOR_TOKEN_PREFIX
from ._listeners import own_listener
from ._policy import EgressPolicy
from ._tunnel import Mux, TunnelError, parse_hello

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from ._capture import BrowserPool
    from ._ledger import Ledger

__all__ = ["ROUTED_POLICY", "TUNNEL_PATH", "ConnectorHub"]

log = logging.getLogger("bulk.connectors")

TUNNEL_PATH: Final = "/api/v1/connectors/tunnel"
#: The service's check of a routed capture's URL: its syntax and scheme only (the
#: connector's own policy decides which addresses its pages reach).
ROUTED_POLICY: Final = EgressPolicy(allow_private=True, allow=("0.0.0.0/0", "::/0"))
# Seconds a connector gets to send its hello once accepted.
_HELLO_TIMEOUT: Final = 10.0
# WebSocket close codes: policy violation (bad hello, protocol), server going away.
_CLOSE_PROTOCOL: Final = 1008
_CLOSE_DROPPED: Final = 4001
_CLOSE_UNAVAILABLE: Final = 1011


@final
class ConnectorHub:
    """Which connectors have a tunnel up, and the way to end one.

    Only the process serving the tunnel knows it is up: ``online`` is this process's
    view (one ``bulk serve`` per ledger).
    """

    def __init__(self) -> None:
        self._tunnels: dict[str, trio.CancelScope] = {}
        self._online: set[str] = set()

    def online(self, connector_id: str) -> bool:
        """Whether the connector's tunnel is up and its browser usable now."""
        return connector_id in self._online

    def drop(self, connector_id: str) -> None:
        """End the connector's tunnel now (no-op when it has none)."""
        self._online.discard(connector_id)
        scope = self._tunnels.pop(connector_id, None)
        if scope is not None:
            scope.cancel()

    def _register(self, connector_id: str, scope: trio.CancelScope) -> None:
        # A newer tunnel of the same connector replaces the older (it restarted, and
        # the old connection may be half-dead).
        self.drop(connector_id)
        self._tunnels[connector_id] = scope

    def _unregister(self, connector_id: str, scope: trio.CancelScope) -> None:
        if self._tunnels.get(connector_id) is scope:
            del self._tunnels[connector_id]
            self._online.discard(connector_id)

    async def serve_tunnel(self, websocket: WebSocket, ledger: Ledger, pool: BrowserPool) -> None:
        """Serve one connector's tunnel until it ends or is dropped.

        A missing or unknown token is refused before the WebSocket is accepted (the
        connector sees HTTP 403); a bad hello or a broken frame closes it.

        Cancellation/Resource handling:
            The pool source, the forwarding listener and every channel are closed
            when the tunnel ends, however it ends (shielded, bounded).
        """
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        token = token.strip()
        connector = None
        if (
            scheme.lower() == "bearer"
            and token.startswith(CONNECTOR_TOKEN_PREFIX)
            and len(token) <= 200
        ):
            connector = await ledger.connector_by_token(token)
        if connector is None:
            await websocket.close(code=_CLOSE_PROTOCOL)
            return
        await websocket.accept()
        try:
            with trio.fail_after(_HELLO_TIMEOUT):
                message = await websocket.receive()
            node_token = parse_hello(message.get("text"))
        except (trio.TooSlowError, TunnelError) as exc:
            log.warning("connector %s: %s", connector.id, exc or "no hello in time")
            await _close(websocket, _CLOSE_PROTOCOL, "the first message must be the hello")
            return
        scope = trio.CancelScope()
        self._register(connector.id, scope)
        why = "the tunnel ended"
        code = _CLOSE_DROPPED
        mux = Mux(websocket.send_bytes)
        try:
            with scope:
                why, code = await self._run(
                    websocket, mux, ledger, pool, connector.id, node_token, scope
                )
            if scope.cancelled_caught:
                why = "the connector's token was replaced or the connector deleted"
        finally:
            self._unregister(connector.id, scope)
            with trio.CancelScope(shield=True), trio.move_on_after(15):
                mux.close_all()
                await pool.remove_route(connector.id, owner=scope)
                await _close(websocket, code, why)
                await ledger.connector_seen(connector.id)
            log.info("connector %s: %s", connector.id, why)

    async def _run(
        self,
        websocket: WebSocket,
        mux: Mux,
        ledger: Ledger,
        pool: BrowserPool,
        connector_id: str,
        node_token: str,
        owner: trio.CancelScope,
    ) -> tuple[str, int]:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        outcome: list[tuple[str, int]] = []
        with own_listener("127.0.0.1", port):
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    try:
                        while True:
                            message = await websocket.receive()
                            if message["type"] == "websocket.disconnect":
                                outcome.append(("the connector disconnected", _CLOSE_DROPPED))
                                break
                            data = message.get("bytes")
                            if data is None:
                                raise TunnelError("a text message inside the tunnel")
                            await mux.feed(data)
                    except TunnelError as exc:
                        outcome.append((f"protocol error: {exc}", _CLOSE_PROTOCOL))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                nursery.start_soon(_serve_forwards, listeners, mux)
                endpoint = RemoteEndpoint(f"ws://127.0.0.1:{port}/{node_token}")
                try:
                    await pool.add_remote(endpoint, route=connector_id, owner=owner)
                except Exception as exc:  # BrowserUnavailable, BrowserRefused
                    message = getattr(exc, "message", None) or str(exc)
                    outcome.append((f"its browser is not usable: {message}", _CLOSE_UNAVAILABLE))
                    nursery.cancel_scope.cancel()
                    return outcome[0]
                self._online.add(connector_id)
                await ledger.connector_seen(connector_id)
                ack = json.dumps({"ok": True, "connector_id": connector_id})
                async with mux.send_lock:
                    await websocket.send_text(ack)
                log.info("connector %s: online", connector_id)
        return outcome[0] if outcome else ("the tunnel ended", _CLOSE_DROPPED)


async def _serve_forwards(listeners: list[trio.SocketListener], mux: Mux) -> None:
    """Forward every connection accepted on ``listeners`` through the tunnel."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, mux, nursery)


async def _accept_loop(listener: trio.SocketListener, mux: Mux, nursery: trio.Nursery) -> None:
    async with listener:
        while True:
            stream = await listener.accept()
            nursery.start_soon(mux.serve_stream, stream)


async def _close(websocket: Any, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason[:120])
    except Exception:  # already closed, or the connection is gone: nothing to close
        return
