"""The egress proxy: what Chromium's traffic goes through.

An origin server runs on 127.0.0.1 (allowed by the policy under test) and a canary on
127.0.0.2 on the same port number (not allowed); the canary must never see a
connection, whatever the client tries.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio

from bulk._policy import EgressPolicy, IPAddress
from bulk._proxy import EgressProxy, open_egress_proxy

ZONE = {"origin.test": "127.0.0.1", "canary.test": "127.0.0.2"}


async def fake_resolver(host: str, port: int) -> list[IPAddress]:
    """Names from ``ZONE``; anything else fails like getaddrinfo (no real DNS)."""
    await trio.lowlevel.checkpoint()
    if host not in ZONE:
        raise OSError(-2, "Name or service not known")
    return [ipaddress.ip_address(ZONE[host])]


# -- servers -----------------------------------------------------------------------------


@attrs.define
class Origin:
    """An HTTP/1.1 origin that answers with what it received, as JSON."""

    port: int = 0
    connections: int = 0
    requests: list[dict[str, Any]] = attrs.field(factory=list)


async def _origin_handler(origin: Origin, stream: trio.SocketStream) -> None:
    origin.connections += 1
    async with stream:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        assert request is not None
        record = {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "headers": [[n.decode(), v.decode()] for n, v in request.headers.raw_items()],
            "body": body.decode("latin-1"),
        }
        origin.requests.append(record)
        if request.target == b"/garbage":
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            return
        if any(name == b"upgrade" for name, _ in request.headers):
            switch = h11.InformationalResponse(
                status_code=101, headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]
            )
            await stream.send_all(conn.send(switch) or b"")
            leftover, _ = conn.trailing_data
            if leftover:
                await stream.send_all(leftover)
            while chunk := await stream.receive_some(65536):
                await stream.send_all(chunk)
            return
        payload = json.dumps(record).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if request.target == b"/keepalive":
            headers += [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")]
        response = conn.send(h11.Response(status_code=200, headers=headers)) or b""
        await stream.send_all(response + (conn.send(h11.Data(data=payload)) or b""))


@attrs.define
class Canary:
    port: int = 0
    connections: int = 0


async def _canary_handler(canary: Canary, stream: trio.SocketStream) -> None:
    canary.connections += 1
    async with stream:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ncanary")


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    origin = Origin()
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_origin_handler, origin), 0, host="127.0.0.1")
    )
    origin.port = listeners[0].socket.getsockname()[1]
    return origin


@pytest.fixture
async def canary(nursery: trio.Nursery, origin: Origin) -> AsyncIterator[Canary]:
    canary = Canary(port=origin.port)
    await nursery.start(
        partial(trio.serve_tcp, partial(_canary_handler, canary), origin.port, host="127.0.0.2")
    )
    yield canary
    assert canary.connections == 0, "the canary was reached"


@pytest.fixture
def policy() -> EgressPolicy:
    return EgressPolicy(allow=("127.0.0.1/32",), resolver=fake_resolver)


@pytest.fixture
async def proxy(policy: EgressPolicy, canary: Canary) -> AsyncIterator[EgressProxy]:
    async with open_egress_proxy(
        policy, connect_timeout=2, idle_timeout=5, head_timeout=1
    ) as proxy:
        yield proxy


# -- raw client helpers ------------------------------------------------------------------


def auth(proxy: EgressProxy) -> bytes:
    token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode())
    return b"Proxy-Authorization: Basic " + token + b"\r\n"


async def open_client(proxy: EgressProxy) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """Read one response head; returns it and whatever came after it."""
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before a head: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def exchange(proxy: EgressProxy, request: bytes) -> bytes:
    """Send ``request`` on a new proxy connection; everything until the proxy closes."""
    async with await open_client(proxy) as stream:
        await stream.send_all(request)
        return await read_to_eof(stream)


def parse(response: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def headers_of(record: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in record["headers"]}


# -- plain HTTP ----------------------------------------------------------------------------


async def test_plain_http_through_httpx(proxy: EgressProxy, origin: Origin) -> None:
    async with httpx.AsyncClient(proxy=proxy.authenticated_url, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{origin.port}/hello?x=1")
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
        sent = response.json()
        assert sent["target"] == "/hello?x=1"
        headers = headers_of(sent)
        assert headers["host"] == f"127.0.0.1:{origin.port}"
        assert headers["connection"] == "close"
        assert "proxy-authorization" not in headers
        assert "proxy-connection" not in headers

        big = b"x" * 200_000
        response = await client.post(f"http://127.0.0.1:{origin.port}/upload", content=big)
        assert response.json()["body"] == big.decode()

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                yield part

        response = await client.post(f"http://origin.test:{origin.port}/chunked", content=chunks())
        sent = response.json()
        assert sent["body"] == "one,two,three"
        assert headers_of(sent)["transfer-encoding"] == "chunked"
        assert headers_of(sent)["host"] == f"origin.test:{origin.port}"
    assert proxy.stats.allowed == 3
    assert proxy.stats.blocked == 0


async def test_response_is_forced_to_connection_close(proxy: EgressProxy, origin: Origin) -> None:
    response = await exchange(
        proxy,
        b"GET http://127.0.0.1:%d/keepalive HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: hop\r\n%s\r\n" % (origin.port, auth(proxy)),
    )
    status, headers, body = parse(response)
    assert status == 200
    assert headers["connection"] == ["close"]
    assert "keep-alive" not in headers
    sent = headers_of(json.loads(body))
    assert sent["connection"] == "close"
    assert "x-secret" not in sent  # named in Connection: hop-by-hop
    assert "proxy-connection" not in sent


async def test_upgrade_is_spliced_raw(proxy: EgressProxy, origin: Origin) -> None:
    async with await open_client(proxy) as stream:
        await stream.send_all(
            b"GET http://127.0.0.1:%d/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n%s\r\n" % (origin.port, auth(proxy))
        )
        head, rest = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 ")
        await stream.send_all(b"\x81\x04ping")
        echoed = rest
        with trio.fail_after(5):
            while len(echoed) < 6:
                echoed += await stream.receive_some(65536)
        assert echoed == b"\x81\x04ping"
    sent = headers_of(origin.requests[0])
    assert sent["connection"] == "Upgrade"
    assert sent["upgrade"] == "websocket"
    assert "proxy-authorization" not in sent


# -- CONNECT -----------------------------------------------------------------------------


@pytest.mark.parametrize("authority", ["127.0.0.1:{port}", "origin.test:{port}"])
async def test_connect_tunnel(proxy: EgressProxy, origin: Origin, authority: str) -> None:
    target = authority.format(port=origin.port).encode()
    async with await open_client(proxy) as stream:
        await stream.send_all(
            b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, target, auth(proxy))
        )
        head, rest = await read_head(stream)
        assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        assert rest == b""
        await stream.send_all(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, body = parse(await read_to_eof(stream))
    assert status == 200
    assert json.loads(body)["target"] == "/tunnel"


async def test_connect_with_data_before_the_answer(proxy: EgressProxy, origin: Origin) -> None:
    # Clients may send their first bytes (a TLS ClientHello) without waiting for 200.
    response = await exchange(
        proxy,
        b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n%s\r\n"
        b"GET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (origin.port, auth(proxy)),
    )
    assert response.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 ")
    assert origin.requests[0]["target"] == "/early"


async def test_idle_tunnel_is_closed(policy: EgressPolicy, origin: Origin, canary: Canary) -> None:
    async with (
        open_egress_proxy(policy, idle_timeout=0.3) as proxy,
        await open_client(proxy) as stream,
    ):
        await stream.send_all(
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (origin.port, auth(proxy))
        )
        await read_head(stream)
        start = time.monotonic()
        assert await read_to_eof(stream) == b""
        assert 0.2 < time.monotonic() - start < 3


# -- refusals ----------------------------------------------------------------------------


async def test_canary_absolute_form_is_refused(
    proxy: EgressProxy, canary: Canary, origin: Origin
) -> None:
    since = trio.current_time()
    assert not proxy.recently_blocked("127.0.0.2", since)
    urls = [
        f"http://127.0.0.2:{canary.port}/",
        f"http://canary.test:{canary.port}/",  # refused after the checked lookup
        f"http://0x7f.2:{canary.port}/",
        f"http://2130706434:{canary.port}/",
        f"http://localhost:{origin.port}/",
        f"http://169.254.169.254:{canary.port}/latest/meta-data/",
    ]
    async with httpx.AsyncClient(proxy=proxy.authenticated_url, trust_env=False) as client:
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 403, url
            assert response.headers["x-bulk-error"] == "URL_BLOCKED"
            assert response.text
    # httpcore writes IPv6 targets without brackets ("http://::1:80/"), so those go raw.
    for url in (f"http://[::1]:{origin.port}/", f"http://[::ffff:127.0.0.2]:{canary.port}/"):
        raw = await exchange(
            proxy, b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (url.encode(), auth(proxy))
        )
        status, headers, _ = parse(raw)
        assert status == 403, url
        assert headers["x-bulk-error"] == ["URL_BLOCKED"]
    assert proxy.stats.blocked == len(urls) + 2
    assert proxy.stats.allowed == 0
    assert proxy.recently_blocked("127.0.0.2", since)
    assert proxy.recently_blocked("canary.test", since)
    assert proxy.recently_blocked("[::1]", since)
    assert proxy.recently_blocked("::ffff:7f00:2", since)
    assert proxy.recently_blocked("LOCALHOST.", since)
    assert not proxy.recently_blocked("127.0.0.1", since)
    assert not proxy.recently_blocked("127.0.0.2", trio.current_time() + 1)
    assert proxy.recently_blocked("", since)  # any host
    assert not proxy.recently_blocked("", trio.current_time() + 1)
    entry = proxy.stats.recent_blocked[0]
    assert (entry.host, entry.port) == ("127.0.0.2", canary.port)


@pytest.mark.parametrize(
    "authority",
    [
        "127.0.0.2:{port}",
        "canary.test:{port}",
        "0x7f.2:{port}",
        "2130706434:{port}",
        "[::ffff:127.0.0.2]:{port}",
        "[::1]:{port}",
        "[::]:{port}",
        "0.0.0.0:{port}",
        "localhost:{port}",
        "LOCALHOST.:{port}",
        "metadata.google.internal:80",
        "169.254.169.254:80",
    ],
)
async def test_canary_connect_is_refused(
    proxy: EgressProxy, canary: Canary, authority: str
) -> None:
    target = authority.format(port=canary.port).encode()
    response = await exchange(
        proxy, b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, target, auth(proxy))
    )
    status, headers, body = parse(response)
    assert status == 403
    assert headers["x-bulk-error"] == ["URL_BLOCKED"]
    assert body
    assert proxy.stats.blocked == 1


async def test_recently_blocked_records_the_canonical_host(
    proxy: EgressProxy, canary: Canary
) -> None:
    since = trio.current_time()
    await exchange(
        proxy, b"CONNECT 0x7f.2:%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (canary.port, auth(proxy))
    )
    assert proxy.recently_blocked("127.0.0.2", since)


@pytest.mark.parametrize(
    "credentials",
    [
        None,
        b"Proxy-Authorization: Basic " + base64.b64encode(b"user:wrong") + b"\r\n",
        b"Proxy-Authorization: Bearer abc\r\n",
        b"Proxy-Authorization: Basic !!!notbase64\r\n",
        b"Proxy-Authorization: Basic\r\n",
    ],
)
@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_authentication_required(
    proxy: EgressProxy, canary: Canary, credentials: bytes | None, method: str
) -> None:
    target = (
        f"127.0.0.2:{canary.port}" if method == "CONNECT" else f"http://127.0.0.1:{canary.port}/"
    )
    response = await exchange(
        proxy,
        f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode() + (credentials or b"") + b"\r\n",
    )
    status, headers, _ = parse(response)
    assert status == 407
    assert headers["proxy-authenticate"] == ['Basic realm="bulk"']
    assert proxy.stats.blocked == 0


async def test_httpx_without_credentials_gets_407(proxy: EgressProxy, origin: Origin) -> None:
    async with httpx.AsyncClient(proxy=proxy.url, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{origin.port}/")
    assert response.status_code == 407
    assert origin.connections == 0


async def test_credentials_are_random_per_proxy(policy: EgressPolicy) -> None:
    async with open_egress_proxy(policy) as one, open_egress_proxy(policy) as two:
        assert one.port != two.port
        assert one.password != two.password
        assert len(one.password) >= 24
        assert one.url == f"http://127.0.0.1:{one.port}"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"GET https://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"GET ftp://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT user@127.0.0.2:80 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT 127.0.0.2/x:80 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"CONNECT http://127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        b"GET http://127.0.0.1/ HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"Host: x\r\n{auth}\r\n",
    ],
)
async def test_bad_requests_get_400(
    proxy: EgressProxy, canary: Canary, request_bytes: bytes
) -> None:
    response = await exchange(proxy, request_bytes.replace(b"{auth}", auth(proxy)))
    assert parse(response)[0] == 400
    assert proxy.stats.allowed == 0


async def test_oversized_head_is_refused(proxy: EgressProxy) -> None:
    async with await open_client(proxy) as stream:
        try:
            await stream.send_all(
                b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
            )
            response = await read_to_eof(stream)
        except trio.BrokenResourceError:
            response = b""  # closed with our bytes unread: a reset, also a refusal
    assert response == b"" or parse(response)[0] == 400
    assert proxy.stats.allowed == 0


async def test_userinfo_is_refused(proxy: EgressProxy, origin: Origin) -> None:
    response = await exchange(
        proxy,
        b"GET http://example.com@127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n%s\r\n"
        % (origin.port, auth(proxy)),
    )
    status, _headers, _ = parse(response)
    assert status == 400  # INVALID_URL: bad input, not a destination the policy judged
    assert origin.connections == 0


async def test_unreachable_upstream_is_502(proxy: EgressProxy, origin: Origin) -> None:
    port = _closed_port()
    response = await exchange(
        proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (port, auth(proxy))
    )
    status, headers, _ = parse(response)
    assert status == 502
    assert headers["x-bulk-error"] == ["NAVIGATION_ERROR"]
    # a name that does not resolve
    response = await exchange(
        proxy, b"GET http://nxdomain.test/ HTTP/1.1\r\nHost: x\r\n%s\r\n" % auth(proxy)
    )
    status, headers, body = parse(response)
    assert status == 502
    assert headers["x-bulk-error"] == ["NAVIGATION_ERROR"]
    assert b"could not resolve host nxdomain.test" in body
    # an upstream that does not speak HTTP
    response = await exchange(
        proxy,
        b"GET http://127.0.0.1:%d/garbage HTTP/1.1\r\nHost: x\r\n%s\r\n"
        % (origin.port, auth(proxy)),
    )
    status, headers, _ = parse(response)
    assert status == 502


# -- timeouts and lifetime ----------------------------------------------------------------


async def test_slow_client_is_cut_off(policy: EgressPolicy, canary: Canary) -> None:
    async with (
        open_egress_proxy(policy, head_timeout=0.3) as proxy,
        await open_client(proxy) as stream,
    ):
        start = time.monotonic()
        await stream.send_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n")
        assert await read_to_eof(stream) == b""
        assert 0.2 < time.monotonic() - start < 3


def proxy_tasks() -> list[trio.lowlevel.Task]:
    """Every running task whose code is bulk._proxy's."""
    found: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if task.name.startswith("bulk._proxy"):
            found.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return found


async def test_closing_leaves_nothing_running(
    policy: EgressPolicy, origin: Origin, canary: Canary
) -> None:
    assert proxy_tasks() == []
    async with open_egress_proxy(policy) as proxy:
        tunnel = await open_client(proxy)
        await tunnel.send_all(
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (origin.port, auth(proxy))
        )
        await read_head(tunnel)
        slow = await open_client(proxy)
        await slow.send_all(b"GET http://127.0.0.1/ HTTP/1.1\r\n")
        await trio.sleep(0.05)
        assert len(proxy_tasks()) >= 3  # the accept loop and two connections
    assert proxy_tasks() == []
    async with tunnel, slow:
        assert await read_to_eof(tunnel) == b""
        assert await read_to_eof(slow) == b""
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", proxy.port)


async def test_exception_in_the_block_is_not_wrapped(policy: EgressPolicy) -> None:
    with pytest.raises(KeyError):
        async with open_egress_proxy(policy):
            raise KeyError("mine")
    assert proxy_tasks() == []


async def test_cancellation_in_the_block(policy: EgressPolicy) -> None:
    with trio.move_on_after(0.05) as scope:
        async with open_egress_proxy(policy):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert proxy_tasks() == []


async def test_max_connections_bounds_concurrent_clients(
    policy: EgressPolicy, origin: Origin, canary: Canary
) -> None:
    async with open_egress_proxy(policy, max_connections=1, head_timeout=0.5) as proxy:
        holder = await open_client(proxy)  # takes the only slot until its head times out
        await holder.send_all(b"GET http://")
        await trio.sleep(0.05)
        start = time.monotonic()
        response = await exchange(
            proxy,
            b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n%s\r\n" % (origin.port, auth(proxy)),
        )
        assert parse(response)[0] == 200
        assert time.monotonic() - start > 0.3  # it waited for the slot
        await holder.aclose()
    assert proxy.stats.connections == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_without_required_auth_requests_pass_and_the_proxy_is_no_destination(
    policy: EgressPolicy, origin: Origin
) -> None:
    # The browser's proxy: no credentials (Playwright would switch the HTTP cache off
    # to send them), so it must never be a way back into itself.
    async with open_egress_proxy(
        policy, connect_timeout=2, idle_timeout=5, head_timeout=1, require_auth=False
    ) as proxy:
        ok = await exchange(
            proxy,
            b"GET http://127.0.0.1:%d/plain HTTP/1.1\r\nHost: x\r\n\r\n" % origin.port,
        )
        assert parse(ok)[0] == 200
        assert origin.requests[-1]["target"] == "/plain"
        for request in (
            b"GET http://127.0.0.1:%d/loop HTTP/1.1\r\nHost: x\r\n\r\n" % proxy.port,
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % proxy.port,
        ):
            status, headers, _ = parse(await exchange(proxy, request))
            assert status == 403
            assert headers["x-bulk-error"] == ["URL_BLOCKED"]
        assert proxy.stats.blocked == 2
