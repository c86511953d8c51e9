"""robots.txt: the ``Sitemap:`` lines, which is all discovery reads of it."""

from __future__ import annotations

import re
from typing import Final

from .._exceptions import InvalidURL
from .._urls import parse_http_url

__all__ = ["MAX_ROBOTS_SITEMAPS", "parse_robots"]

#: Sitemap URLs taken from one robots.txt at most.
MAX_ROBOTS_SITEMAPS: Final = 500

_ROBOTS_SITEMAP: Final = re.compile(r"^[ \t\ufeff]*sitemap[ \t]*:[ \t]*([^\n#]*)", re.I | re.M)


def parse_robots(text: str, robots_url: str) -> list[str]:
    """The sitemap URLs a robots.txt lists, in order, without duplicates.

    ``Sitemap:`` lines match in any case with optional blanks before the colon;
    ``#`` starts a comment; relative values resolve against ``robots_url``; anything
    that is not an http(s) URL is dropped. Only line starts are looked at (in C,
    by one regex pass), so a huge or binary robots.txt costs one scan.

    Args:
        text: The robots.txt body, decoded.
        robots_url: Its final URL (after redirects).

    Returns:
        At most ``MAX_ROBOTS_SITEMAPS`` absolute URLs.
    """
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")  # old Mac line ends
    found: dict[str, None] = {}
    for match in _ROBOTS_SITEMAP.finditer(text):
        value = match.group(1).strip()
        if not value:
            continue
        try:
            url = parse_http_url(value, robots_url).without_fragment()
        except InvalidURL:
            continue
        found[url] = None
        if len(found) >= MAX_ROBOTS_SITEMAPS:
            break
    return list(found)
