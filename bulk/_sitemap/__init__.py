"""Sans-IO sitemap reading: bytes in, page and sitemap URLs out.

``SitemapParser`` reads one document of any sitemap format (sitemaps.org ``urlset``
and ``sitemapindex`` in any namespace, plain text, RSS 2.0/1.0, Atom) fed chunk by
chunk as bytes arrive, and hands back each URL as soon as the element holding it is
complete. It does no I/O: ``bulk._discover`` fetches, and undoes gzip with
``Inflater`` before feeding.

How one document is read, module by module:

    raw bytes -> _inflate   gzip undone by magic bytes, under a byte budget
              -> _prolog    encoding (BOM, UTF-16/32 sniffing, the XML declaration),
                            decoded text scanned up to the root element:
                              DOCTYPE / ENTITY / markup declarations: refused
                              ``<!DOCTYPE html>`` / ``<html>``: an HTML page
                              no markup at all: a plain-text sitemap
              -> _xml       text repaired for recovery (bare ``&`` escaped), re-encoded
                            as UTF-8 -> lxml ``XMLPullParser`` (recover, no DTD, no
                            network, no entity expansion) filtered to the URL tags
                 _text      or one URL per line
              -> _entry     each URL normalised the way ``bulk._urls.page_url`` does
    _parser ties the stages together under one byte budget; _robots reads the
    ``Sitemap:`` lines of a robots.txt.

Each module's docstring says why it is shaped the way it is.
"""

from __future__ import annotations

from ._entry import Entry, EntryKind
from ._inflate import Inflater
from ._parser import DEFAULT_MAX_BYTES, SitemapParser
from ._robots import MAX_ROBOTS_SITEMAPS, parse_robots

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_ROBOTS_SITEMAPS",
    "Entry",
    "EntryKind",
    "Inflater",
    "SitemapParser",
    "parse_robots",
]
