"""bulk's own listening sockets, which no request made for a user may reach.

The API (``bulk serve``) and the egress proxy listen on this machine. A page, a
sitemap or a webhook URL that names them would turn bulk against itself (a page
calling the API with the browser's cookies, a request looping through the proxy),
whatever ``--allow`` opens. Each listener is registered here while it listens, and
``EgressPolicy.connect``/``PolicyNetworkBackend`` refuse a connection whose
destination is one of them:

- before connecting, when the destination is a loopback or unspecified address on a
  registered port (``refuse_own_address``);
- after connecting, from the connected socket itself (``refuse_own_stream``): the
  destination is on this machine when it is loopback or equals the socket's own
  local address (Linux picks the destination as the source of a local connection),
  which also catches this machine's other addresses reaching a wildcard listener.

The registry is process-wide (a listener is a fact about the process) and
thread-safe; reads take a snapshot. The check is on every connection's path: a
destination port that no listener of bulk's has is let through after one set lookup
(about 1 us, ``getpeername`` included); only a matching port costs address parsing.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Protocol, TypeAlias

from ._exceptions import URLBlocked

__all__ = [
    "own_listener",
    "own_listeners",
    "refuse_own_address",
    "refuse_own_socket",
]

_IP: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address



class _Socket(Protocol):
    """A connected socket: stdlib's or trio's."""

    def getpeername(self) -> Any: ...

    def getsockname(self) -> Any: ...


_lock: Final = threading.Lock()
_counter = itertools.count(1)
# token -> (bound address, None for a wildcard bind; port)
_registry: dict[int, tuple[_IP | None, int]] = {}
_snapshot: tuple[tuple[_IP | None, int], ...] = ()
_ports: frozenset[int] = frozenset()  # the hot path's first (and usually last) check

_THIS_HOST_V4: Final = ipaddress.IPv4Network("0.0.0.0/8")


def _plain(ip: _IP) -> _IP:
    """``ip`` with an IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse(host: str) -> _IP | None:
    """The address a listener was bound to; None for a wildcard bind ('', 0.0.0.0, ::)
    and for a host name (conservatively: the port on every address of this machine)."""
    text = host.strip().strip("[]")
    try:
        address = _plain(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None
    return None if address.is_unspecified else address


def _is_local(ip: _IP) -> bool:
    """Loopback, or an address that means "this host" (0.0.0.0/8, ::)."""
    return ip.is_loopback or ip.is_unspecified or (ip.version == 4 and ip in _THIS_HOST_V4)


@contextmanager
def own_listener(host: str, port: int) -> Iterator[None]:
    """Register bulk's listener at ``host:port`` for the duration of the block.

    Args:
        host: The address it is bound to (``0.0.0.0``, ``::``, ``""`` or a host
            name: every address of this machine).
        port: Its port.
    """
    address = _parse(host)
    global _snapshot, _ports
    with _lock:
        token = next(_counter)
        _registry[token] = (address, port)
        _snapshot = tuple(_registry.values())
        _ports = frozenset(p for _, p in _snapshot)
    try:
        yield
    finally:
        with _lock:
            del _registry[token]
            _snapshot = tuple(_registry.values())
            _ports = frozenset(p for _, p in _snapshot)


def own_listeners() -> tuple[tuple[str, int], ...]:
    """The registered listeners as ``(address or "*", port)`` (for messages and tests)."""
    return tuple((str(a) if a is not None else "*", p) for a, p in _snapshot)


def _matches(ip: _IP, port: int, local: _IP | None) -> bool:
    ip = _plain(ip)
    # Connecting to 0.0.0.0 (or ::) reaches the loopback address on Linux.
    if ip.version == 4 and ip in _THIS_HOST_V4:
        ip = ipaddress.IPv4Address("127.0.0.1")
    elif ip.is_unspecified:
        ip = ipaddress.IPv6Address("::1")
    for address, own_port in _snapshot:
        if own_port != port:
            continue
        if address is None:
            if ip.is_loopback or (local is not None and ip == local):
                return True
        elif ip == address:
            return True
    return False


def refuse_own_address(host: str, ip: _IP, port: int) -> None:
    """Refuse ``ip:port`` before connecting when it is plainly one of bulk's listeners.

    Raises:
        URLBlocked: ``ip`` is a loopback or "this host" address and ``port`` is a
            registered listener's port (for the address it is bound to).
    """
    if port in _ports and _is_local(_plain(ip)) and _matches(ip, port, None):
        raise URLBlocked(f"{host} port {port} is bulk's own service", details={"host": host})


def refuse_own_socket(host: str, sock: _Socket) -> None:
    """Refuse a connected socket whose other end is one of bulk's listeners.

    Args:
        host: The host the connection was made for (for the message).
        sock: The connected socket (stdlib or trio).

    Raises:
        URLBlocked: The peer is on this machine, on a registered listener's port.
    """
    try:
        peer = sock.getpeername()
        if peer[1] not in _ports:
            return
        local = sock.getsockname()
        peer_ip = ipaddress.ip_address(peer[0].split("%", 1)[0])
        local_ip = _plain(ipaddress.ip_address(local[0].split("%", 1)[0]))
    except (OSError, ValueError, IndexError, TypeError):
        return  # not an IP socket (or already closed): nothing of ours
    if _matches(peer_ip, int(peer[1]), local_ip):
        raise URLBlocked(
            f"{host} port {peer[1]} is bulk's own service", details={"host": host}
        )
