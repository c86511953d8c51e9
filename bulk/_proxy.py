"""The egress proxy Chromium goes through: the egress policy for the browser.

Chromium is launched with this proxy for all traffic, loopback included, so every
connection a page makes (navigation, redirects, sub-resources, WebSockets, service
workers) passes ``EgressPolicy``. Stripe's smokescreen is the reference design: check
the destination, resolve it once through the policy, connect to the checked address,
then relay bytes.

What it speaks:

- ``CONNECT host:port`` (HTTPS, WSS): checked, connected, ``200 Connection
  Established``, then bytes are relayed both ways (half-closes propagate) until both
  sides are done.
- absolute-form requests (``GET http://host:port/path HTTP/1.1``; ``ws://`` too):
  checked, connected, rewritten to origin-form with ``Connection: close`` and relayed;
  the response head gets ``Connection: close`` too, and the proxy closes the client
  connection after the response: one request per proxy connection. An ``Upgrade``
  request keeps its ``Connection: Upgrade`` and, on ``101``, becomes a raw relay.

Who may connect: the proxy listens on 127.0.0.1 (``listen=True``), where any local
process can reach it; the browser pool opens it with ``listen=False`` instead and
``serve``s only the listener the Chromium launcher hands over from inside the
browser's own network namespace (``_launcher.py``), so nothing but that Chromium can
connect. Where to: what ``EgressPolicy`` allows, never bulk's own listening sockets
(``_listeners``: the API, this proxy), whatever ``--allow`` says.

Refusals are ``403`` with ``X-Bulk-Error: URL_BLOCKED``; an unreachable destination is
``502`` with ``X-Bulk-Error: NAVIGATION_ERROR``; a missing or wrong
``Proxy-Authorization`` is ``407`` (Chromium then retries with the credentials);
a URL the policy finds invalid (userinfo, a single-label or unresolvable host name) is
``400`` with ``X-Bulk-Error: INVALID_URL``; anything else is ``400``. Every refusal
is recorded in ``ProxyStats`` so the browser module can tell a policy refusal from a
network error (``recently_blocked``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final, final

import attrs
import h11
import trio

from ._exceptions import FetchError, InvalidURL, URLBlocked
from ._listeners import own_listener
from ._policy import EgressPolicy
from ._urls import HTTP_TOKEN_PATTERN, ParsedURL, parse_http_url

__all__ = [
    "IDENTITY_URL",
    "BlockedConnection",
    "EgressProxy",
    "ProxyStats",
    "open_egress_proxy",
]

#: What a proxy with an ``identity`` answers itself (``bulk node``): the name can never
#: resolve (RFC 6761), so asking it through any other proxy, or none, reaches nobody.
IDENTITY_URL: Final = "http://bulk-node.invalid/"

#: Request and response heads larger than this are refused.
MAX_HEAD_BYTES: Final = 64 * 1024
#: Requests with more header lines than this are refused.
MAX_HEADERS: Final = 100
_MAX_INFORMATIONAL: Final = 32  # 1xx heads accepted before the final response
_RECEIVE_SIZE: Final = 64 * 1024
_REPLY_TIMEOUT: Final = 5.0  # for sending our own short replies to a client
_RECENT_BLOCKED: Final = 1024

_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT: Final = re.compile(rb"\r?\n")
_STATUS_LINE: Final = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?$")
_TOKEN: Final = re.compile(HTTP_TOKEN_PATTERN.encode())
_AUTHORITY_HOST: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s/\\@?#\[\]:]+)$")
# Hop-by-hop headers (RFC 9110 7.6.1) plus the proxy's own: never forwarded.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"upgrade",
    }
)
# accept() errors that mean "out of resources for now", not "listener broken".
_ACCEPT_RETRY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.ECONNABORTED}
)


@attrs.frozen
class BlockedConnection:
    """One refused destination: host as the client named it, port, reason, when.

    ``at`` is ``trio.current_time()`` (trio's clock, not ``time.monotonic()``: trio
    offsets its clock on purpose, so the two must not be compared).
    """

    host: str
    port: int
    reason: str
    at: float


@final
@attrs.define
class ProxyStats:
    """Counters of one proxy's lifetime.

    ``connections`` counts accepted client connections, ``allowed`` upstream
    connections made, ``blocked`` policy refusals; ``recent_blocked`` keeps the last
    refusals for ``EgressProxy.recently_blocked``.
    """

    connections: int = 0
    allowed: int = 0
    blocked: int = 0
    recent_blocked: deque[BlockedConnection] = attrs.field(
        factory=lambda: deque(maxlen=_RECENT_BLOCKED)
    )
    #: The last allowed destinations that could not be connected to; ``reason`` is
    #: Chromium's name for what happened (``ERR_NAME_NOT_RESOLVED``...).
    recent_failed: deque[BlockedConnection] = attrs.field(
        factory=lambda: deque(maxlen=_RECENT_BLOCKED)
    )


class _BadRequest(Exception):
    """The client sent something the proxy does not accept (answered with 400)."""


class _BadGateway(Exception):
    """The upstream answered something that is not an HTTP/1 response head."""


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


@final
class EgressProxy:
    """A running egress proxy (made by ``open_egress_proxy``).

    Attributes:
        url: ``http://127.0.0.1:PORT``, without credentials (Playwright's ``server``).
        port: The ephemeral port it listens on, on 127.0.0.1 only; with
            ``listen=False``, the port listeners handed to ``serve`` are bound to
            (in another network namespace).
        username: Random per proxy; clients must send it with ``password`` (unless
            the proxy was opened with ``require_auth=False``).
        password: Random per proxy.
        require_auth: Whether requests without the credentials get ``407``.
        stats: Counters and the recent refusals.
        policy: The policy every destination passes.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        port: int,
        connect_timeout: float,
        idle_timeout: float,
        head_timeout: float,
        limiter: trio.CapacityLimiter,
        require_auth: bool = True,
    ) -> None:
        self.policy = policy
        self.require_auth = require_auth
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.username = secrets.token_urlsafe(12)
        self.password = secrets.token_urlsafe(24)
        self.stats = ProxyStats()
        #: Answered to ``GET IDENTITY_URL`` (a ``bulk node`` says what it is); None:
        #: that URL is refused like any unresolvable name.
        self.identity: bytes | None = None
        self._credentials = f"{self.username}:{self.password}".encode()
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._head_timeout = head_timeout
        self._limiter = limiter

    @property
    def authenticated_url(self) -> str:
        """``http://USER:PASSWORD@127.0.0.1:PORT``, for clients that take one URL."""
        return f"http://{self.username}:{self.password}@127.0.0.1:{self.port}"

    def recently_blocked(self, host: str, since: float) -> bool:
        """Whether the policy refused ``host`` (any port) at or after ``since``.

        Args:
            host: A host name or address; case, IPv6 brackets and trailing dots are
                ignored. Pass the canonical host (``ParsedURL.hostname``): refusals
                are recorded in canonical form. ``""`` matches any host (a redirect
                may have led elsewhere).
            since: A ``trio.current_time()`` value, taken before the navigation.

        Returns:
            True when a matching refusal was recorded at or after ``since``.
        """
        wanted = _normalise_host(host)
        # list() copies the deque in one step, so the check is safe from any thread.
        return any(
            entry.at >= since and (not wanted or _normalise_host(entry.host) == wanted)
            for entry in list(self.stats.recent_blocked)
        )

    def recent_failure(self, host: str, since: float) -> tuple[str, str] | None:
        """Why the proxy could not connect to ``host`` at or after ``since``, if it
        could not: Chromium's name for it (``ERR_NAME_NOT_RESOLVED``,
        ``ERR_CONNECTION_REFUSED``, ``ERR_CONNECTION_TIMED_OUT``) and ``host port N``.

        A browser behind the proxy sees only ``ERR_TUNNEL_CONNECTION_FAILED`` (https)
        or the proxy's 502 (http); the capture engine asks this to say what happened.
        """
        wanted = _normalise_host(host)
        for entry in reversed(list(self.stats.recent_failed)):
            if entry.at >= since and _normalise_host(entry.host) == wanted:
                return entry.reason, f"{entry.host} port {entry.port}"
        return None

    def _failed(self, host: str, port: int, net_error: str) -> None:
        self.stats.recent_failed.append(
            BlockedConnection(host=host, port=port, reason=net_error, at=trio.current_time())
        )

    # -- serving -------------------------------------------------------------------

    async def serve(
        self,
        listener: trio.SocketListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve one more listener (e.g. handed over from Chromium's namespace).

        Connections of every listener share the proxy's ``max_connections``.

        Args:
            listener: A listening TCP socket; this call owns and closes it.

        Cancellation:
            Runs until cancelled; then the listener and the connections accepted on
            it are closed before it returns.
        """
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                # The token is the borrower: acquired here, released by the handler,
                # so at most max_connections are served and the rest wait in the
                # kernel's backlog.
                token = object()
                await self._limiter.acquire_on_behalf_of(token)
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    self._limiter.release_on_behalf_of(token)
                    if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                        raise
                    await trio.sleep(0.1)
                    continue
                except BaseException:
                    self._limiter.release_on_behalf_of(token)
                    raise
                nursery.start_soon(self._handle, stream, token)

    async def _handle(self, client: trio.SocketStream, token: object) -> None:
        self.stats.connections += 1
        try:
            await self._handle_request(client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to tell it
        finally:
            # aclose_forcefully closes at once, even inside a cancelled scope.
            await trio.aclose_forcefully(client)
            self._limiter.release_on_behalf_of(token)

    async def _handle_request(self, client: trio.SocketStream) -> None:
        try:
            with trio.fail_after(self._head_timeout):
                received = await _read_request(client)
        except trio.TooSlowError:
            return  # slowloris: drop without a word
        except _BadRequest as exc:
            await _reply(client, 400, "Bad Request", str(exc))
            return
        if received is None:
            return
        request, leftover = received
        if not self._authorised(request):
            await _reply(
                client,
                407,
                "Proxy Authentication Required",
                "proxy authentication required",
                headers=[(b"Proxy-Authenticate", b'Basic realm="bulk"')],
            )
            return
        target = request.target.decode("ascii")  # h11 only lets visible ASCII through
        if self.identity is not None and request.method == b"GET" and target == IDENTITY_URL:
            await _reply(
                client, 200, "OK", self.identity.decode(), headers=[(b"X-Bulk-Node", b"1")]
            )
            return
        if request.method == b"CONNECT":
            await self._tunnel(client, target, leftover)
        else:
            await self._forward(client, request, target, leftover)

    def _authorised(self, request: h11.Request) -> bool:
        if not self.require_auth:
            return True
        values = [value for name, value in request.headers if name == b"proxy-authorization"]
        if len(values) != 1:
            return False
        scheme, _, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(decoded, self._credentials)

    async def _tunnel(self, client: trio.SocketStream, target: str, leftover: bytes) -> None:
        """Serve ``CONNECT target``: check, connect, 200, relay."""
        try:
            host, port = _split_authority(target)
        except _BadRequest as exc:
            await _reply(client, 400, "Bad Request", str(exc))
            return
        url = await self._check(client, f"https://{host}:{port}/")
        if url is None:
            return
        upstream = await self._open_upstream(client, url)
        if upstream is None:
            return
        try:
            await client.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            with trio.CancelScope() as idle:
                idle.deadline = trio.current_time() + self._idle_timeout
                async with trio.open_nursery() as nursery:
                    # A TLS ClientHello may arrive before our 200; it goes first.
                    nursery.start_soon(self._pump, client, upstream, idle, True, leftover)
                    nursery.start_soon(self._pump, upstream, client, idle, True, b"")
        finally:
            await trio.aclose_forcefully(upstream)

    async def _forward(
        self, client: trio.SocketStream, request: h11.Request, target: str, leftover: bytes
    ) -> None:
        """Serve an absolute-form request: check, connect, rewrite, relay."""
        lowered = target[:8].lower()
        if lowered.startswith("ws://"):
            # A WebSocket upgrade in absolute form: the handshake is plain HTTP.
            text = "http://" + target[5:]
        elif lowered.startswith("http://"):
            text = target
        else:
            message = (
                "use CONNECT for https"
                if lowered.startswith(("https://", "wss://"))
                else "only absolute-form http:// requests and CONNECT are served"
            )
            await _reply(client, 400, "Bad Request", message)
            return
        url = await self._check(client, text)
        if url is None:
            return
        upgrade = _is_upgrade(request)
        head = _rewrite_request(request, url, upgrade=upgrade)
        upstream = await self._open_upstream(client, url)
        if upstream is None:
            return
        try:
            with trio.CancelScope() as idle:
                idle.deadline = trio.current_time() + self._idle_timeout
                async with trio.open_nursery() as nursery:
                    # The request body (if any) streams while the response comes back;
                    # the client's half-close is passed on, as a direct connection
                    # would.
                    nursery.start_soon(self._pump, client, upstream, idle, True, head + leftover)
                    tunnel = await self._relay_response_head(client, upstream, idle)
                    if tunnel:
                        # 101 Switching Protocols: from now on it is a raw relay.
                        await self._pump(upstream, client, idle, True, b"")
                    else:
                        if tunnel is not None:
                            # Upstream closes after the response (Connection: close);
                            # then the exchange is over, whatever the client still sends.
                            await self._pump(upstream, client, idle, False, b"")
                        nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(upstream)

    async def _check(self, client: trio.SocketStream, text: str) -> ParsedURL | None:
        """``policy.check_url(text)``, answering the client (400/403) when it fails."""
        try:
            return self.policy.check_url(text)
        except URLBlocked as exc:
            # Recorded in canonical form ("0x7f.1" as 127.0.0.1), the form the
            # browser module asks ``recently_blocked`` about.
            host, port = _host_port_hint(text)
            await self._refuse(client, host, port, exc)
        except InvalidURL as exc:
            # Coded like a refusal, so a capture can tell bad input (a redirect to
            # http://intranet/) from the site's own 400.
            await _reply(client, 400, "Bad Request", str(exc), error_code=InvalidURL.code)
        return None

    async def _open_upstream(
        self, client: trio.SocketStream, url: ParsedURL
    ) -> trio.SocketStream | None:
        """Connect through the policy to ``url``'s checked host, or answer 403/502."""
        try:
            with trio.fail_after(self._connect_timeout):
                # The canonical host from check_url, never the client's spelling, so
                # what was checked and what is connected to cannot differ. connect
                # refuses bulk's own listeners, this proxy's included (no loops).
                upstream = await self.policy.connect(url.hostname, url.port)
        except URLBlocked as exc:
            await self._refuse(client, url.hostname, url.port, exc)
            return None
        except (FetchError, InvalidURL) as exc:
            resolved = "could not resolve" not in str(exc)
            self._failed(
                url.hostname,
                url.port,
                "ERR_CONNECTION_REFUSED" if resolved else "ERR_NAME_NOT_RESOLVED",
            )
            await _reply(client, 502, "Bad Gateway", str(exc), error_code="NAVIGATION_ERROR")
            return None
        except trio.TooSlowError:
            self._failed(url.hostname, url.port, "ERR_CONNECTION_TIMED_OUT")
            await _reply(
                client,
                502,
                "Bad Gateway",
                f"timed out connecting to {url.host}",
                error_code="NAVIGATION_ERROR",
            )
            return None
        self.stats.allowed += 1
        return upstream

    async def _refuse(
        self, client: trio.SocketStream, host: str, port: int, exc: URLBlocked
    ) -> None:
        self.stats.blocked += 1
        self.stats.recent_blocked.append(
            BlockedConnection(host=host, port=port, reason=exc.message, at=trio.current_time())
        )
        await _reply(client, 403, "Forbidden", exc.message, error_code=URLBlocked.code)

    async def _relay_response_head(
        self, client: trio.SocketStream, upstream: trio.SocketStream, idle: trio.CancelScope
    ) -> bool | None:
        """Pass the upstream's response head(s) to the client.

        1xx heads pass unchanged; the final head gets ``Connection: close`` unless it
        is ``101``. Bytes read past the head are forwarded too.

        Returns:
            True after a ``101`` (relay raw both ways), False after any other final
            head (relay the body), None when the exchange is over: a 502 was sent
            for a missing or malformed head, a side broke, or the upstream sent more
            than ``_MAX_INFORMATIONAL`` 1xx heads.
        """
        buffer = bytearray()
        try:
            for _ in range(_MAX_INFORMATIONAL):
                try:
                    head = await _read_head(upstream, buffer, idle, self._idle_timeout)
                    if head is None:
                        raise _BadGateway("the upstream closed without a response")
                    status, lines = _parse_response_head(head)
                except _BadGateway as exc:
                    await _reply(
                        client, 502, "Bad Gateway", str(exc), error_code="NAVIGATION_ERROR"
                    )
                    return None
                if status == 101:
                    await client.send_all(head + bytes(buffer))
                    return True
                if status >= 200:
                    await client.send_all(_close_head(lines) + bytes(buffer))
                    return False
                # 100 Continue, 103 Early Hints...: passed on as they are.
                await client.send_all(head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Raised here rather than from the nursery body, where trio would wrap it
            # in an ExceptionGroup.
            idle.cancel()
        return None

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        idle: trio.CancelScope,
        propagate_eof: bool,
        first: bytes,
    ) -> None:
        """Copy ``source`` to ``sink`` until EOF; any traffic pushes back ``idle``.

        On EOF the half-close is passed on when ``propagate_eof`` (tunnels). A broken
        side ends the whole exchange: ``idle`` is cancelled.
        """
        try:
            if first:
                await sink.send_all(first)
            while True:
                data = await source.receive_some(_RECEIVE_SIZE)
                if not data:
                    break
                idle.deadline = trio.current_time() + self._idle_timeout
                await sink.send_all(data)
            if propagate_eof:
                await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            idle.cancel()


@asynccontextmanager
async def open_egress_proxy(
    policy: EgressPolicy,
    *,
    connect_timeout: float = 10,
    idle_timeout: float = 60,
    head_timeout: float = 15,
    max_connections: int = 512,
    require_auth: bool = True,
    listen: bool = True,
) -> AsyncIterator[EgressProxy]:
    """Run an egress proxy for the duration of the block.

    Args:
        policy: The policy every destination must pass.
        connect_timeout: Seconds for resolving and connecting to a destination.
        idle_timeout: Seconds without traffic either way after which a relay ends.
        head_timeout: Seconds a client has to send its whole request head (slow
            clients are dropped, so they cannot pile up).
        max_connections: Client connections served at once; more wait in the
            listen backlog.
        require_auth: Whether clients must send the proxy's random credentials.
            Chromium's proxy is opened without: Playwright answers a proxy login
            by intercepting every request with its HTTP cache switched off (12x
            the requests, 15-45% slower captures), and the proxy grants nothing
            the policy would not (its own address is refused as a destination).
        listen: Whether to listen on 127.0.0.1 (an ephemeral port). Without, the
            proxy serves only the listeners given to ``EgressProxy.serve``, bound to
            ``proxy.port`` in a namespace of their own (a random port here).

    Yields:
        The running proxy, with its URL and credentials. An exception from the block
        propagates unchanged (not wrapped in an ExceptionGroup).

    Cancellation:
        The listener and every connection run in a nursery owned by this context
        manager; leaving the block cancels them and closes every socket before it
        returns.
    """
    limiter = trio.CapacityLimiter(max_connections)  # validates before a socket exists
    listener: trio.SocketListener | None = None
    if listen:
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port: int = listener.socket.getsockname()[1]
    else:
        # Any port: nothing else lives in the namespace the listener is bound in.
        port = 20000 + secrets.randbelow(40000)
    proxy = EgressProxy(
        policy,
        port=port,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
        limiter=limiter,
        require_auth=require_auth,
    )
    body_error: BaseException | None = None
    with contextlib.ExitStack() as registered:
        if listener is not None:
            # Registered before it accepts: never a destination, whatever --allow says.
            registered.enter_context(own_listener("127.0.0.1", port))
        async with trio.open_nursery() as nursery:
            if listener is not None:
                await nursery.start(proxy.serve, listener)  # owns (and closes) it
            try:
                yield proxy
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller's own exception
                # (or cancellation) is not wrapped in an ExceptionGroup.
                body_error = exc
            finally:
                nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


# -- HTTP/1 plumbing ------------------------------------------------------------------


async def _read_request(stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """Read one request head; returns it with the bytes read past it, None on EOF.

    Raises:
        _BadRequest: Malformed, over ``MAX_HEAD_BYTES`` or over ``MAX_HEADERS``.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _BadRequest(f"malformed request: {exc}") from None
        if isinstance(event, h11.Request):
            if len(event.headers) > MAX_HEADERS:
                raise _BadRequest(f"more than {MAX_HEADERS} header lines")
            data, _closed = conn.trailing_data
            return event, data
        if isinstance(event, h11.ConnectionClosed):
            return None
        if event is not h11.NEED_DATA:  # pragma: no cover (a server only sees requests)
            raise _BadRequest("unexpected data")
        conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))


async def _read_head(
    stream: trio.SocketStream, buffer: bytearray, idle: trio.CancelScope, idle_timeout: float
) -> bytes | None:
    """Read one response head from ``stream`` into ``buffer``; None on early EOF.

    Raises:
        _BadGateway: The head is over ``MAX_HEAD_BYTES``.
    """
    while True:
        match = _HEAD_END.search(buffer)
        if match is not None:
            head = bytes(buffer[: match.end()])
            del buffer[: match.end()]
            return head
        if len(buffer) > MAX_HEAD_BYTES:
            raise _BadGateway("the upstream response head is too large")
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            return None
        idle.deadline = trio.current_time() + idle_timeout
        buffer += data


def _parse_response_head(head: bytes) -> tuple[int, list[bytes]]:
    """The status code and the lines (status line first) of a response head.

    Raises:
        _BadGateway: Not an HTTP/1.x status line, or a malformed header line.
    """
    lines = _LINE_SPLIT.split(head.rstrip(b"\r\n"))
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise _BadGateway("the upstream did not answer with HTTP/1.x")
    for line in lines[1:]:
        name, colon, _value = line.partition(b":")
        # Obsolete line folding and nameless lines are refused, not guessed at.
        if not colon or not _TOKEN.match(name):
            raise _BadGateway("the upstream sent a malformed header line")
    return int(match.group(1)), lines


def _close_head(lines: list[bytes]) -> bytes:
    """The response head with hop-by-hop headers replaced by ``Connection: close``."""
    headers = [tuple(line.split(b":", 1)) for line in lines[1:]]
    named = _connection_tokens(value for name, value in headers if name.lower() == b"connection")
    kept = [
        line
        for line in lines[1:]
        if (name := line.split(b":", 1)[0].strip().lower()) not in _HOP_BY_HOP and name not in named
    ]
    return b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""])


def _connection_tokens(values: Iterable[bytes]) -> set[bytes]:
    return {token.strip().lower() for value in values for token in value.split(b",")} - {b""}


def _is_upgrade(request: h11.Request) -> bool:
    tokens = _connection_tokens(value for name, value in request.headers if name == b"connection")
    return b"upgrade" in tokens and any(name == b"upgrade" for name, _ in request.headers)


def _rewrite_request(request: h11.Request, url: ParsedURL, *, upgrade: bool) -> bytes:
    """The request head for the origin server, in origin-form.

    Host comes from the checked URL (RFC 9112 3.2.2: a proxy replaces it), hop-by-hop
    and proxy headers are dropped, and ``Connection`` is ``close`` (``Upgrade`` with
    the ``Upgrade`` header kept for an upgrade). h11 has already refused CR/LF in
    names and values, so nothing can be smuggled into the rebuilt head.
    """
    named = _connection_tokens(value for name, value in request.headers if name == b"connection")
    lines = [
        b"%s %s HTTP/%s" % (request.method, _origin_form(url).encode(), request.http_version),
        b"Host: " + url.origin.split("://", 1)[1].encode(),
    ]
    for name, value in request.headers.raw_items():
        lower = name.lower()
        if lower == b"host" or lower in _HOP_BY_HOP or (lower in named and lower != b"upgrade"):
            continue
        lines.append(name + b": " + value)
    if upgrade:
        lines.extend(b"Upgrade: " + value for name, value in request.headers if name == b"upgrade")
        lines.append(b"Connection: Upgrade")
    else:
        lines.append(b"Connection: close")
    return b"\r\n".join([*lines, b"", b""])


def _origin_form(url: ParsedURL) -> str:
    rest = url.without_fragment()[len(url.origin) :]
    return rest if rest.startswith("/") else "/" + rest


def _split_authority(target: str) -> tuple[str, int]:
    """``host:port`` of a CONNECT request, IPv6 in brackets.

    Raises:
        _BadRequest: Not ``host:port`` with a port in 1-65535.
    """
    host, colon, port_text = target.rpartition(":")
    if not colon or not host or not _AUTHORITY_HOST.match(host):
        raise _BadRequest("CONNECT needs host:port")
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _BadRequest("CONNECT needs a port between 1 and 65535")
    return host, int(port_text)


def _host_port_hint(text: str) -> tuple[str, int]:
    """The canonical host and port to record for a refused URL."""
    try:
        parsed = parse_http_url(text)
    except InvalidURL:  # only userinfo-free parse failures reach here; keep the text
        return text[:100], 0
    return parsed.hostname, parsed.port


async def _reply(
    stream: trio.SocketStream,
    status: int,
    reason: str,
    message: str,
    *,
    error_code: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a short final response and nothing more (the caller closes).

    A client that does not read is given ``_REPLY_TIMEOUT`` seconds, not forever.
    """
    body = (message.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    if error_code is not None:
        lines.append(b"X-Bulk-Error: " + error_code.encode())
    lines.extend(name + b": " + value for name, value in headers)
    with trio.move_on_after(_REPLY_TIMEOUT):
        await stream.send_all(b"\r\n".join([*lines, b"", body]))
