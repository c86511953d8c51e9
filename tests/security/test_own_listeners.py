"""This machine is not part of what ``--allow-private`` opens, and bulk's own
listening sockets (the API, the egress proxy) are never a destination, whatever
``--allow`` says: checked on real sockets, through the policy, httpx and the proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from bulk._exceptions import URLBlocked
from bulk._listeners import own_listener, own_listeners
from bulk._policy import EgressPolicy, IPAddress, policy_transport
from bulk._proxy import open_egress_proxy


async def _fake_resolver(host: str, port: int) -> list[IPAddress]:
    table = {
        "localhost": ["127.0.0.1", "::1"],
        "intranet.test": ["10.1.2.3"],
        "sneaky.test": ["127.0.0.1"],
    }
    return [ipaddress.ip_address(a) for a in table[host]]


LOOPBACK_URLS = [
    "http://127.0.0.1:8000/",
    "http://127.9.8.7/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://2130706433/",
    "http://0x7f.1/",
]


@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_allow_private_does_not_open_this_machine(url: str) -> None:
    with pytest.raises(URLBlocked):
        EgressPolicy(allow_private=True).check_url(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://192.168.1.1/", "http://[fd00::1]/"])
def test_allow_private_still_opens_private_networks(url: str) -> None:
    assert EgressPolicy(allow_private=True).check_url(url)


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/"),
        ("127.0.0.0/8", "http://127.9.8.7/"),
        ("::1/128", "http://[::1]/"),
        ("0.0.0.0/0", "http://127.0.0.1/"),
    ],
)
def test_allow_naming_loopback_opens_it(allow: str, url: str) -> None:
    EgressPolicy(allow=(allow,)).check_url(url)
    EgressPolicy(allow_private=True, allow=(allow,)).check_url(url)


async def test_allow_private_refuses_names_that_resolve_to_this_machine() -> None:
    policy = EgressPolicy(allow_private=True, resolver=_fake_resolver)
    for name in ("localhost", "sneaky.test"):
        with pytest.raises(URLBlocked):
            await policy.resolve(name, 80)
    assert await policy.resolve("intranet.test", 80)
    named = EgressPolicy(allow_private=True, allow=("localhost",), resolver=_fake_resolver)
    assert await named.resolve("localhost", 80)


# -- bulk's own listeners -------------------------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.port = 0
        self.connections = 0


async def _count(server: Server, stream: trio.SocketStream) -> None:
    server.connections += 1
    async with stream:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """A plain server on every IPv4 address (like ``bulk serve --host 0.0.0.0``)."""
    server = Server()
    serve = partial(trio.serve_tcp, partial(_count, server), 0, host="0.0.0.0")
    listeners = await nursery.start(serve)
    server.port = listeners[0].socket.getsockname()[1]
    yield server


@contextmanager
def registered(host: str, port: int) -> Iterator[None]:
    with own_listener(host, port):
        assert (host if host != "0.0.0.0" else "*", port) in own_listeners()
        yield
    assert (host if host != "0.0.0.0" else "*", port) not in own_listeners()


def this_machines_addresses() -> list[str]:
    """IPv4 addresses of this machine's interfaces (Linux ``/proc/net/fib_trie``)."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    found = {
        lines[i - 1].split()[-1]
        for i, line in enumerate(lines)
        if "/32 host LOCAL" in line and i > 0
    }
    return sorted(found)


OPEN = EgressPolicy(allow=("0.0.0.0/0", "::/0"))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::ffff:127.0.0.1"])
async def test_policy_never_connects_to_bulks_own_listener(server: Server, host: str) -> None:
    with registered("0.0.0.0", server.port), pytest.raises(URLBlocked, match="own service"):
        await OPEN.connect(host, server.port)
    assert server.connections == 0
    # The same server, not registered: reachable (the refusal above is the registry's).
    stream = await OPEN.connect(host, server.port)
    await stream.aclose()
    assert server.connections == 1


async def test_this_machines_other_addresses_reach_no_own_listener(server: Server) -> None:
    addresses = [a for a in this_machines_addresses() if not a.startswith("127.")]
    assert addresses, "no address besides loopback: nothing to check here"
    with registered("0.0.0.0", server.port):
        for address in addresses:
            # Checked after connecting: the socket's own address is the destination.
            with pytest.raises(URLBlocked):
                await OPEN.connect(address, server.port)


async def test_a_listener_bound_to_one_address_is_only_that_address(server: Server) -> None:
    with registered("127.0.0.5", server.port):
        with pytest.raises(URLBlocked):
            await OPEN.connect("127.0.0.5", server.port)
        stream = await OPEN.connect("127.0.0.1", server.port)  # someone else's, say
        await stream.aclose()


async def test_httpx_through_the_policy_never_reaches_an_own_listener(server: Server) -> None:
    async with httpx.AsyncClient(transport=policy_transport(OPEN), trust_env=False) as client:
        with registered("0.0.0.0", server.port):
            for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0"):
                with pytest.raises(URLBlocked):
                    await client.get(f"http://{host}:{server.port}/")
        response = await client.get(f"http://127.0.0.1:{server.port}/")
        assert response.text == "ok"
    assert server.connections == 1


async def test_the_proxy_refuses_every_own_listener_as_destination(server: Server) -> None:
    policy = EgressPolicy(allow=("127.0.0.0/8",))
    async with open_egress_proxy(policy, require_auth=False) as proxy:
        assert ("127.0.0.1", proxy.port) in own_listeners()
        with registered("0.0.0.0", server.port):
            for target in (server.port, proxy.port):
                async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
                    await stream.send_all(
                        b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % target
                    )
                    data = b""
                    with trio.fail_after(5):
                        while chunk := await stream.receive_some(4096):
                            data += chunk
                assert data.startswith(b"HTTP/1.1 403"), data
                assert b"X-Bulk-Error: URL_BLOCKED" in data
    assert ("127.0.0.1", proxy.port) not in own_listeners()
    assert server.connections == 0


async def test_a_proxy_without_a_host_listener_accepts_nothing_here() -> None:
    async with open_egress_proxy(OPEN, require_auth=False, listen=False) as proxy:
        assert ("127.0.0.1", proxy.port) not in own_listeners()
        try:  # whatever may listen on that port here, it is not this proxy
            async with await trio.open_tcp_stream("127.0.0.1", proxy.port) as stream:
                await stream.send_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
        assert proxy.stats.connections == 0
