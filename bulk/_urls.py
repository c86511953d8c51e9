"""URL parsing the way Chromium does it (WHATWG, via ada-url), and bulk's URL rules.

Python's own parsers disagree with Chromium on hostile URLs (urllib on 31 of 70 tricky
hosts, httpx on 32); ada implements the WHATWG URL standard Chromium follows, so a
URL is checked in exactly the form the browser will fetch.
"""

from __future__ import annotations

import re
from typing import Final

import ada_url
import attrs

from ._exceptions import InvalidURL

__all__ = [
    "DEFAULT_PORTS",
    "HTTP_TOKEN_PATTERN",
    "MAX_HOST_NAME_LENGTH",
    "MAX_URL_LENGTH",
    "ParsedURL",
    "host_name_problem",
    "page_url",
    "parse_http_url",
    "site_candidates",
]

MAX_URL_LENGTH: Final = 2048
_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: An HTTP token (RFC 9110 5.6.2): header and cookie names.
HTTP_TOKEN_PATTERN: Final = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
#: DNS limits (RFC 1035): 63 octets a label, 253 characters a name without its root dot.
MAX_HOST_NAME_LENGTH: Final = 253
_MAX_LABEL_LENGTH: Final = 63
# What a label of a name that can be looked up is made of, in the lower-case ASCII
# form ada gives (punycode for IDNs). Underscores are common in real names (DKIM,
# SRV-style hosts) and Chromium's resolver takes them; anything else WHATWG lets
# through (``a!b.com``, ``a{b.com``, ``a*b.com``) is refused by Chromium's resolver
# (and ``*`` is even spelled ``%2A`` by Chromium but ``*`` by ada).
_LABEL_RE: Final = re.compile(r"[a-z0-9_-]+")


@attrs.frozen
class ParsedURL:
    """An http(s) URL in WHATWG canonical form.

    ``host`` is ASCII (punycode for IDNs); an IPv6 literal keeps its brackets in
    ``host`` and loses them in ``hostname``.
    """

    href: str
    scheme: str
    host: str
    hostname: str
    port: int
    path: str
    query: str
    fragment: str
    has_userinfo: bool

    @property
    def authority(self) -> str:
        """``host[:port]``, the port only when not the scheme's default: the ``Host``
        header a browser sends for this URL."""
        default = DEFAULT_PORTS[self.scheme] == self.port
        return self.host if default else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def without_fragment(self) -> str:
        return self.href.split("#", 1)[0]


def parse_http_url(text: str, base: str | None = None) -> ParsedURL:
    """Parse ``text`` (relative to ``base`` if given) as an absolute http(s) URL.

    Args:
        text: The URL as written.
        base: An absolute URL to resolve ``text`` against.

    Returns:
        The canonical URL.

    Raises:
        InvalidURL: Not parseable, not http/https, no host, or over ``MAX_URL_LENGTH``.
    """
    if len(text) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    try:
        url = ada_url.URL(text, base) if base is not None else ada_url.URL(text)
    except ValueError:
        raise InvalidURL(f"not a valid URL: {_short(text)}") from None
    scheme = url.protocol[:-1]
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"only http and https URLs are accepted, not {scheme}:")
    if not url.hostname:
        raise InvalidURL(f"URL has no host: {_short(text)}")
    if len(url.href) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    hostname = url.hostname
    return ParsedURL(
        href=url.href,
        scheme=scheme,
        host=hostname,
        hostname=hostname[1:-1] if hostname.startswith("[") else hostname,
        port=int(url.port) if url.port else DEFAULT_PORTS[scheme],
        path=url.pathname,
        query=url.search[1:],
        fragment=url.hash[1:],
        has_userinfo=bool(url.username or url.password),
    )


def host_name_problem(hostname: str) -> str | None:
    """Why ``hostname`` can never be looked up, or ``None`` when it can.

    ``hostname`` is a ``ParsedURL.hostname`` that is not an IP literal: ada has
    already lower-cased it and turned IDNs into punycode. WHATWG (so ada and Chromium)
    accepts names no resolver can look up: empty labels (``a..b.com``), labels over 63
    characters, and characters like ``!``, ``{`` or ``*``. Python's IDNA codec (used by
    ``ssl`` for the TLS server name) raises on empty and over-long labels, so such a
    name must be refused before it reaches a transport. Punycode labels are not
    decoded: ``xn--ls8h.la`` is a registered name Chromium loads, and an ``xn--``
    label that does not decode is still a valid DNS label.

    Args:
        hostname: The host name, possibly with one trailing dot (a fully qualified
            name).

    Returns:
        A short reason (``"empty label"``...), or ``None`` for a valid DNS name.
    """
    name = hostname[:-1] if hostname.endswith(".") else hostname
    if not name:
        return "empty host"
    if len(name) > MAX_HOST_NAME_LENGTH:
        return f"longer than {MAX_HOST_NAME_LENGTH} characters"
    for label in name.split("."):
        if not label:
            return "empty label"
        if len(label) > _MAX_LABEL_LENGTH:
            return f"a label longer than {_MAX_LABEL_LENGTH} characters"
        if not _LABEL_RE.fullmatch(label):
            return "characters a host name cannot have"
    return None


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def site_candidates(site: str) -> list[ParsedURL]:
    """The URLs a ``SITE`` argument stands for, most likely first.

    A bare domain (``example.com``, ``example.com/blog``) stands for https then http;
    anything with a scheme stands for itself.

    Raises:
        InvalidURL: ``site`` is empty or cannot be an http(s) URL.
    """
    site = site.strip()
    if not site:
        raise InvalidURL("the site is empty")
    if _SCHEME_RE.match(site) and not re.match(r"^[^:/]+:\d+(/|$)", site):
        return [parse_http_url(site)]
    if site.startswith("//"):
        site = site[2:]
    return [parse_http_url(f"https://{site}"), parse_http_url(f"http://{site}")]


def page_url(raw: str, base: str) -> str | None:
    """Normalise a page URL found in a sitemap, or ``None`` when it is not a usable page.

    Whitespace around the value is ignored; relative values resolve against ``base``;
    only http(s) is kept; the fragment is dropped unless it is a ``#!`` or ``#/``
    client-side route (then it names a distinct page).
    """
    text = raw.strip()
    if not text:
        return None
    try:
        url = parse_http_url(text, base)
    except InvalidURL:
        return None
    if url.fragment and not url.fragment.startswith(("!", "/")):
        return url.without_fragment()
    if url.href.endswith("#"):
        return url.href[:-1]
    return url.href
