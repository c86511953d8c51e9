"""What went wrong in the browser, in bulk's terms.

Two internal signals travel from the engine (asyncio side) to the pool (trio side):
``BrowserGone`` (Chromium disconnected: relaunch and retry) and ``PageCrashed`` (one
renderer died). ``map_error`` turns a Playwright error of a page that is still alive
into a typed ``CaptureError`` with a stable code, and Chromium's net errors
(``net::ERR_NAME_NOT_RESOLVED``) into sentences (``net_error_message``), keeping the
raw name in ``details.net_error``; ``looks_closed`` says whether an error may mean the
whole browser is gone (the engine then waits for the disconnect event).
"""

from __future__ import annotations

from typing import Final

from playwright.async_api import Error as PlaywrightError

from .._exceptions import BrowserCrashed, CaptureError, DownloadRefused, NavigationError

__all__ = [
    "BrowserGone",
    "PageCrashed",
    "looks_closed",
    "map_error",
    "net_error",
    "net_error_message",
]


class BrowserGone(Exception):
    """Chromium disconnected under a capture; ``generation`` is the dead browser's."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"browser generation {generation} is gone")
        self.generation = generation


class PageCrashed(Exception):
    """The page's renderer died (its ``crash`` event) during a capture."""


def looks_closed(exc: BaseException) -> bool:
    # Not "crashed": Chromium itself reports a renderer crash, so it is alive.
    text = str(exc).lower()
    return "closed" in text or "disconnected" in text


def net_error(exc: BaseException) -> str | None:
    """Chromium's net error name in a Playwright error (``ERR_NAME_NOT_RESOLVED``)."""
    text = str(exc)
    i = text.find("net::ERR_")
    if i < 0:
        return None
    return text[i + 5 :].split()[0].rstrip(".;:,")


# Chromium's net errors in words a person understands (keys: the name without ``ERR_``,
# lower case). Through bulk's egress proxy an https page that cannot be reached is
# always TUNNEL_CONNECTION_FAILED (the proxy's answer to CONNECT is hidden from the
# page); the capture asks the proxy why (``_steps.explain_tunnel_failure``).
_NET_MESSAGES: Final = {
    "name_not_resolved": "the host name did not resolve (no such domain?)",
    "name_resolution_failed": "the host name did not resolve (DNS failed)",
    "connection_refused": "the server refused the connection (nothing listens on that port)",
    "connection_reset": "the server reset the connection",
    "connection_closed": "the server closed the connection without an answer",
    "empty_response": "the server closed the connection without an answer",
    "connection_failed": "could not connect to the server",
    "connection_timed_out": "the server did not answer in time (connection timed out)",
    "timed_out": "the server did not answer in time",
    "address_unreachable": "the server's address is unreachable",
    "address_invalid": "the server's address is not valid",
    "too_many_redirects": "the page redirects in a loop",
    "invalid_response": "the server sent a malformed response",
    "invalid_http_response": "the server sent a malformed response",
    "content_decoding_failed": "the server sent a body that could not be decoded",
    "response_headers_too_big": "the server sent response headers that are too large",
    "unsafe_port": "Chromium refuses to connect to this port",
    "blocked_by_client": "the request was blocked (block_ads or block_media)",
    "blocked_by_response": "the page refused to be shown (its own headers)",
    "aborted": "the navigation was aborted (the page replaced itself, or started a download)",
    "tunnel_connection_failed": (
        "the egress proxy could not connect to the server (the name did not resolve, "
        "or the connection was refused or timed out)"
    ),
    "proxy_connection_failed": "the egress proxy could not be reached",
    "ssl_protocol_error": "the TLS handshake failed",
    "ssl_version_or_cipher_mismatch": "the TLS handshake failed (no common protocol or cipher)",
    "bad_ssl_client_auth_cert": "the server asked for a TLS client certificate",
}


def net_error_message(net: str) -> str:
    """A person's sentence for Chromium's net error ``net`` (``ERR_CONNECTION_REFUSED``)."""
    key = net.removeprefix("ERR_").lower()
    if key in _NET_MESSAGES:
        return _NET_MESSAGES[key]
    if key.startswith("cert_"):
        return "the server's TLS certificate is not valid for this host (" + net + ")"
    if key.startswith("ssl_"):
        return "the TLS connection failed (" + net + ")"
    return "could not load the page (" + net + ")"


def map_error(exc: PlaywrightError) -> CaptureError:
    """A Playwright error of a page that is still alive, as a typed capture error.

    A Chromium net error becomes a ``NavigationError`` whose message says what
    happened in words and whose ``details.net_error`` keeps Chromium's name.
    """
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "Download is starting" in text:
        return DownloadRefused("the URL answered with a file download, not a page")
    if "crashed" in text.lower():
        return BrowserCrashed("the page's renderer crashed (out of memory?)")
    net = net_error(exc)
    if net is not None:
        return NavigationError(net_error_message(net), details={"net_error": net})
    return NavigationError(f"could not load the page: {first[:300]}")
