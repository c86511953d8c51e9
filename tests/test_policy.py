"""The egress policy: hostile URL forms, address classes, allow-lists, httpx transport.

No real DNS: names go through an injected fake resolver (``localhost`` alone is
resolved for real, from /etc/hosts). Servers are bound to 127.0.0.1 and a "canary" to
127.0.0.2 on the same port number; the canary must never see a connection.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import attrs
import httpcore
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk._exceptions import BulkError, FetchError, InvalidURL, URLBlocked, ValidationError
from bulk._fetch import open_fetcher
from bulk._policy import (
    EgressPolicy,
    IPAddress,
    PolicyNetworkBackend,
    _reaches_this_host,
    is_public_address,
    policy_client,
    policy_transport,
)
from bulk._proxy import EgressProxy, _BadRequest, _split_authority, open_egress_proxy
from bulk._urls import ParsedURL, parse_http_url

# -- a fake resolver -------------------------------------------------------------------

ZONE: dict[str, list[str]] = {
    "example.com": ["93.184.216.34"],
    "v6.example": ["2606:4700::1111"],
    "both.example": ["93.184.216.34", "2606:4700::1111", "93.184.216.34"],
    "internal-only.example": ["10.0.0.5"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
    "mixed-late.example": ["2606:4700::1111", "93.184.216.34", "169.254.169.254"],
    "v6private.example": ["fd00::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],
    "loopback.example": ["127.0.0.1"],
    "canary.example": ["127.0.0.2"],
    "intranet.corp": ["10.1.2.3"],
    "other.corp": ["10.1.2.4"],
}


@attrs.define
class FakeResolver:
    """Answers from ``zone``; unknown names get ``default`` or fail like getaddrinfo."""

    zone: dict[str, list[str]] = attrs.field(factory=lambda: dict(ZONE))
    default: list[str] | None = None
    calls: list[str] = attrs.field(factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        await trio.lowlevel.checkpoint()
        answers = self.zone.get(host.rstrip("."), self.default)
        if answers is None:
            raise OSError(-2, "Name or service not known")
        return [ipaddress.ip_address(a) for a in answers]


def sequence_resolver(*answers: list[str]) -> tuple[list[str], FakeResolverFn]:
    """A resolver giving ``answers[0]`` on the first call, ``answers[1]`` next..."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        await trio.lowlevel.checkpoint()
        index = min(len(calls), len(answers)) - 1
        return [ipaddress.ip_address(a) for a in answers[index]]

    return calls, resolve


FakeResolverFn = Callable[[str, int], Awaitable[list[IPAddress]]]


async def check_and_resolve(policy: EgressPolicy, url: str) -> list[IPAddress]:
    """What every connection goes through: the static check, then the checked lookup."""
    parsed = policy.check_url(url)
    return await policy.resolve(parsed.hostname, parsed.port)


# -- hostile URLs ------------------------------------------------------------------------

BLOCKED = [
    # IPv4 loopback in every spelling WHATWG accepts
    "http://127.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0x7F.0x0.0x0.0x1/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0177.0.0.01/",
    "http://127.000.000.001/",
    "http://127.0.0.1.:80/",
    "http://127.0.0.2:8080/",
    "http://%31%32%37.0.0.1/",
    "http://１２７．０．０．１/",
    "http://127。0。0。1/",
    "http://①②⑦.0.0.1/",
    "http:/\\127.0.0.1/",
    "http:127.0.0.1/",
    "http://127.0.0.1\t/",
    "HTTP://127.0.0.1:0080/",
    # "this host"
    "http://0.0.0.0/",
    "http://0/",
    "http://0.0.0.0:443/",
    # IPv6 loopback, unspecified and IPv4-embedding forms
    "http://[::]/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[2001::1]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    # IPv6 special blocks
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[ff0e::1]/",
    "http://[2001:db8::1]/",
    "http://[3fff::1]/",
    "http://[100::1]/",
    "http://[2001:10::1]/",
    "http://[2001:20::1]/",
    # IPv4 special blocks
    "http://192.0.0.192/",
    "http://192.0.0.9/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.0.1/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.1/",
    "http://192.88.99.1/",
    # local-only and metadata names
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://metadata/",
    "http://metadata.goog/",
    "http://instance-data/latest/",
    "http://ip-10-0-0-1.ec2.internal/",
    "http://localhost/",
    "http://localhost:8080/",
    "http://LOCALHOST./",
    "http://localhost../",
    "http://foo.localhost/",
    "http://foo.localhost./",
    "http://loc%61lhost/",
    "http://ｌｏｃａｌｈｏｓｔ/",
    "http://localhost.localdomain/",
    "http://router.home.arpa/",
    # port 0
    "http://example.com:0/",
    # names whose addresses are not public
    "http://internal-only.example/",
    "http://mixed.example/",
    "http://mixed-late.example/",
    "http://v6private.example/",
    "http://mapped.example/",
    "http://nat64.example/",
    "http://loopback.example:8080/",
]

INVALID = [
    "file:///etc/passwd",
    "file://127.0.0.1/etc/passwd",
    "gopher://127.0.0.1:70/_GET",
    "javascript:alert(1)",
    "data:text/html,<h1>hi</h1>",
    "ftp://example.com/",
    "ws://example.com/",
    "chrome://settings/",
    "view-source:http://127.0.0.1/",
    "http://example.com/" + "a" * 2100,
    "http://[fe80::1%25eth0]/",
    "http://0x100000000/",
    "http://256.256.256.256/",
    "http://example.com:65536/",
    "http://127.0.0.1%00.example.com/",
    "http://",
    "",
    # userinfo: invalid input, whatever the host
    "http://user@example.com/",
    "http://user:pass@example.com/",
    "http://a:@example.com/",
    "http://example.com@127.0.0.1/",
    "http://example.com:80@127.0.0.1/",
    "https://93.184.216.34@10.0.0.1/",
    # single-label and empty hosts: the resolver's search domains would decide
    "http://intranet/",
    "http://INTRANET./",
    "http:///etc/passwd",  # WHATWG: host "etc"
    "http:etc/passwd",
    "https://com/",
    "http://nxdomain/",
    "http://xn--ls8h/",
    # names no resolver can look up
    "http://a..example.com/",
    "http://.example.com/",
    "http://example.com../",
    "http://" + "a" * 64 + ".example.com/",
    "http://" + "a." * 127 + "com/",  # 257 characters
    "http://a!b.example.com/",
    "http://a*b.example.com/",
    'http://a"b.example.com/',
    "http://a{b}.example.com/",
    "http://a$b.example.com/",
]

PUBLIC = [
    "https://example.com/",
    "https://xn--ls8h.la/",  # a registered name httpx's IDNA codec refuses
    "https://💩.la/",
    "http://xn--zz.com/",
    "http://XN--A.com/",
    "http://_dmarc.example.com/",
    "http://a-.example.com./",
    "http://" + "a" * 63 + ".example.com/",
    "http://example.com:8080/path?q=1#frag",
    "https://EXAMPLE.com./",
    "http://v6.example/",
    "http://8.8.8.8/",
    "http://1.1.1.1/",
    "http://134744072/",
    "http://[2606:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "http://[64:ff9b::808:808]/",
    "http://[2002:808:808::1]/",
    "http://93.184.216.34/",
]


def test_the_table_is_big_enough() -> None:
    assert len(BLOCKED) + len(INVALID) >= 60


@pytest.mark.parametrize("url", BLOCKED)
async def test_blocked(url: str) -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    with pytest.raises(URLBlocked) as info:
        await check_and_resolve(policy, url)
    assert info.value.code == "URL_BLOCKED"


@pytest.mark.parametrize("url", INVALID)
async def test_invalid(url: str) -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    with pytest.raises(InvalidURL):
        await check_and_resolve(policy, url)


@pytest.mark.parametrize("url", PUBLIC)
async def test_public_passes(url: str) -> None:
    resolver = FakeResolver(default=["93.184.216.34"])
    addresses = await check_and_resolve(EgressPolicy(resolver=resolver), url)
    assert addresses
    assert all(is_public_address(a) for a in addresses)


@pytest.mark.parametrize(
    "url",
    [u for u in BLOCKED if ":0/" not in u and "localhost.." not in u],
)
async def test_allow_private_opens_addresses_and_names(url: str) -> None:
    # localhost, metadata.google.internal...: answered like the real thing would, but
    # this machine itself (loopback, "this host") only opens when ``allow`` names it.
    resolver = FakeResolver(default=["10.0.0.5", "169.254.169.254"])
    policy = EgressPolicy(allow_private=True, resolver=resolver)
    if _reaches_this_machine(url):
        with pytest.raises(URLBlocked):
            await check_and_resolve(policy, url)
        policy = attrs.evolve(policy, allow=("0.0.0.0/0", "::/0"))
    assert await check_and_resolve(policy, url)


def _reaches_this_machine(url: str) -> bool:
    host = EgressPolicy(allow_private=True, allow=("0.0.0.0/0", "::/0")).check_url(url).hostname
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = [ipaddress.ip_address(a) for a in ZONE.get(host.rstrip("."), [])]
    return any(_reaches_this_host(a) for a in addresses)


def test_allow_private_still_refuses_port_zero() -> None:
    with pytest.raises(URLBlocked):
        EgressPolicy(allow_private=True).check_url("http://127.0.0.1:0/")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://x.y/" + "a" * 2100,
        "http://user@127.0.0.1/",
        "http://example.com@127.0.0.1/",
        # single-label names other than the local ones bulk knows stay invalid
        "http://intranet/",
        "http:///etc/passwd",
        # so do names no resolver can look up, local or not
        "http://localhost../",
        "http://a..localhost/",
    ],
)
async def test_allow_private_still_refuses_invalid_input(url: str) -> None:
    resolver = FakeResolver(default=["127.0.0.1"])
    policy = EgressPolicy(allow_private=True, resolver=resolver)
    with pytest.raises(InvalidURL):
        policy.check_url(url)
    try:
        parsed = parse_http_url(url)
    except InvalidURL:
        return
    if parsed.has_userinfo:
        return  # a URL property; the host alone is fine
    # The connection path judges the host the same way (httpx hands it over bare).
    with pytest.raises(InvalidURL):
        await policy.resolve(parsed.hostname, parsed.port)
    assert resolver.calls == []


def test_check_url_returns_the_canonical_form() -> None:
    policy = EgressPolicy()
    parsed = policy.check_url("HTTP://ExAmPle.COM:80/a/../b?x#y")
    assert parsed.href == "http://example.com/b?x#y"
    assert policy.check_url(parsed) == parsed
    assert policy.check_url("http://134744072/").hostname == "8.8.8.8"


# -- ports -------------------------------------------------------------------------------


async def test_allowed_ports() -> None:
    policy = EgressPolicy(allowed_ports=[80, 443], resolver=FakeResolver())
    assert await check_and_resolve(policy, "https://example.com/")
    assert await check_and_resolve(policy, "http://example.com:443/")
    with pytest.raises(URLBlocked, match="port 8080"):
        policy.check_url("http://example.com:8080/")
    with pytest.raises(URLBlocked, match="port 22"):
        await policy.resolve("example.com", 22)
    # explicit configuration wins over --allow-private
    with pytest.raises(URLBlocked):
        attrs.evolve(policy, allow_private=True).check_url("http://10.0.0.1:8080/")


# -- resolution --------------------------------------------------------------------------


async def test_resolve_keeps_resolver_order_without_duplicates() -> None:
    addresses = await EgressPolicy(resolver=FakeResolver()).resolve("both.example", 443)
    assert addresses == [
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:4700::1111"),
    ]


async def test_dns_failure_is_fetch_error() -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    policy.check_url("http://nxdomain.example/")  # nothing wrong with the URL itself
    with pytest.raises(FetchError, match=r"could not resolve host nxdomain\.example"):
        await policy.resolve("nxdomain.example", 80)


async def test_empty_answer_is_fetch_error() -> None:
    resolver = FakeResolver(zone={"empty.example": []})
    with pytest.raises(FetchError):
        await EgressPolicy(resolver=resolver).resolve("empty.example", 80)


async def test_blocked_name_message_does_not_leak_the_address() -> None:
    with pytest.raises(URLBlocked) as info:
        await EgressPolicy(resolver=FakeResolver()).resolve("internal-only.example", 80)
    assert "internal-only.example" in info.value.message
    assert "10.0.0.5" not in info.value.message


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "::1", "0x7f.1", "127.1", "2130706433", "LOCALHOST", "localhost."],
)
async def test_resolve_judges_literals_and_names_without_a_lookup(host: str) -> None:
    # httpx hands its own parse of the host to the backend ("0x7f.1" stays a name
    # there); the policy canonicalises it the WHATWG way before anything else.
    resolver = FakeResolver()
    with pytest.raises(URLBlocked):
        await EgressPolicy(resolver=resolver).resolve(host, 80)
    assert resolver.calls == []


@pytest.mark.parametrize("host", ["a@127.0.0.1", "a/b", "host:80", "", "a b", "[::1"])
async def test_resolve_refuses_things_that_are_not_hosts(host: str) -> None:
    with pytest.raises(InvalidURL):
        await EgressPolicy(resolver=FakeResolver()).resolve(host, 80)


async def test_real_resolver_for_localhost() -> None:
    # The one real lookup in the tests: /etc/hosts, never the network.
    addresses = await EgressPolicy(allow=("localhost",)).resolve("localhost", 80)
    assert addresses
    assert all(a.is_loopback for a in addresses)
    with pytest.raises(URLBlocked):
        await EgressPolicy().resolve("localhost", 80)


# -- allow-lists -------------------------------------------------------------------------


async def test_allow_cidr_opens_exactly_that_range() -> None:
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=FakeResolver())
    assert await check_and_resolve(policy, "http://127.0.0.1:8080/")
    assert await check_and_resolve(policy, "http://127.1/")  # canonicalised first
    assert await check_and_resolve(policy, "http://loopback.example/")
    for url in (
        "http://127.0.0.2/",
        "http://canary.example/",
        "http://[::ffff:127.0.0.1]/",  # another spelling is not the allowed network
        "http://[::1]/",
        "http://localhost/",  # a blocked name is not an address
        "http://10.0.0.1/",
    ):
        with pytest.raises(URLBlocked):
            await check_and_resolve(policy, url)


async def test_allow_wider_cidrs_and_bare_addresses() -> None:
    policy = EgressPolicy(allow=("10.0.0.0/8", "::1/128", "192.168.1.7"), resolver=FakeResolver())
    assert await check_and_resolve(policy, "http://10.255.0.1/")
    assert await check_and_resolve(policy, "http://internal-only.example/")
    assert await check_and_resolve(policy, "http://[::1]:8080/")
    assert await check_and_resolve(policy, "http://192.168.1.7/")
    for url in ("http://192.168.1.8/", "http://[::2]/", "http://[::1:1]/"):
        with pytest.raises(URLBlocked):
            await check_and_resolve(policy, url)


async def test_allow_hostname() -> None:
    policy = EgressPolicy(allow=("Intranet.Corp.",), resolver=FakeResolver())
    assert await check_and_resolve(policy, "http://intranet.corp/")
    assert await check_and_resolve(policy, "http://INTRANET.CORP./")
    with pytest.raises(URLBlocked):
        await check_and_resolve(policy, "http://other.corp/")
    with pytest.raises(URLBlocked):
        await check_and_resolve(policy, "http://sub.intranet.corp.localhost/")


async def test_allow_hostname_opens_a_blocked_name() -> None:
    policy = EgressPolicy(allow=("localhost",), resolver=FakeResolver(default=["127.0.0.1"]))
    assert await check_and_resolve(policy, "http://localhost:8080/")
    with pytest.raises(URLBlocked):
        await check_and_resolve(policy, "http://foo.localhost/")


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.1/8", "10.0.0.0/33", "::1/129", "*.corp", "http://x/", "x:80", "", "127.1", "a b"],
)
def test_bad_allow_entries(entry: str) -> None:
    with pytest.raises(ValidationError) as info:
        EgressPolicy(allow=(entry,))
    assert info.value.field == "allow"


def test_allow_must_not_be_a_string() -> None:
    with pytest.raises(ValidationError) as info:
        EgressPolicy(allow="10.0.0.0/8")  # a str is an iterable of one-letter entries
    assert info.value.field == "allow"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_bad_allowed_ports(port: int) -> None:
    with pytest.raises(ValidationError) as info:
        EgressPolicy(allowed_ports=[port])
    assert info.value.field == "allowed_ports"


def test_policy_equality_ignores_the_resolver() -> None:
    assert EgressPolicy(resolver=FakeResolver()) == EgressPolicy()
    assert hash(EgressPolicy(allow=("10.0.0.0/8",))) == hash(EgressPolicy(allow=("10.0.0.0/8",)))


# -- address classes ---------------------------------------------------------------------

NON_PUBLIC_ADDRESSES = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.255",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "192.0.0.1",
    "192.0.0.9",
    "192.0.0.192",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.0.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "233.252.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",
    "::10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0:7f00:1",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::808:808",
    "100::1",
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:2::1",
    "2001:3::1",
    "2001:4:112::1",
    "2001:10::1",
    "2001:20::1",
    "2001:db8::1",
    "2002:7f00:1::",
    "2002:a00:1::1",
    "2002:c0a8:101::1",
    "3fff::1",
    "fc00::1",
    "fd00::1",
    "fe80::1",
    "fe80::1%1",
    "fec0::1",
    "ff00::1",
    "ff02::1",
    "ff0e::1",
    "5f00::1",
    "4000::1",
]

PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "9.9.9.9",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", NON_PUBLIC_ADDRESSES)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


# -- connect -----------------------------------------------------------------------------


@attrs.define
class Server:
    """A loopback TCP server answering every connection with one fixed response.

    ``requests`` holds the ``Host`` header of each request, in order.
    """

    port: int = 0
    connections: int = 0
    requests: list[str] = attrs.field(factory=list)


async def _serve_fixed(
    nursery: trio.Nursery,
    host: str,
    port: int = 0,
    body: bytes = b"hello",
    *,
    status: bytes = b"200 OK",
    headers: bytes = b"",
) -> Server:
    server = Server()

    async def handle(stream: trio.SocketStream) -> None:
        server.connections += 1
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
            found = re.search(rb"(?im)^host:[ \t]*([^\r\n]*)", data)
            server.requests.append(found.group(1).decode() if found else "")
            await stream.send_all(
                b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s"
                % (status, len(body), headers, body)
            )

    listeners = await nursery.start(partial(trio.serve_tcp, handle, port, host=host))
    server.port = listeners[0].socket.getsockname()[1]
    return server


@pytest.fixture
async def servers(nursery: trio.Nursery) -> AsyncIterator[tuple[Server, Server]]:
    """A server on 127.0.0.1 and a canary on 127.0.0.2, on the same port number."""
    server = await _serve_fixed(nursery, "127.0.0.1")
    canary = await _serve_fixed(nursery, "127.0.0.2", server.port, b"canary")
    yield server, canary
    assert canary.connections == 0


async def test_connect_to_allowed_and_blocked(servers: tuple[Server, Server]) -> None:
    server, canary = servers
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=FakeResolver())
    stream = await policy.connect("loopback.example", server.port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"hello" in await _read_all(stream)
    with pytest.raises(URLBlocked):
        await policy.connect("127.0.0.2", canary.port)
    with pytest.raises(URLBlocked):
        await policy.connect("canary.example", canary.port)


async def test_connect_failure_is_fetch_error() -> None:
    port = _closed_port()
    policy = EgressPolicy(allow=("127.0.0.1/32",))
    with pytest.raises(FetchError, match="could not connect"):
        await policy.connect("127.0.0.1", port)


async def test_connect_does_not_look_up_twice(servers: tuple[Server, Server]) -> None:
    server, _canary = servers
    calls, resolver = sequence_resolver(["127.0.0.1"], ["127.0.0.2"])
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    async with await policy.connect("rebind.example", server.port):
        pass
    assert calls == ["rebind.example"]
    assert server.connections == 1


# -- httpx -------------------------------------------------------------------------------


async def test_transport_fetches_allowed_and_raises_url_blocked(
    servers: tuple[Server, Server],
) -> None:
    server, canary = servers
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=FakeResolver())
    transport = policy_transport(policy)
    # Pinned: httpx 0.28 builds the pool in __init__; ours must carry the backend.
    assert isinstance(transport._pool._network_backend, PolicyNetworkBackend)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
        assert response.status_code == 200
        assert response.text == "hello"
        response = await client.get(f"http://loopback.example:{server.port}/")
        assert response.text == "hello"
        for url in (
            f"http://127.0.0.2:{canary.port}/",
            f"http://canary.example:{canary.port}/",
            f"http://0x7f.2:{canary.port}/",  # httpx keeps this as a name; we do not
            f"http://2130706434:{canary.port}/",
            f"http://localhost:{server.port}/",
            f"http://[::1]:{server.port}/",
        ):
            # URLBlocked comes out of httpx itself, not wrapped in an httpx error.
            with pytest.raises(URLBlocked):
                await client.get(url)


async def test_transport_dns_failure_is_connect_error() -> None:
    policy = EgressPolicy(resolver=FakeResolver())
    async with httpx.AsyncClient(transport=policy_transport(policy)) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get("http://nxdomain.example/")
    assert str(info.value) == "could not resolve host nxdomain.example"


async def test_transport_rebinding_uses_the_checked_address(
    servers: tuple[Server, Server],
) -> None:
    server, _canary = servers
    calls, resolver = sequence_resolver(["127.0.0.1"], ["127.0.0.2"])
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    async with httpx.AsyncClient(transport=policy_transport(policy)) as client:
        response = await client.get(f"http://rebind.example:{server.port}/")
    assert response.text == "hello"
    assert calls == ["rebind.example"]


# A self-signed certificate for "origin.test" only (test material, valid until 2126).
ORIGIN_TEST_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBmTCCAT6gAwIBAgIURX9PMBuA7WGImM8t0bW28BFySRgwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLb3JpZ2luLnRlc3QwIBcNMjYxMTIzMDkyNjUyWhgPMjEyNjEw
MzAwOTI2NTJaMBYxFDASBgNVBAMMC29yaWdpbi50ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEmcwaYCZ42wpybAnSbs5oS6PBrE6rOkfOmWQ/KXtSkofuUiMj
K+R+7OLd8tpnn96vjPUmdKvd4P+7lVMEinsKs6NoMGYwHQYDVR0OBBYEFII1e5N+
rgiPeeSEDFZ6/3L01wrrMB8GA1UdIwQYMBaAFII1e5N+rgiPeeSEDFZ6/3L01wrr
MBYGA1UdEQQPMA2CC29yaWdpbi50ZXN0MAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E
AwIDSQAwRgIhAP1E/igtax+OJUbckDRiBspjyca+c6LaSwyzi0kyHWcAAiEAgeu0
hk1oeX47w9Mzp6vuatm5Ns3Krszt/XBOqatAv10=
-----END CERTIFICATE-----
"""
ORIGIN_TEST_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwOu88lFdGQIs52xc
8asXsdFco90O8o6dNMsLThmmaeehRANCAASZzBpgJnjbCnJsCdJuzmhLo8GsTqs6
R86ZZD8pe1KSh+5SIyMr5H7s4t3y2mef3q+M9SZ0q93g/7uVUwSKewqz
-----END PRIVATE KEY-----
"""


@pytest.fixture
def server_context(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(ORIGIN_TEST_CERT)
    key.write_text(ORIGIN_TEST_KEY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_tls_verifies_the_url_host_not_the_address(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    # The backend connects to the checked IP; TLS must still check the URL's name.

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        try:
            await tls.do_handshake()
            await tls.receive_some(65536)
            await tls.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntls"
            )
        except trio.BrokenResourceError:
            pass  # the client refused our certificate
        finally:
            await trio.aclose_forcefully(tls)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client_context = ssl.create_default_context(cadata=ORIGIN_TEST_CERT)
    client_context.verify_flags &= ~ssl.VERIFY_X509_STRICT  # a self-signed leaf as anchor
    resolver = FakeResolver(zone={"origin.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    transport = policy_transport(policy, verify=client_context)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"https://origin.test:{port}/")
        assert response.text == "tls"
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"https://impostor.test:{port}/")
    assert any(isinstance(exc, ssl.SSLCertVerificationError) for exc in _chain(info.value))


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes/contexts (httpcore re-raises ``from None``)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


@attrs.define
class RecordingBackend:
    hosts: list[str] = attrs.field(factory=list)

    async def connect_tcp(self, host: str, port: int, **kwargs: object) -> None:
        self.hosts.append(host)
        await trio.lowlevel.checkpoint()
        raise httpcore.ConnectError("recorded, not connected")


async def test_backend_connects_to_the_public_address_it_checked() -> None:
    calls, resolver = sequence_resolver(["93.184.216.34"], ["127.0.0.1"])
    backend = PolicyNetworkBackend(EgressPolicy(resolver=resolver))
    recorder = RecordingBackend()
    backend._backend = recorder  # type: ignore[assignment]
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("rebind.example", 443, timeout=5)
    assert recorder.hosts == ["93.184.216.34"]
    assert calls == ["rebind.example"]


async def test_backend_refuses_unix_sockets() -> None:
    backend = PolicyNetworkBackend(EgressPolicy(allow_private=True))
    with pytest.raises(URLBlocked):
        await backend.connect_unix_socket("/var/run/docker.sock")


async def test_backend_resolution_timeout() -> None:
    async def slow(host: str, port: int) -> list[IPAddress]:
        await trio.sleep(10)
        return []

    backend = PolicyNetworkBackend(EgressPolicy(resolver=slow))
    with trio.fail_after(2), pytest.raises(httpcore.ConnectTimeout):
        await backend.connect_tcp("slow.example", 80, timeout=0.05)


# -- single-label names ------------------------------------------------------------------


async def test_single_label_name_needs_an_allow_entry_naming_it() -> None:
    resolver = FakeResolver(default=["10.1.2.3"])
    policy = EgressPolicy(allow=("Intranet",), resolver=resolver)
    assert await check_and_resolve(policy, "http://intranet/")
    assert await check_and_resolve(policy, "http://INTRANET.:8080/x")
    assert resolver.calls == ["intranet", "intranet."]
    for url in ("http://wiki/", "http:///etc/passwd"):
        with pytest.raises(InvalidURL):
            policy.check_url(url)
    # A network entry opens addresses, not names: "wiki" still goes nowhere.
    with pytest.raises(InvalidURL):
        EgressPolicy(allow=("10.0.0.0/8",), allow_private=True).check_url("http://wiki/")
    assert resolver.calls == ["intranet", "intranet."]


def test_local_names_keep_their_code() -> None:
    # A local-only name is a policy refusal, single label or not; --allow-private
    # opens it as before.
    for url in ("http://localhost/", "http://metadata/", "http://ip6-localhost./"):
        with pytest.raises(URLBlocked):
            EgressPolicy().check_url(url)
        assert EgressPolicy(allow_private=True).check_url(url)


# -- one parser: what the policy accepts is what httpx and the proxy use -----------------

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LDH_LABELS = st.text(alphabet=_LOWER + _LOWER.upper() + "0123456789-_", max_size=12)
# ASCII that WHATWG lets into a host but no resolver takes, and '%' escapes.
_ODD_ASCII = st.text(alphabet="!$&'()*+,;=~\"{}`%", min_size=1, max_size=2)
_UNICODE_LABELS = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=6
)
_PUNYCODE_ANY = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(["xn--", "XN--", "xn--a", "xn--ls8h", "xn--zz", "xn--a-"]),
    st.text(alphabet=_LOWER + "0123456789-", max_size=8),
)


def _ada_label(text: str) -> str:
    """``text`` as ada spells it in a host (a valid punycode label for IDNs)."""
    try:
        return parse_http_url(f"http://{text}.com/").hostname.split(".")[0] or "a"
    except InvalidURL:
        return "xn--a"


_LABELS = st.one_of(
    _LDH_LABELS,
    _UNICODE_LABELS,
    _PUNYCODE_ANY,
    st.builds(_ada_label, _UNICODE_LABELS),  # valid punycode
    st.builds(lambda n: "a" * n, st.integers(min_value=60, max_value=70)),
    st.builds(lambda a, b, c: a + b + c, _LDH_LABELS, _ODD_ASCII, _LDH_LABELS),
)
_NAMES = st.builds(
    lambda labels, separator, tail: separator.join(labels) + tail,
    st.lists(_LABELS, min_size=1, max_size=5),
    st.sampled_from([".", ".", ".", "\u3002", "\uff0e"]),
    st.sampled_from(["", "", ".", ".."]),
)
_IPV4_FORMS = st.builds(
    lambda ip, form: form(ip),
    st.ip_addresses(v=4),
    st.sampled_from(
        [
            str,
            lambda ip: str(int(ip)),
            lambda ip: hex(int(ip)),
            lambda ip: ".".join(f"0{int(part):o}" for part in str(ip).split(".")),
            lambda ip: str(ip) + ".",
        ]
    ),
)
_IPV6_FORMS = st.builds(
    lambda ip, mapped: f"[::ffff:{ip.ipv4_mapped or '1.2.3.4'}]" if mapped else f"[{ip}]",
    st.ip_addresses(v=6),
    st.booleans(),
)
_HOSTS = st.one_of(_NAMES, _NAMES, _NAMES, _IPV4_FORMS, _IPV6_FORMS, st.text(max_size=6))
_GENERATED_URLS = st.builds(
    lambda scheme, host, port, rest: f"{scheme}://{host}{port}{rest}",
    st.sampled_from(["http", "https", "HTTPS"]),
    _HOSTS,
    st.sampled_from(["", ":8080", ":443", ":80"]),
    st.sampled_from(["/", "", "/a b/%zz?q='1'#frag", "/\u00e9?\u00e9"]),
)
_TLS_CLIENT = ssl.create_default_context()
_PUBLIC_ANSWER = FakeResolver(default=["93.184.216.34"])
_POLICIES = (
    EgressPolicy(resolver=_PUBLIC_ANSWER),
    EgressPolicy(allow_private=True, resolver=_PUBLIC_ANSWER),
)


async def _through_policy_client(policy: EgressPolicy, url: str, parsed: ParsedURL) -> None:
    """Send ``url`` through ``policy_client`` (no network: a mock transport)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Set-Cookie": "a=b; Path=/"})

    async with policy_client(policy, timeout=5, transport=httpx.MockTransport(answer)) as client:
        await client.get(url)
        await client.post(url, content=b"{}")  # with the cookie the first answer set
    assert [str(r.url) for r in seen] == [parsed.without_fragment()] * 2
    assert [r.headers["host"] for r in seen] == [parsed.authority] * 2


@settings(max_examples=300, deadline=None)
@given(_GENERATED_URLS)
def test_every_url_the_policy_accepts_builds_an_httpx_request(url: str) -> None:
    for policy in _POLICIES:
        try:
            parsed = policy.check_url(url)
        except BulkError as exc:
            # Refused: always one of the policy's own codes, before any I/O.
            assert exc.code in {"INVALID_URL", "URL_BLOCKED"}, exc
            continue
        target = parsed.without_fragment()
        # httpx takes ada's form byte for byte: no re-encoding, no IDNA decoding.
        request = httpx.Request("GET", target, headers={"Host": parsed.authority})
        assert str(request.url) == target
        raw_host = request.url.raw_host.decode("ascii")
        assert raw_host == parsed.hostname
        # The client: build, send, cookies.
        trio.run(_through_policy_client, policy, url, parsed)
        # The connection: httpcore hands the policy backend the raw host; it is
        # judged like check_url did (never InvalidURL there).
        assert trio.run(policy.resolve, raw_host, parsed.port)
        if parsed.scheme == "https":
            # TLS: Python's ssl encodes the server name with its IDNA codec.
            _TLS_CLIENT.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=raw_host)


@settings(max_examples=300, deadline=None)
@given(_HOSTS, st.sampled_from([443, 8080]))
def test_the_proxy_reads_authorities_by_the_same_rule(host: str, port: int) -> None:
    # Chromium sends the proxy the host in WHATWG form ("CONNECT xn--ls8h.la:443");
    # the proxy parses the authority and the policy judges it exactly like the URL.
    policy = EgressPolicy(allow_private=True)
    try:
        parsed = policy.check_url(f"https://{host}:{port}/")
    except BulkError:
        parsed = None
    if parsed is not None:
        assert _split_authority(f"{parsed.host}:{port}") == (parsed.host, port)
        # The authority alone (a generated host may carry "/?#": what follows it is
        # path and query, not host).
        again = policy.check_url(f"https://{parsed.host}:{port}/")
        assert (again.hostname, again.port) == (parsed.hostname, parsed.port)
    try:
        proxy_host, proxy_port = _split_authority(f"{host}:{port}")
    except _BadRequest:
        return  # not an authority at all: 400 before the policy is asked
    try:
        by_proxy = policy.check_url(f"https://{proxy_host}:{proxy_port}/")
    except BulkError:
        by_proxy = None
    if parsed is None:
        assert by_proxy is None
    else:
        assert by_proxy is not None and by_proxy.hostname == parsed.hostname


async def test_idn_host_httpx_refuses_is_fetched_by_its_ascii_name(
    servers: tuple[Server, Server],
) -> None:
    # issue 11 item 1: httpx.Request("GET", "https://xn--ls8h.la/") raises
    # idna.IDNAError (not an httpx error); the policy client sends ada's form.
    server, _canary = servers
    names = ["xn--ls8h.la", "xn--zz.com", "xn--a.com"]
    resolver = FakeResolver(zone={name: ["127.0.0.1"] for name in names})
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    async with policy_client(policy, timeout=5) as client:
        for url in ("http://💩.la:{p}/", "http://XN--ZZ.com:{p}/", "http://xn--a.com:{p}/x"):
            response = await client.get(url.format(p=server.port))
            assert response.text == "hello"
    assert resolver.calls == names
    assert server.requests[-3:] == [
        f"xn--ls8h.la:{server.port}",
        f"xn--zz.com:{server.port}",
        f"xn--a.com:{server.port}",
    ]


async def test_fetcher_follows_a_redirect_to_an_idn_host(
    servers: tuple[Server, Server], nursery: trio.Nursery
) -> None:
    server, _canary = servers
    redirect = await _serve_fixed(
        nursery,
        "127.0.0.1",
        status=b"302 Found",
        headers=b"Location: http://\xf0\x9f\x92\xa9.la:%d/sitemap.xml\r\n" % server.port,
    )
    # From one name httpx's IDNA codec refuses to another: httpx's own redirect
    # bookkeeping would decode both hosts (and raise idna.IDNAError) even when not
    # following.
    resolver = FakeResolver(zone={"xn--ls8h.la": ["127.0.0.1"], "xn--zz.com": ["127.0.0.1"]})
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    async with (
        open_fetcher(policy) as fetcher,
        fetcher.get(f"http://xn--zz.com:{redirect.port}/") as response,
    ):
        assert response.url == f"http://xn--ls8h.la:{server.port}/sitemap.xml"
        assert response.redirect_chain == (f"http://xn--zz.com:{redirect.port}/",)
        assert await response.read(100) == b"hello"
    assert redirect.requests == [f"xn--zz.com:{redirect.port}"]
    assert server.requests[-1] == f"xn--ls8h.la:{server.port}"
    async with policy_client(policy, timeout=5) as client:
        response = await client.get(f"http://xn--zz.com:{redirect.port}/")
        assert response.status_code == 302 and response.next_request is None
        with pytest.raises(ValueError, match="redirects"):
            await client.get(f"http://xn--zz.com:{redirect.port}/", follow_redirects=True)


async def _proxy_exchange(proxy: EgressProxy, head: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream:
        await stream.send_all(head)
        return await _read_all(stream)


async def test_the_proxy_connects_idn_hosts_and_refuses_invalid_ones(
    servers: tuple[Server, Server],
) -> None:
    server, _canary = servers
    resolver = FakeResolver(zone={"xn--ls8h.la": ["127.0.0.1"], "intranet": ["127.0.0.1"]})
    policy = EgressPolicy(allow=("127.0.0.1/32",), resolver=resolver)
    port = server.port
    async with open_egress_proxy(policy, require_auth=False) as proxy:
        answer = await _proxy_exchange(
            proxy, b"GET http://xn--ls8h.la:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % port
        )
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        # What Chromium sends for https://💩.la:PORT/: a tunnel to the checked host.
        answer = await _proxy_exchange(
            proxy,
            b"CONNECT xn--ls8h.la:%d HTTP/1.1\r\nHost: xn--ls8h.la:%d\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: xn--ls8h.la\r\n\r\n" % (port, port),
        )
        assert answer.startswith(b"HTTP/1.1 200 Connection Established") and answer.endswith(
            b"hello"
        )
        for head in (
            b"CONNECT intranet:%d HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://intranet:%d/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT a..b.com:%d HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://user@xn--ls8h.la:%d/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            answer = await _proxy_exchange(proxy, head % port)
            assert answer.startswith(b"HTTP/1.1 400"), (head, answer)
            assert b"\r\nX-Bulk-Error: INVALID_URL\r\n" in answer, (head, answer)
    assert resolver.calls == ["xn--ls8h.la", "xn--ls8h.la"]
    assert server.connections == 2


# -- helpers -----------------------------------------------------------------------------


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
