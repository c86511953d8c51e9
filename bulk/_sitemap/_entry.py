"""What a sitemap yields: ``Entry`` values, and the normalisation of the URLs in them.

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

__all__ = ["Entry", "EntryKind", "normalise"]

# An absolute http(s) URL that WHATWG parsing leaves exactly as it is (see
# ``normalise``; tests compare it with ``page_url`` on generated URLs).
_CANONICAL: Final = re.compile(
    # Host: lower-case labels; the last one must not read as a number (IPv4).
    r"https?://(?:[a-z0-9-]++\.)*+(?!0x)[a-z0-9-]*?[a-z][a-z0-9-]*+"
    # Path: segments that are neither "." nor ".." (nor their %2e spellings).
    r"(?:/(?!\.|%2[eE])[A-Za-z0-9\-._~!$&'()*+,;=:@%]*+)++"
    r"(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%/?]++)?"
)


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


def normalise(raw: str, base: str) -> str | None:
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
    """
    text = raw.strip()
    if not text or len(text) > MAX_URL_LENGTH:
        return None
    if "xn--" not in text and _CANONICAL.fullmatch(text) is not None:
        return text
    try:
        href = join_url(base, text)
    except ValueError:
        return None
    if href.startswith(("https://", "http://")) and "#" not in href and len(href) <= MAX_URL_LENGTH:
        return href
    return page_url(raw, base)
