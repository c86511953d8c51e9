"""What a sitemap yields: ``Entry`` values, and the normalisation of the URLs in them.

The sitemaps protocol requires ``<loc>`` values to be absolute URLs. A relative one
(``/path``, ``page``, ``//host/x``, or ``http:host/`` without ``//``, which WHATWG
resolves against the sitemap's own URL: ``http:127.0.0.1/`` became
``/127.0.0.1/`` on the sitemap's host) is skipped, and counted by the caller
(``is_relative``), never resolved into a page to capture.

Normalisation is ``bulk._urls.page_url``'s. Its full parse costs ~40 µs per URL, most
of a sitemap's reading time, so ``normalise`` recognises URLs that are already
canonical (~0.8 µs) or asks ada for just the serialised URL (~3 µs), and leaves only
fragments and failures to ``page_url`` itself.
"""

from __future__ import annotations

import enum
import re
from typing import Final, final

import attrs
from ada_url import join_url

from .._urls import MAX_URL_LENGTH, page_url

__all__ = ["Entry", "EntryKind", "Skipped", "is_relative", "normalise"]

# An absolute http(s) URL that WHATWG parsing leaves exactly as it is (see
# ``normalise``; tests compare it with ``page_url`` on generated URLs).
_CANONICAL: Final = re.compile(
    # Host: lower-case labels; the last one must not read as a number (IPv4).
    r"https?://(?:[a-z0-9-]++\.)*+(?!0x)[a-z0-9-]*?[a-z][a-z0-9-]*+"
    # Path: segments that are neither "." nor ".." (nor their %2e spellings).
    r"(?:/(?!\.|%2[eE])[A-Za-z0-9\-._~!$&'()*+,;=:@%]*+)++"
    r"(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%/?]++)?"
)

# A scheme followed by "//": the only absolute form a <loc> may take.
_ABSOLUTE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


class EntryKind(enum.Enum):
    """What an entry's URL points at."""

    PAGE = "page"
    SITEMAP = "sitemap"


@final
@attrs.frozen
class Entry:
    """One URL read from a sitemap.

    Args:
        kind: A page to capture, or another sitemap to read.
        url: Absolute http(s) URL, normalised by ``bulk._urls.page_url``.
    """

    kind: EntryKind
    url: str


@final
@attrs.define
class Skipped:
    """Values of one document skipped for not being absolute URLs (see the module doc)."""

    relative: int = 0
    #: The first of them, as written (shortened), for the warning.
    first_relative: str | None = None

    def add_relative(self, raw: str) -> None:
        self.relative += 1
        if self.first_relative is None:
            self.first_relative = raw.strip()[:100]


def is_relative(raw: str) -> bool:
    """Whether a value is a relative reference: not empty, not ``scheme://...``, and
    not of a scheme other than http(s) (``mailto:``, ``javascript:`` are simply not
    pages)."""
    text = raw.strip()
    if not text or _ABSOLUTE.match(text) is not None:
        return False
    scheme = _SCHEME.match(text)
    return scheme is None or scheme.group().lower() in ("http:", "https:")


def normalise(raw: str, base: str, *, absolute: bool = False) -> str | None:
    """``page_url(raw, base)``, without its full parse where the result is known.

    ``page_url`` reads a dozen properties off an ada URL (~40 µs, most of a
    sitemap's reading time). Two shortcuts give the same answer for almost every
    URL a sitemap holds:

    - A URL already in WHATWG canonical form (``_CANONICAL``: lower-case scheme
      and ASCII host that is neither punycode nor numeric, no port, userinfo,
      dot segment, fragment, or character the parser would percent-encode) is
      returned as is (~0.8 µs).
    - Otherwise ``join_url`` (the same ada parse ``page_url`` starts with, ~3 µs)
      gives the serialised URL; without a fragment, every later step of
      ``page_url`` returns it unchanged (an http(s) URL that parses has a host).

    Anything else (fragments, failures) goes through ``page_url`` itself.

    Args:
        raw: The value as written.
        base: The document's URL.
        absolute: Only an absolute URL (``scheme://``) is usable: a relative value
            gives ``None`` instead of being resolved against ``base``.
    """
    text = raw.strip()
    if not text or len(text) > MAX_URL_LENGTH:
        return None
    if "xn--" not in text and _CANONICAL.fullmatch(text) is not None:
        return text
    if absolute and _ABSOLUTE.match(text) is None:
        return None
    try:
        href = join_url(base, text)
    except ValueError:
        return None
    if href.startswith(("https://", "http://")) and "#" not in href and len(href) <= MAX_URL_LENGTH:
        return href
    return page_url(raw, base)
