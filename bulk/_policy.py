"""The egress policy: the one decision every outgoing connection of bulk passes.

A screenshot service fetches URLs strangers give it, so nothing it connects to may be
an internal address. Every connection goes through an ``EgressPolicy``:

- httpx (robots.txt, sitemaps) through ``policy_transport``, whose httpcore network
  backend resolves names with ``EgressPolicy.resolve`` and connects to the checked IP
  itself, so a name cannot re-resolve to something else between check and connect
  (DNS rebinding);
- Chromium through the egress proxy in ``_proxy.py``, which applies the same policy to
  every ``CONNECT`` and absolute-form request the browser makes, sub-resources and
  redirects included.

Decisions are made on the URL in the form the WHATWG parser (ada, the same rules
Chromium follows) canonicalises it to: ``http://0x7f.1/``, ``http://2130706433/`` and
``http://１２７．０．０．１/`` are all judged as ``127.0.0.1``. That form is also the
one used afterwards: ``policy_client`` hands httpx ada's ASCII host and the ``Host``
header, so httpx never re-encodes or decodes a name (its IDNA 2008 codec refuses
registered names such as ``xn--ls8h.la`` that WHATWG and Chromium accept), and the
proxy connects to the checked host. A host name must be one DNS could answer for
(``host_name_problem``) and have at least two labels: ``http://intranet/`` (or
``http:///etc/passwd``, host ``etc``) would go to the resolver's search domains, so it
is ``INVALID_URL`` before any I/O unless an ``allow`` entry names it.

Address classification is bulk's own (``is_public_address``): ``ipaddress.is_global``
calls some non-public addresses global (``::127.0.0.1``, ``64:ff9b::7f00:1``,
``2002:7f00:1::``, ``192.0.0.192``, multicast).

How a refusal surfaces through httpx: ``URLBlocked`` raised by the network backend is
not an httpcore exception, so neither httpcore nor httpx wraps it: ``client.get(...)``
raises the ``URLBlocked`` itself. Name-resolution and connection failures become
``httpx.ConnectError`` (``httpx.ConnectTimeout`` on timeout) like any other transport
failure, with the ``FetchError``'s message ("could not resolve host ..."). httpcore's
pool re-raises ``from None``, so no ``__cause__`` chain survives to rely on.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias, final

import attrs
import httpcore
import httpx
import trio

from ._exceptions import FetchError, InvalidURL, URLBlocked, ValidationError
from ._listeners import refuse_own_address, refuse_own_socket
from ._urls import MAX_URL_LENGTH, ParsedURL, host_name_problem, parse_http_url

__all__ = [
    "BLOCKED_NAMES",
    "BLOCKED_NAME_SUFFIXES",
    "EgressPolicy",
    "IPAddress",
    "PolicyNetworkBackend",
    "Resolver",
    "is_public_address",
    "policy_client",
    "policy_transport",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
#: An injectable name resolver: ``(host, port) -> addresses`` (tests use a fake one).
Resolver: TypeAlias = Callable[[str, int], Awaitable[list[IPAddress]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IPv4 blocks that are never a public web server (IANA special-purpose registry, plus
# 192.0.0.0/24 whole: its "global" members 192.0.0.9/10 are anycast protocol services,
# not websites).
_NON_PUBLIC_V4: Final = tuple(
    _V4(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 cloud metadata
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. 255.255.255.255 broadcast
    )
)

# Only 2000::/3 is allocated as global unicast; everything outside it is non-public
# except the forms that embed an IPv4 address (judged by that address, below).
_GLOBAL_UNICAST_V6: Final = _V6("2000::/3")
_NON_PUBLIC_V6: Final = tuple(
    _V6(net)
    for net in (
        # Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID(v2), AMT, AS112...: the
        # few members IANA marks global are protocol services, not websites.
        "2001::/23",
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_THIS_HOST: Final = _V4("0.0.0.0/8")
_IPV4_COMPATIBLE: Final = _V6("::/96")  # deprecated; judge the embedded IPv4
_NAT64_WELL_KNOWN: Final = _V6("64:ff9b::/96")  # RFC 6052; judge the embedded IPv4
_SIX_TO_FOUR: Final = _V6("2002::/16")  # judge the IPv4 in bits 16-48

#: Names refused before any lookup (compared lower-case, trailing dots removed).
BLOCKED_NAMES: Final = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        # Cloud metadata services (they also resolve to link-local addresses, which
        # the address check refuses; naming them gives a clearer error).
        "metadata",
        "metadata.goog",
        "instance-data",
    }
)
#: Suffixes refused before any lookup: RFC 6761 ``.localhost``, ICANN's private-use
#: ``.internal`` (``metadata.google.internal``, ``*.ec2.internal``) and RFC 8375
#: ``.home.arpa``. None of them can name a public website. ``.local`` (mDNS) is left to
#: the address check, which refuses the LAN addresses such names resolve to.
BLOCKED_NAME_SUFFIXES: Final = (".localhost", ".internal", ".home.arpa")

# Characters that cannot appear in a bare host handed to ``resolve``/``connect``; with
# them the string would parse as a URL with a different host (userinfo, path...).
_UNSAFE_HOST_CHARS: Final = re.compile(r"[\x00-\x20\x7f/\\@?#:\[\]<>^|]")
_ALLOW_NAME: Final = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$")


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is an address a public website may have.

    Conservative by design: anything special-purpose, reserved or ambiguous is not
    public. Forms that embed an IPv4 address (IPv4-mapped ``::ffff:0:0/96``,
    IPv4-compatible ``::/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by
    the IPv4 address they reach. The local-use NAT64 prefix ``64:ff9b:1::/48`` is
    always non-public (it is the operator's own translation domain).

    Args:
        ip: The address to judge.

    Returns:
        True only for a globally routable unicast address.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in _NON_PUBLIC_V4):
            return False
        return ip.is_global and not (
            ip.is_private
            or ip.is_reserved
            or ip.is_unspecified
            or ip.is_multicast
            or ip.is_link_local
            or ip.is_loopback
        )
    if ip.scope_id:
        # A zone only makes sense for link-local destinations.
        return False
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_public_address(embedded)
    if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _NON_PUBLIC_V6):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_link_local
        or ip.is_loopback
        or ip.is_site_local
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to ``ip`` ends up at, for the forms that embed one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _IPV4_COMPATIBLE or ip in _NAT64_WELL_KNOWN:
        # ``::`` and ``::1`` land here as 0.0.0.0 and 0.0.0.1: both non-public.
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    return None


def _reaches_this_host(ip: IPAddress) -> bool:
    """Loopback or "this host" (0.0.0.0/8, ``::``), also inside an IPv6 form that
    embeds an IPv4 address: what ``allow_private`` does not open."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_loopback or ip.is_unspecified:
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is None:
            return False
        ip = embedded
    return ip.is_loopback or ip in _THIS_HOST


def _is_blocked_name(name: str) -> bool:
    name = name.lower().rstrip(".")
    return name in BLOCKED_NAMES or name.endswith(BLOCKED_NAME_SUFFIXES)


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _canonical_host(host: str) -> str:
    """``host`` as Chromium would use it: IPs compressed, names WHATWG-canonical.

    Raises:
        InvalidURL: ``host`` is not a bare host name or address.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ip = _literal_ip(bare)
    if ip is not None:
        return str(ip)
    if not bare or _UNSAFE_HOST_CHARS.search(bare):
        raise InvalidURL(f"not a valid host: {bare[:80]!r}")
    # ada turns "0x7f.1", "127.1" or fullwidth digits into dotted IPv4, lower-cases
    # and punycodes names: the same host Chromium would connect to.
    return parse_http_url(f"http://{bare}/").hostname


def _to_allow_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValidationError(
            "allow must be a list of host names or CIDRs, not one string", field="allow"
        )
    return tuple(value)


def _to_ports(value: Iterable[int] | None) -> frozenset[int] | None:
    return None if value is None else frozenset(value)


@final
@attrs.frozen
class EgressPolicy:
    """Which destinations bulk may connect to.

    By default only public addresses (``is_public_address``) on any port 1-65535 are
    allowed, and local-only names (``BLOCKED_NAMES``, ``BLOCKED_NAME_SUFFIXES``) are
    refused before any lookup.

    Args:
        allow_private: Allow every destination but this machine itself (the CLI's
            ``--allow-private``, for archiving an intranet): loopback and "this host"
            addresses (``127.0.0.0/8``, ``::1``, ``0.0.0.0/8``, ``::``) stay refused
            unless ``allow`` names them. Non-http(s) schemes, userinfo, over-long
            URLs, port 0, ports outside ``allowed_ports`` and single-label names other
            than the local ones in ``BLOCKED_NAMES`` (``localhost``...) are still
            refused.
        allow: Exceptions to the address rules: exact host names (``"intranet.corp"``,
            ``"intranet"``, no wildcards; the name may then resolve to any address,
            and a single-label name is accepted) and IP networks (``"10.0.0.0/8"``,
            ``"127.0.0.1/32"``, ``"::1/128"``; a bare address means that one
            address). A network entry opens exactly that range.
        allowed_ports: When set, the only ports allowed, even with ``allow_private``.
        resolver: Replaces ``trio.socket.getaddrinfo`` (tests); not part of equality.

    Raises:
        ValidationError: An ``allow`` entry is neither a host name nor an IP network
            (field ``allow``), or a port is outside 1-65535 (field ``allowed_ports``).
    """

    allow_private: bool = False
    allow: tuple[str, ...] = attrs.field(default=(), converter=_to_allow_tuple)
    allowed_ports: frozenset[int] | None = attrs.field(default=None, converter=_to_ports)
    resolver: Resolver | None = attrs.field(default=None, eq=False, repr=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        init=False, eq=False, repr=False
    )
    _names: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        names: set[str] = set()
        for entry in self.allow:
            network, name = _parse_allow_entry(entry)
            if network is not None:
                networks.append(network)
            if name is not None:
                names.add(name)
        for port in self.allowed_ports or ():
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ValidationError(
                    f"allowed port {port!r} is not between 1 and 65535", field="allowed_ports"
                )
        # Frozen attrs class: derived state is set once, here.
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_names", frozenset(names))

    def check_url(self, url: str | ParsedURL) -> ParsedURL:
        """Refuse a URL on what it says, before any I/O.

        Checks the scheme (http/https), length, userinfo, port, a literal IP host, and
        a host name's form (``host_name_problem``, at least two labels) and local-only
        names. A host name that passes still has to pass ``resolve``. Whatever passes
        builds an httpx request through ``policy_client`` and is what Chromium sends
        to the egress proxy.

        Args:
            url: The URL as written, or already parsed (re-parsed here, so a
                hand-built ``ParsedURL`` cannot skip canonicalisation).

        Returns:
            The canonical URL, the form that must be used from here on.

        Raises:
            InvalidURL: Not an http(s) URL bulk can parse, over 2048 characters, with
                a user name or password (``http://user@host``,
                ``http://a.com@10.0.0.1``), or a host name no resolver could look up
                or that has a single label (``http://intranet/``) and no ``allow``
                entry naming it.
            URLBlocked: A refused port, a non-public literal IP or a local-only name.
        """
        text = url.href if isinstance(url, ParsedURL) else url
        if len(text) > MAX_URL_LENGTH:
            raise InvalidURL(f"URL is longer than {MAX_URL_LENGTH} characters")
        parsed = parse_http_url(text)
        if parsed.has_userinfo:
            # Refused rather than stripped: "http://example.com@10.0.0.1/" exists to
            # make a human (or a filter) misread the host. Invalid input, not a
            # destination the policy judged: Chromium never sends one to the proxy.
            raise InvalidURL(
                "URLs with a user name or password are not accepted",
                details={"host": parsed.host},
            )
        self._check_port(parsed.hostname, parsed.port)
        ip = _literal_ip(parsed.hostname)
        if ip is not None:
            self.check_address(parsed.hostname, ip)
        else:
            self._check_name(parsed.hostname)
        return parsed

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Refuse connecting to ``ip`` on behalf of ``host`` unless it is allowed.

        Allowed when ``ip`` is public, ``allow_private`` is set and ``ip`` is not
        this machine's (loopback, "this host"), an allowed network contains it, or
        ``host`` is an allowed host name.

        Args:
            host: The name (or literal address) the connection is for.
            ip: One address it resolved to.

        Raises:
            URLBlocked: None of the above; the message names the host, not the
                address a name resolved to (that would map internal DNS for a caller).
        """
        if (self.allow_private and not _reaches_this_host(ip)) or is_public_address(ip):
            return
        if any(ip.version == net.version and ip in net for net in self._networks):
            return
        name = host.lower().rstrip(".")
        if name in self._names:
            return
        if _literal_ip(host.strip("[]")) is not None:
            message = f"{host} is not a public address"
        else:
            message = f"{host} resolves to a non-public address"
        details: dict[str, object] = {"host": host}
        if _reaches_this_host(ip):
            # Only --allow opens this machine; the CLI's hint must not offer --allow-private.
            details["this_machine"] = True
        raise URLBlocked(message, details=details)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and check every address it resolves to.

        The host is canonicalised like ``check_url`` does, so ``0x7f.1`` or
        ``127.1`` handed over by a different URL parser (httpx's) is judged as
        ``127.0.0.1`` rather than passed to the system resolver. A literal IP is
        checked without a lookup. One non-public address among the answers refuses the
        whole name: which address a client would pick is not ours to guess.

        Args:
            host: A host name or literal IP (IPv6 with or without brackets).
            port: The destination port (checked against the allowed ports).

        Returns:
            The allowed addresses, in resolver order, without duplicates.

        Raises:
            InvalidURL: ``host`` is not a host name or address, or a name
                ``check_url`` would refuse as invalid (single label, empty label...).
            URLBlocked: The port, the name or any resolved address is refused.
            FetchError: The name could not be resolved.

        Cancellation:
            Safe to cancel; trio abandons the resolver thread.
        """
        canonical = _canonical_host(host)
        self._check_port(canonical, port)
        ip = _literal_ip(canonical)
        if ip is not None:
            self.check_address(canonical, ip)
            return [ip]
        self._check_name(canonical)
        addresses = await self._lookup(canonical, port)
        if not addresses:
            raise FetchError(f"could not resolve host {canonical}: no addresses")
        for address in addresses:
            self.check_address(canonical, address)
        return list(dict.fromkeys(addresses))

    async def connect(self, host: str, port: int) -> trio.SocketStream:
        """Open a TCP connection to ``host`` through the policy.

        Connects to the addresses ``resolve`` checked, in order, never looking the
        name up again, so DNS rebinding between check and connect cannot work.

        Args:
            host: A host name or literal IP.
            port: The destination port.

        Returns:
            The connected stream; the caller owns (and closes) it.

        Raises:
            InvalidURL, URLBlocked: See ``resolve``; also ``URLBlocked`` for one of
                bulk's own listening sockets (``_listeners``), whatever ``allow`` says.
            FetchError: Resolution failed or no address accepted the connection.

        Cancellation:
            Safe to cancel; a half-open socket is closed. Put the connect timeout
            around the call (``trio.fail_after``).
        """
        addresses = await self.resolve(host, port)
        errors: list[OSError] = []
        for address in addresses:
            refuse_own_address(host, address, port)
            try:
                # A literal IP: trio resolves it numerically, without DNS.
                stream = await trio.open_tcp_stream(str(address), port)
            except OSError as exc:
                errors.append(exc)
                continue
            try:
                refuse_own_socket(host, stream.socket)
            except URLBlocked:
                await trio.aclose_forcefully(stream)
                raise
            return stream
        raise FetchError(
            f"could not connect to {host} port {port}",
            details={"host": host, "port": port, "attempts": len(errors)},
        )

    async def _lookup(self, host: str, port: int) -> list[IPAddress]:
        if self.resolver is not None:
            try:
                return list(await self.resolver(host, port))
            except OSError as exc:
                raise FetchError(f"could not resolve host {host}") from exc
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            # socket.gaierror is an OSError; UnicodeError is IDNA refusing the name.
            raise FetchError(f"could not resolve host {host}") from exc
        addresses: list[IPAddress] = []
        for family, _type, _proto, _canonname, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(ipaddress.ip_address(sockaddr[0]))
        return addresses

    def _check_port(self, host: str, port: int) -> None:
        if not 0 < port < 65536:
            raise URLBlocked(f"port {port} is not allowed", details={"host": host, "port": port})
        if self.allowed_ports is not None and port not in self.allowed_ports:
            raise URLBlocked(f"port {port} is not allowed", details={"host": host, "port": port})

    def _check_name(self, name: str) -> None:
        """Judge a host name (not an IP literal) in ada's canonical form, before DNS."""
        named = name.lower().rstrip(".") in self._names
        blocked = _is_blocked_name(name)
        if blocked and not (self.allow_private or named):
            raise URLBlocked(f"{name} is a local-only name", details={"host": name})
        problem = host_name_problem(name)
        if problem is not None:
            raise InvalidURL(
                f"not a valid host name ({problem}): {name[:80]!r}", details={"host": name[:255]}
            )
        if "." not in name.rstrip(".") and not named and not (self.allow_private and blocked):
            # The system resolver would try its search domains: what such a name
            # reaches depends on the machine, never on the URL.
            raise InvalidURL(
                f"{name} is a single-label host name, which only an allow entry opens",
                details={"host": name},
            )


def _parse_allow_entry(
    entry: object,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, str | None]:
    """One allow-list entry as (network, None) or (None, canonical host name)."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValidationError(f"allow entry {entry!r} is not a host name or CIDR", field="allow")
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=True), None
    except ValueError as exc:
        if "/" in text or ":" in text:
            raise ValidationError(
                f"allow entry {text!r} is not a valid IP network: {exc}", field="allow"
            ) from None
    if _UNSAFE_HOST_CHARS.search(text) or "*" in text:
        raise ValidationError(
            f"allow entry {text!r} must be an exact host name or a CIDR", field="allow"
        )
    try:
        name = parse_http_url(f"http://{text}/").hostname
    except InvalidURL:
        raise ValidationError(
            f"allow entry {text!r} is not a valid host name", field="allow"
        ) from None
    if _literal_ip(name) is not None:
        # "127.1" or "0x7f000001": an address in disguise; say what is meant.
        raise ValidationError(
            f"allow entry {text!r} is the address {name}; write it as {name}/32", field="allow"
        )
    name = name.rstrip(".")
    if not _ALLOW_NAME.match(name):
        raise ValidationError(f"allow entry {text!r} is not a valid host name", field="allow")
    return None, name


@final
class PolicyNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only connects where the policy allows.

    ``connect_tcp`` resolves through ``EgressPolicy.resolve`` and connects to a checked
    IP with httpcore's trio backend. httpcore then starts TLS with ``server_hostname``
    set to the URL's host, so certificates are still verified against the real name.

    Args:
        policy: The policy every connection must pass.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` through the policy and connect to an allowed address.

        Args:
            host: The URL's host, as httpcore passes it (IPv6 without brackets).
            port: The URL's port.
            timeout: Seconds for resolution and connection together; None for none.
            local_address: Passed to the trio backend.
            socket_options: Passed to the trio backend.

        Returns:
            The connected stream.

        Raises:
            URLBlocked: The policy refuses the destination; httpx lets it through
                unwrapped (so does ``InvalidURL`` for a host the policy cannot parse).
            httpcore.ConnectError: Resolution or every connection attempt failed
                (with the ``FetchError``'s message when resolution failed).
            httpcore.ConnectTimeout: ``timeout`` ran out.
        """
        deadline = trio.current_time() + (math.inf if timeout is None else timeout)
        try:
            with trio.fail_at(deadline):
                addresses = await self._policy.resolve(host, port)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"timed out resolving {host}") from None
        except FetchError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last_error: httpcore.ConnectError | None = None
        for address in addresses:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            refuse_own_address(host, address, port)
            try:
                stream = await self._backend.connect_tcp(
                    str(address),
                    port,
                    timeout=None if math.isinf(remaining) else remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            sock = stream.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                try:
                    refuse_own_socket(host, sock)
                except URLBlocked:
                    await stream.aclose()
                    raise
            return stream
        if last_error is None:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}")
        raise httpcore.ConnectError(f"could not connect to {host} port {port}") from last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Always refused: a Unix socket is a local destination by definition.

        Raises:
            URLBlocked: Always.
        """
        raise URLBlocked("connections to Unix sockets are refused")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore uses this between connection retries)."""
        await trio.sleep(seconds)


@final
class _PolicyTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose pool connects through ``PolicyNetworkBackend``.

    httpx 0.28 offers no way to hand a network backend to ``AsyncHTTPTransport``;
    everything else about it (request/response conversion, exception mapping) is
    wanted, so this subclass only replaces the pool with the one httpx would have built
    plus ``network_backend``. ``tests/test_policy.py`` pins that it still routes
    through the backend.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        verify: ssl.SSLContext | bool,
        trust_env: bool,
        http1: bool,
        http2: bool,
        limits: httpx.Limits,
        retries: int,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=trust_env)
        super().__init__(
            verify=ssl_context,
            http1=http1,
            http2=http2,
            limits=limits,
            retries=retries,
            socket_options=socket_options,
        )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            retries=retries,
            socket_options=socket_options,
            network_backend=PolicyNetworkBackend(policy),
        )


def policy_transport(
    policy: EgressPolicy,
    *,
    verify: ssl.SSLContext | bool = True,
    trust_env: bool = True,
    http1: bool = True,
    http2: bool = False,
    limits: httpx.Limits | None = None,
    retries: int = 0,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection passes ``policy``.

    ``policy_client`` is the client built on it; use that. With an explicit
    transport httpx ignores proxy environment variables, so nothing bypasses the
    policy. There is deliberately no ``proxy``, ``uds`` or ``local_address``.

    The transport judges the host httpx hands it the way ``check_url`` does (names,
    ports, addresses), but not userinfo, and a plain ``httpx.AsyncClient`` may raise
    ``idna.IDNAError`` building a request for a name WHATWG accepts: requests must be
    built by ``policy_client`` (and redirects followed by hand, each hop through it).

    Args:
        policy: The egress policy.
        verify: As for ``httpx.AsyncHTTPTransport``.
        trust_env: Whether ``SSL_CERT_FILE``/``SSL_CERT_DIR`` may pick the CA bundle.
        http1: As for ``httpx.AsyncHTTPTransport``.
        http2: As for ``httpx.AsyncHTTPTransport`` (needs the ``h2`` package).
        limits: Connection pool limits; httpx's defaults when None.
        retries: Connection retries (httpcore retries connect errors only, never a
            ``URLBlocked``).
        socket_options: As for ``httpx.AsyncHTTPTransport``.

    Returns:
        The transport. A refused destination raises ``URLBlocked`` out of
        ``client.send``/``client.get`` unwrapped; resolution or connection failures
        raise ``httpx.ConnectError``/``httpx.ConnectTimeout``.
    """
    if limits is None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return _PolicyTransport(
        policy,
        verify=verify,
        trust_env=trust_env,
        http1=http1,
        http2=http2,
        limits=limits,
        retries=retries,
        socket_options=socket_options,
    )


@final
class _PolicyClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose every request URL is the policy's canonical form.

    httpx parses URLs with its own rules: ``httpx.URL.host`` decodes punycode with
    IDNA 2008 and raises ``idna.IDNAError`` (not an ``httpx`` error) on names WHATWG
    accepts, and ``httpx.Request`` reads it to fill in ``Host``. ``build_request``
    (which ``get``, ``post``, ``request`` and ``stream`` all go through) therefore
    checks the URL with the policy first, passes httpx ada's href, whose host is
    already lower-case ASCII (httpx keeps such a host byte for byte), and sets
    ``Host`` from ada's authority, so httpx never re-encodes or decodes the name.

    It never follows a redirect. httpx prepares ``response.next_request`` for every
    3xx even when not following, re-parsing ``Location`` and comparing hosts through
    ``URL.host``, which raises ``idna.IDNAError`` for a redirect to or from such a
    name; so ``_send_handling_redirects`` (httpx 0.28's private seam, pinned by
    ``tests/test_policy.py``) is one plain send here. Callers follow ``Location`` by
    hand, resolving it with ada and sending each hop through ``build_request``.
    """

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        """``httpx.AsyncClient.build_request`` for ``policy.check_url(url)``.

        Raises:
            InvalidURL, URLBlocked: ``policy.check_url`` refused ``url``.
        """
        target = self._policy.check_url(str(url))
        headers = httpx.Headers(kwargs.pop("headers", None))
        headers["Host"] = target.authority
        return super().build_request(method, target.without_fragment(), headers=headers, **kwargs)

    async def _send_handling_redirects(
        self, request: httpx.Request, follow_redirects: bool, history: list[httpx.Response]
    ) -> httpx.Response:
        if follow_redirects:
            raise ValueError("policy_client does not follow redirects; follow them by hand")
        response = await self._send_single_request(request)
        response.history = list(history)
        return response


def policy_client(
    policy: EgressPolicy,
    *,
    timeout: httpx.Timeout | float,
    headers: Mapping[str, str] | None = None,
    limits: httpx.Limits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every request passes ``policy``, in the policy's form.

    ``client.get(url)``, ``client.post(url, ...)`` and ``client.build_request(...)``
    check ``url`` with ``policy.check_url`` (``InvalidURL``/``URLBlocked`` come out
    of the call) and send exactly the URL it returns: the host Chromium would use,
    never httpx's own re-parse of it. Connections go through ``policy_transport``.
    Redirects are never followed (follow them by hand, each hop through the client
    again); proxy environment variables are ignored.

    Args:
        policy: The egress policy.
        timeout: As for ``httpx.AsyncClient``.
        headers: Default headers of every request.
        limits: Connection pool limits; httpx's defaults when None.
        transport: Replaces ``policy_transport(policy, limits=limits)`` (tests pass
            an ``httpx.MockTransport``); the URL checks still apply.

    Returns:
        The client; use it as an async context manager (it closes its connections).
    """
    if transport is None:
        transport = policy_transport(policy, limits=limits)
    return _PolicyClient(
        policy,
        transport=transport,
        timeout=timeout,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
    )
