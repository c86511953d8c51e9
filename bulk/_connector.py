"""``bulk connector``: a capture node inside a private network that dials out.

It runs what ``bulk node`` runs (``_node.run_node``: Playwright's browser server with
a secret path, behind bulk's egress proxy with the connector's own address policy),
on its loopback only, and opens one outbound WebSocket to the service
(``/api/v1/connectors/tunnel``, the token in the ``Authorization`` header, never in
the URL). The service opens channels through it to the browser server
(``_tunnel``): nothing listens for the network on the connector's machine.

The tunnel is dialled again whenever it ends, after an exponential backoff (capped,
with jitter), also when the service refuses the token: a replaced or deleted
connector's token never gets in again, and the connector keeps saying so.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Final, final
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ._connector_hub import TUNNEL_PATH
from ._exceptions import ValidationError
from ._ledger import CONNECTOR_TOKEN_PREFIX
from ._node import NodeConfig, new_token, run_node
from ._policy import EgressPolicy
from ._tunnel import MAX_FRAME, TARGET_BROWSER, Mux, TunnelError, hello

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

__all__ = [
    "PRIVATE_NETWORKS",
    "ConnectorConfig",
    "backoff_delay",
    "open_tunnel",
    "run_connector",
    "tunnel_url",
]

log = logging.getLogger("bulk.connector")

#: What a connector's pages may reach by default: the private networks (RFC 1918,
#: carrier-grade NAT, IPv6 unique-local). Not link-local (cloud metadata) and not the
#: connector's machine itself (its own listeners stay refused whatever is allowed).
PRIVATE_NETWORKS: Final = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                           "fc00::/7")  # fmt: skip
# Seconds before dialling again: doubling from the first, capped at the last.
_BACKOFF_FIRST: Final = 1.0
_BACKOFF_CAP: Final = 60.0
_CONNECT_TIMEOUT: Final = 30.0


def backoff_delay(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before dial ``attempt`` (0-based) again: ``1, 2, 4...`` capped at
    60, each scaled by a random factor in [0.5, 1) so that connectors restarted
    together do not dial together."""
    base: float = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2.0 ** min(attempt, 16))
    return base * (0.5 + rand() / 2)


def tunnel_url(server: str) -> str:
    """The tunnel's WebSocket URL for the service at ``server`` (http(s) or ws(s)).

    Raises:
        ValidationError: Not an http(s)/ws(s) URL with a host (field ``server``).
    """
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname or parts.username or parts.password:
        raise ValidationError(
            f"--server must be the service's http(s):// URL, not {server!r}", field="server"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TUNNEL_PATH, "", ""))


@final
@attrs.frozen(kw_only=True)
class ConnectorConfig:
    """How a connector runs.

    Args:
        server: The service's URL (``https://bulk.example.com``).
        token: The connector's token (``pxc_...``).
        executable: The Chromium binary.
        policy: The connector's address policy (its pages' every connection).
    """

    server: str
    token: str = attrs.field(repr=False)
    executable: str
    policy: EgressPolicy

    @token.validator
    def _check_token(self, _: object, value: str) -> None:
        if not value.startswith(CONNECTOR_TOKEN_PREFIX) or not 8 < len(value) <= 200:
            raise ValidationError("the token must be a connector token (pxc_...)", field="token")


async def run_connector(
    config: ConnectorConfig,
    *,
    on_status: Callable[[str], None] = lambda _: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the connector until cancelled; ``task_status.started()`` once its browser
    server runs (before the first dial).

    Args:
        on_status: Told, in one line, each time the tunnel comes up or ends.

    Raises:
        BrowserUnavailable: The browser server did not start.
        ValidationError: ``config.server`` is not an http(s) URL.

    Cancellation:
        The tunnel is closed, the browser server stopped (``run_node``).
    """
    url = tunnel_url(config.server)
    node_token = new_token()
    node = NodeConfig(
        host="127.0.0.1", port=0, token=node_token, executable=config.executable,
        policy=config.policy,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        endpoint: str = await nursery.start(run_node, node)
        port = int(urlsplit(endpoint).port or 0)
        task_status.started()
        attempt = 0
        while True:
            up = await _dial(url, config.token, node_token, port, on_status)
            attempt = 0 if up else attempt + 1
            await trio.sleep(backoff_delay(attempt))


async def _dial(
    url: str, token: str, node_token: str, port: int, on_status: Callable[[str], None]
) -> bool:
    """One tunnel, served until it ends; whether the service accepted it."""
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

    async def opener(target: int) -> trio.abc.Stream:
        if target != TARGET_BROWSER:
            raise ValueError(f"unknown target {target}")
        return await trio.open_tcp_stream("127.0.0.1", port)

    accepted = False
    try:
        async with open_tunnel(url, token) as ws, trio.open_nursery() as nursery:
            await ws.send_message(hello(node_token))

            async def send(message: bytes) -> None:
                await ws.send_message(message)

            mux = Mux(send, opener=opener, nursery=nursery)
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    facts = json.loads(message)
                    accepted = True
                    on_status(f"online as {facts.get('connector_id')}")
                    continue
                await mux.feed(message)
    except* ConnectionRejected as group:
        status = getattr(group.exceptions[0], "status_code", "?")
        on_status(f"the service refused the token (HTTP {status})")
    except* ConnectionClosed as group:
        reason = getattr(group.exceptions[0], "reason", None)
        why = getattr(reason, "reason", None) or getattr(reason, "name", "closed")
        on_status(f"the tunnel ended: {why}")
    except* TunnelError as group:
        on_status(f"protocol error: {group.exceptions[0]}")
    except* (HandshakeError, OSError, ValueError) as group:
        on_status(f"cannot reach the service: {group.exceptions[0]}")
    return accepted


@asynccontextmanager
async def open_tunnel(url: str, token: str) -> AsyncIterator[WebSocketConnection]:
    """The WebSocket to the service's tunnel endpoint ``url``, the token in its
    ``Authorization`` header.

    The TCP (or TLS) stream is opened here and always closed here: trio-websocket's
    own ``open_websocket_url`` leaves the socket of a refused handshake open.

    Raises:
        ConnectionRejected: The service refused the token (HTTP 403).
        HandshakeError, OSError: The service could not be reached.
    """
    from trio_websocket import ConnectionRejected, wrap_client_stream

    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    with trio.fail_after(_CONNECT_TIMEOUT):
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl.create_default_context(), https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        async with _unwrapped(ConnectionRejected), trio.open_nursery() as nursery:
            with trio.fail_after(_CONNECT_TIMEOUT):
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    parts.netloc,
                    resource,
                    extra_headers=[(b"authorization", f"Bearer {token}".encode())],
                    max_message_size=MAX_FRAME,
                )
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await ws.aclose()
    finally:
        with trio.CancelScope(shield=True), suppress(trio.BrokenResourceError, OSError):
            await stream.aclose()


@asynccontextmanager
async def _unwrapped(kind: type[BaseException]) -> AsyncIterator[None]:
    """Re-raise a ``kind`` that a nursery (or several) wrapped in exception groups
    as itself: callers match the refusal, not where it was raised."""
    try:
        yield
    except BaseExceptionGroup as group:
        matched, _ = group.split(kind)
        found: BaseException | None = matched
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is not None:
            raise found from None
        raise
