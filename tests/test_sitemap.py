"""Tests for bulk._sitemap: formats, recovery, hostile input, memory, the fixture corpus."""

from __future__ import annotations

import gzip
import json
import os
import random
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]

from bulk._exceptions import InvalidSitemap, ResponseTooLarge
from bulk._sitemap import (
    MAX_ROBOTS_SITEMAPS,
    Entry,
    EntryKind,
    Inflater,
    SitemapParser,
    parse_robots,
)
from bulk._sitemap._entry import _CANONICAL
from bulk._sitemap._entry import normalise as _normalise
from bulk._urls import page_url

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "sitemaps"
ORIGIN = "http://127.0.0.1:8000"
BASE = "http://site.test/maps/sitemap.xml"
NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
PAGE = EntryKind.PAGE
SITEMAP = EntryKind.SITEMAP

Result = tuple[str, list[tuple[EntryKind, str]]]


def parse_chunked(data: bytes, chunk: int | None, url: str = BASE, **kw: Any) -> Result:
    parser = SitemapParser(url, **kw)
    entries: list[Entry] = []
    if chunk is None:
        entries += parser.feed(data)
    else:
        for i in range(0, len(data), chunk):
            entries += parser.feed(data[i : i + chunk])
    entries += parser.close()
    return parser.kind, [(e.kind, e.url) for e in entries]


def parse(doc: str | bytes, url: str = BASE) -> Result:
    """Parse whole, in 1-byte and in 7-byte chunks; all three must agree."""
    data = doc.encode() if isinstance(doc, str) else doc
    whole = parse_chunked(data, None, url)
    assert parse_chunked(data, 1, url) == whole, "1-byte chunks differ"
    assert parse_chunked(data, 7, url) == whole, "7-byte chunks differ"
    return whole


def urlset(*locs: str, ns: str | None = NS) -> str:
    attr = f' xmlns="{ns}"' if ns else ""
    body = "".join(f"<url><loc>{loc}</loc><lastmod>2024-01-01</lastmod></url>\n" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset{attr}>\n{body}</urlset>\n'


def pages(*urls: str) -> list[tuple[EntryKind, str]]:
    return [(PAGE, u) for u in urls]


# --- formats -------------------------------------------------------------------------

FORMATS = [
    pytest.param(
        urlset("http://site.test/a", "https://site.test/b"),
        "urlset",
        pages("http://site.test/a", "https://site.test/b"),
        id="urlset",
    ),
    pytest.param(
        f'<sitemapindex xmlns="{NS}"><sitemap><loc>http://site.test/s1.xml</loc>'
        "<lastmod>2024-01-01</lastmod></sitemap><sitemap><loc>https://site.test/s2.xml.gz</loc>"
        "</sitemap></sitemapindex>",
        "sitemapindex",
        [(SITEMAP, "http://site.test/s1.xml"), (SITEMAP, "https://site.test/s2.xml.gz")],
        id="sitemapindex",
    ),
    pytest.param(
        "http://site.test/1\n\n  https://site.test/2  \r\njunk line\n/relative\nftp://site.test/f\n"
        "mailto:x@site.test\nHTTP://SITE.TEST/3\rhttp://site.test/4",
        "text",
        pages(
            "http://site.test/1", "https://site.test/2", "http://site.test/3", "http://site.test/4"
        ),
        id="text",
    ),
    pytest.param(
        '<rss version="2.0"><channel><link>http://site.test/</link>'
        "<item><title>t</title><link>http://site.test/p1</link><guid>http://site.test/g1</guid></item>"
        '<item><guid isPermaLink="true">http://site.test/g2</guid></item>'
        "<item><guid>http://site.test/g3</guid></item>"
        '<item><guid isPermaLink="false">http://site.test/opaque</guid></item>'
        '<item><guid isPermaLink="true">http://site.test/later</guid><link>http://site.test/p5</link></item>'
        "<item><title>nothing</title></item>"
        "</channel></rss>",
        "rss",
        pages(
            "http://site.test/p1",
            "http://site.test/g2",
            "http://site.test/g3",
            "http://site.test/p5",
        ),
        id="rss",
    ),
    pytest.param(
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/"><channel><link>http://site.test/</link></channel>'
        "<item><link>http://site.test/rdf-1</link></item></rdf:RDF>",
        "rss",
        pages("http://site.test/rdf-1"),
        id="rss-1.0-rdf",
    ),
    pytest.param(
        '<feed xmlns="http://www.w3.org/2005/Atom"><link rel="self" href="/feed"/>'
        '<entry><link rel="edit" href="/e"/><link href="http://site.test/a1"/></entry>'
        '<entry><link rel="alternate" type="text/html" href="a2"/></entry>'
        '<entry><link rel="alternate" type="application/pdf" href="a3.pdf"/></entry>'
        '<entry><link rel="enclosure" href="a4.mp3"/></entry>'
        "</feed>",
        "atom",
        pages("http://site.test/a1", "http://site.test/maps/a2"),
        id="atom",
    ),
    pytest.param(
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://other.test/base/">'
        '<entry><link href="p1"/></entry>'
        '<entry xml:base="sub/"><link href="p2"/></entry>'
        '<entry><link href="p3" xml:base="/abs/"/></entry>'
        "</feed>",
        "atom",
        pages(
            "http://other.test/base/p1", "http://other.test/base/sub/p2", "http://other.test/abs/p3"
        ),
        id="atom-xml-base",
    ),
    pytest.param(
        f'<urlset xmlns="{NS}"><sitemap><loc>http://site.test/mixed.xml</loc></sitemap>'
        "<url><loc>http://site.test/page</loc></url></urlset>",
        "urlset",
        [(SITEMAP, "http://site.test/mixed.xml"), (PAGE, "http://site.test/page")],
        id="urlset-with-a-sitemap-entry",
    ),
    pytest.param(
        "<pages><url><loc>http://site.test/p</loc></url></pages>",
        "urlset",
        pages("http://site.test/p"),
        id="unknown-root-learns-from-entries",
    ),
    pytest.param(
        f'<urlset xmlns="{NS}"></urlset>',
        "urlset",
        [],
        id="empty-urlset",
    ),
]


@pytest.mark.parametrize(("doc", "kind", "expected"), FORMATS)
def test_formats(doc: str, kind: str, expected: list[tuple[EntryKind, str]]) -> None:
    assert parse(doc) == (kind, expected)


EXTENSIONS = [
    pytest.param(
        "<url><loc>http://site.test/a</loc><image:image><image:loc>http://site.test/i.jpg"
        "</image:loc></image:image></url>",
        ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"',
        id="image",
    ),
    pytest.param(
        "<url><loc>http://site.test/a</loc><video:video>"
        "<video:thumbnail_loc>http://site.test/t.jpg</video:thumbnail_loc>"
        "<video:content_loc>http://site.test/v.mp4</video:content_loc>"
        "<video:player_loc>http://site.test/player</video:player_loc></video:video></url>",
        ' xmlns:video="http://www.google.com/schemas/sitemap-video/1.1"',
        id="video",
    ),
    pytest.param(
        "<url><loc>http://site.test/a</loc><news:news><news:publication><news:name>N"
        "</news:name></news:publication><news:title>T</news:title></news:news></url>",
        ' xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"',
        id="news",
    ),
    pytest.param(
        '<url><loc>http://site.test/a</loc><xhtml:link rel="alternate" hreflang="de" '
        'href="http://site.test/de/a"/></url>',
        ' xmlns:xhtml="http://www.w3.org/1999/xhtml"',
        id="hreflang",
    ),
    pytest.param(
        "<url><image:loc>http://site.test/stray.jpg</image:loc><loc>http://site.test/a</loc></url>",
        ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"',
        id="stray-image-loc-directly-in-url",
    ),
]


@pytest.mark.parametrize(("body", "xmlns"), EXTENSIONS)
def test_only_the_loc_of_url_is_a_page(body: str, xmlns: str) -> None:
    doc = f'<?xml version="1.0"?><urlset xmlns="{NS}"{xmlns}>{body}</urlset>'
    assert parse(doc) == ("urlset", pages("http://site.test/a"))


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(urlset("http://site.test/a"), id="sitemaps.org"),
        pytest.param(
            urlset("http://site.test/a", ns="http://www.google.com/schemas/sitemap/0.84"),
            id="google-0.84",
        ),
        pytest.param(
            urlset("http://site.test/a", ns="http://www.google.com/schemas/sitemap/0.9"),
            id="google-0.9",
        ),
        pytest.param(urlset("http://site.test/a", ns="http://example.com/wrong"), id="wrong"),
        pytest.param(urlset("http://site.test/a", ns=None), id="none"),
        pytest.param(
            f'<sm:urlset xmlns:sm="{NS}"><sm:url><sm:loc>http://site.test/a</sm:loc></sm:url></sm:urlset>',
            id="prefixed",
        ),
        pytest.param(
            "<sm:urlset><sm:url><sm:loc>http://site.test/a</sm:loc></sm:url></sm:urlset>",
            id="unbound-prefix",
        ),
        pytest.param("<URLSET><URL><LOC>http://site.test/a</LOC></URL></URLSET>", id="upper-case"),
        pytest.param("<Urlset><Url><Loc>http://site.test/a</Loc></Url></Urlset>", id="capitalised"),
        pytest.param(
            "<urlset><URL><Loc>http://site.test/a</Loc></URL></urlset>", id="mixed-case-children"
        ),
        pytest.param("<urlSet><uRl><lOc>http://site.test/a</lOc></uRl></urlSet>", id="odd-case"),
    ],
)
def test_any_namespace_and_tag_case(doc: str) -> None:
    assert parse(doc) == ("urlset", pages("http://site.test/a"))


# --- encodings and XML details -------------------------------------------------------

CAFE = "http://site.test/caf%C3%A9"


def declared(encoding: str, loc: str = "http://site.test/café") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<urlset><url><loc>{loc}</loc></url></urlset>'
    )


ENCODINGS = [
    pytest.param(b"\xef\xbb\xbf" + urlset("http://site.test/café").encode(), CAFE, id="utf-8-bom"),
    pytest.param(b"\xff\xfe" + declared("UTF-16").encode("utf-16-le"), CAFE, id="utf-16-le-bom"),
    pytest.param(b"\xfe\xff" + declared("UTF-16").encode("utf-16-be"), CAFE, id="utf-16-be-bom"),
    pytest.param(declared("UTF-16").encode("utf-16-le"), CAFE, id="utf-16-le-no-bom"),
    pytest.param(declared("UTF-16").encode("utf-16-be"), CAFE, id="utf-16-be-no-bom"),
    pytest.param(declared("UTF-32").encode("utf-32"), CAFE, id="utf-32-bom"),
    pytest.param(declared("ISO-8859-1").encode("latin-1"), CAFE, id="iso-8859-1"),
    pytest.param(
        declared("windows-1252", "http://site.test/€").encode("cp1252"),
        "http://site.test/%E2%82%AC",
        id="windows-1252",
    ),
    pytest.param(
        declared("Shift_JIS", "http://site.test/日本").encode("shift_jis"),
        "http://site.test/%E6%97%A5%E6%9C%AC",
        id="shift-jis",
    ),
    pytest.param(declared("UTF-16").encode(), CAFE, id="utf-16-label-on-utf-8-bytes"),
    pytest.param(declared("no-such-codec").encode(), CAFE, id="unknown-label-is-utf-8"),
    pytest.param(declared("rot13").encode(), CAFE, id="non-text-codec-is-utf-8"),
    pytest.param(
        b"\xef\xbb\xbf" + declared("ISO-8859-1").encode(), CAFE, id="bom-beats-declaration"
    ),
    pytest.param(
        ("\n \r\n\t" + declared("ISO-8859-1")).encode("latin-1"),
        CAFE,
        id="whitespace-before-declaration",
    ),
    pytest.param(
        declared("utf-8").encode().replace(b"\xc3\xa9", b"\xe9"),
        "http://site.test/caf%EF%BF%BD",
        id="invalid-utf-8-replaced",
    ),
]


@pytest.mark.parametrize(("data", "url"), ENCODINGS)
def test_encodings(data: bytes, url: str) -> None:
    assert parse(data) == ("urlset", pages(url))


LOC_VALUES = [
    pytest.param("http://site.test/?a=1&amp;b=2", "http://site.test/?a=1&b=2", id="amp"),
    pytest.param(
        "http://site.test/?a=1&amp;amp;b=2",
        "http://site.test/?a=1&amp;b=2",
        id="amp-amp-decoded-once",
    ),
    pytest.param(
        "http://site.test/&#x41;&#66;&lt;&gt;&quot;&apos;",
        "http://site.test/AB%3C%3E%22'",
        id="references",
    ),
    pytest.param("<![CDATA[http://site.test/?a=1&b=2]]>", "http://site.test/?a=1&b=2", id="cdata"),
    pytest.param(
        "<![CDATA[http://site.test/?a=1&amp;b]]>",
        "http://site.test/?a=1&amp;b",
        id="cdata-is-literal",
    ),
    pytest.param(
        "http://site.test/<![CDATA[x&y]]>z", "http://site.test/x&yz", id="cdata-in-the-middle"
    ),
    pytest.param("\n   http://site.test/a\n\t ", "http://site.test/a", id="whitespace"),
    pytest.param("http://site.test/?a=1&b=2", "http://site.test/?a=1&b=2", id="bare-amp"),
    pytest.param("http://site.test/?a=1&b", "http://site.test/?a=1&b", id="bare-amp-at-end"),
    pytest.param(
        "http://site.test/?a=1&b;c", "http://site.test/?a=1&b;c", id="bare-amp-with-semicolon"
    ),
    pytest.param(
        "http://site.test/a&nbsp;b",
        "http://site.test/a&nbsp;b",
        id="undefined-entity-kept-literally",
    ),
    pytest.param("http://site.test/?a=1& b", "http://site.test/?a=1&%20b", id="amp-space"),
    pytest.param("http://site.test/a<!-- note -->b", "http://site.test/ab", id="comment-inside"),
    pytest.param("http://site.test/a\x0cb", "http://site.test/ab", id="control-character-dropped"),
]


@pytest.mark.parametrize(("loc", "url"), LOC_VALUES)
def test_loc_values(loc: str, url: str) -> None:
    doc = urlset(loc, "http://site.test/after")
    assert parse(doc) == ("urlset", pages(url, "http://site.test/after"))


# --- recovery --------------------------------------------------------------------------

RECOVERY = [
    pytest.param(
        urlset("http://site.test/1", "http://site.test/2")[:-40]
        + "<url><loc>http://site.test/3-cut",
        pages("http://site.test/1", "http://site.test/2"),
        id="truncated-in-loc",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url><url><loc>http://site.test/2</lo",
        pages("http://site.test/1"),
        id="truncated-in-end-tag",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url><url><loc>http://site.test/2</loc>",
        pages("http://site.test/1", "http://site.test/2"),
        id="truncated-after-loc",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url><url><loc>http://site.test/2</url>"
        "<url><loc>http://site.test/3</loc></url></urlset>",
        pages("http://site.test/1", "http://site.test/2", "http://site.test/3"),
        id="missing-end-tag",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url></urlset>\n<!DOCTYPE html><html>"
        "<url><loc>http://site.test/after-root</loc></url></html>",
        pages("http://site.test/1"),
        id="junk-after-root",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url><!ENTITY x 'y'>"
        "<url><loc>http://site.test/2</loc></url></urlset>",
        pages("http://site.test/1"),
        id="declaration-inside-stops-reading",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc><x><![CDATA[<!DOCTYPE x>]]></x></url>"
        "<url><loc>http://site.test/2</loc></url></urlset>",
        pages("http://site.test/1", "http://site.test/2"),
        id="doctype-text-in-cdata-is-text",
    ),
    pytest.param(
        "Warning: Undefined index in /var/www/sitemap.php on line 3\n"
        '<?xml version="1.0"?><urlset><url><loc>http://site.test/1</loc></url></urlset>',
        pages("http://site.test/1"),
        id="php-warning-first",
    ),
    pytest.param(
        "<urlset><url><loc>http://site.test/1</loc></url><url><loc></loc></url>"
        "<url><loc>   </loc></url><url><loc>http://site.test/2</loc></url></urlset>",
        pages("http://site.test/1", "http://site.test/2"),
        id="empty-locs",
    ),
    pytest.param(
        '<urlset><url a="x>y"><loc>http://site.test/1</loc></url></urlset>',
        pages("http://site.test/1"),
        id="gt-in-attribute",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), RECOVERY)
def test_recovery(doc: str, expected: list[tuple[EntryKind, str]]) -> None:
    assert parse(doc)[1] == expected


def test_bare_ampersand_keeps_the_rest_of_a_large_file() -> None:
    # Without repair, libxml2 stalls on "&" until it sees a ";" and drops "&b".
    locs = [f"http://site.test/p{i}?a=1&b={i}" for i in range(2000)]
    doc = urlset(*locs).encode()
    parser = SitemapParser(BASE)
    first = parser.feed(doc[: len(doc) // 2])
    assert len(first) > 900  # entries flow while feeding, not only at close
    rest = parser.feed(doc[len(doc) // 2 :]) + parser.close()
    assert [e.url for e in first + rest] == locs


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(
            "<!DOCTYPE html><html><body><url><loc>http://site.test/x</loc></url></body></html>",
            id="doctype",
        ),
        pytest.param(
            "\n<!doctype HTML>\n<title>x</title>\nhttp://site.test/x\n", id="lower-case-doctype"
        ),
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd"><html xmlns="http://www.w3.org/1999/xhtml"/>',
            id="xhtml",
        ),
        pytest.param(
            '<!DOCTYPE html [<!ENTITY x "y">]><html>&x;</html>', id="html-with-internal-subset"
        ),
        pytest.param("<html><head><title>404</title></head></html>", id="no-doctype"),
        pytest.param("<!-- cached page -->\n<HTML><BODY>x</BODY></HTML>", id="comment-first"),
        pytest.param("Notice: something\n<!DOCTYPE html><html></html>", id="junk-first"),
    ],
)
def test_html_page_yields_nothing(doc: str) -> None:
    assert parse(doc) == ("html", [])


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        pytest.param(b"", "unknown", id="empty"),
        pytest.param(b" \n\t ", "unknown", id="blank"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "unknown", id="binary"),
        pytest.param(
            b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4, "unknown", id="gzip-not-inflated"
        ),
        pytest.param(b'{"urls": ["http://site.test/a"]}', "text", id="json"),
        pytest.param(b"<![CDATA[x]]>", "unknown", id="cdata-at-top"),
        pytest.param(b"<?xml version='1.0'?><!-- never closed", "unknown", id="unclosed-comment"),
        pytest.param(b"<", "unknown", id="lone-angle"),
    ],
)
def test_not_a_sitemap(data: bytes, kind: str) -> None:
    assert parse(data) == (kind, [])


# --- normalisation -----------------------------------------------------------------------

NORMALISATION = [
    pytest.param("http://site.test/doc#part", "http://site.test/doc", id="fragment-dropped"),
    pytest.param("http://site.test/#!/inbox", "http://site.test/#!/inbox", id="hashbang-kept"),
    pytest.param(
        "http://site.test/#/settings", "http://site.test/#/settings", id="hash-route-kept"
    ),
    pytest.param("http://site.test/a#", "http://site.test/a", id="empty-fragment"),
    pytest.param("HTTP://Site.TEST:80/a/./b/../c", "http://site.test/a/c", id="canonicalised"),
    pytest.param("https://site.test/a b", "https://site.test/a%20b", id="space-encoded"),
    pytest.param("http://bücher.test/", "http://xn--bcher-kva.test/", id="idn"),
    pytest.param("http://other.test/x", "http://other.test/x", id="cross-host-kept"),
]


@pytest.mark.parametrize(("loc", "url"), NORMALISATION)
def test_normalisation(loc: str, url: str) -> None:
    assert parse(urlset(loc)) == ("urlset", pages(url))


@pytest.mark.parametrize(
    "loc",
    [
        "ftp://site.test/f",
        "mailto:someone@site.test",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/html,hi",
        "http://",
        "http://exa mple.test/",
        "http://site.test/" + "a" * 2100,
        "",
    ],
)
def test_unusable_values_are_skipped(loc: str) -> None:
    doc = urlset(loc, "http://site.test/ok")
    assert parse(doc) == ("urlset", pages("http://site.test/ok"))
    parser = SitemapParser(BASE)
    parser.feed(doc.encode())
    parser.close()
    assert parser.skipped.relative == 0  # not relative: unusable (another scheme...)


RELATIVE_LOCS = [
    "page",
    "/root",
    "../up",
    "?q=d",
    "//cdn.site.test/x",
    # WHATWG resolves these against the sitemap's URL (http:127.0.0.1/ became
    # /127.0.0.1/ on the sitemap's host); the protocol wants scheme://.
    "http:127.0.0.1/",
    "https:site.test/a",
    "HTTP:/x",
    "http:\\\\site.test\\a",
    "  /spaced  ",
]


@pytest.mark.parametrize("loc", RELATIVE_LOCS)
@pytest.mark.parametrize("index", [False, True], ids=["urlset", "sitemapindex"])
def test_relative_locs_are_skipped_and_counted(loc: str, index: bool) -> None:
    if index:
        doc = (
            f"<sitemapindex><sitemap><loc>{loc}</loc></sitemap>"
            "<sitemap><loc>http://site.test/ok.xml</loc></sitemap></sitemapindex>"
        )
        want = ("sitemapindex", [(SITEMAP, "http://site.test/ok.xml")])
    else:
        doc = urlset(loc, "http://site.test/ok")
        want = ("urlset", pages("http://site.test/ok"))
    for chunk in (None, 1, 7):
        parser = SitemapParser(BASE)
        data = doc.encode()
        entries: list[Entry] = []
        if chunk is None:
            entries += parser.feed(data)
        else:
            for i in range(0, len(data), chunk):
                entries += parser.feed(data[i : i + chunk])
        entries += parser.close()
        assert (parser.kind, [(e.kind, e.url) for e in entries]) == want
        assert parser.skipped.relative == 1
        assert parser.skipped.first_relative == loc.strip()


def test_relative_feed_links_still_resolve() -> None:
    # RSS and Atom allow relative links (Atom with xml:base): only <loc> must be absolute.
    atom = '<feed xmlns="http://www.w3.org/2005/Atom"><entry><link href="post-a"/></entry></feed>'
    assert parse(atom) == ("atom", pages("http://site.test/maps/post-a"))


def test_no_dedupe_and_document_order() -> None:
    locs = ["http://site.test/b", "http://site.test/a", "http://site.test/b", "http://site.test/c"]
    assert parse(urlset(*locs)) == ("urlset", pages(*locs))


NORMALISE_SAMPLES = [
    "http://site.test/a",
    "https://www.example.com/blog/post-1/?utm=x&page=2",
    " https://site.test/a?b=c ",
    "HTTP://SITE.TEST/",
    "http://Site.test/a",
    "http://site.test",
    "http://site.test:80/x",
    "https://site.test:443/x",
    "http://site.test:8080/x",
    "http://site.test/a#b",
    "http://site.test/a#!b",
    "http://site.test/a#/b",
    "http://site.test/a#",
    "http://site.test/a#!#",
    "http://site.test/a?",
    "http://site.test/./a/../b",
    "http://site.test/%2e%2E/x",
    "http://site.test/.well-known/x",
    "http://site.test/x/..",
    "http://site.test/a'b?c'd",
    "http://site.test/a b",
    "http://site.test/caf\u00e9",
    "http://xn--bcher-kva.test/",
    "http://xn--invalid-.test/",
    "http://b\u00fccher.test/",
    "http://example.123/",
    "http://1.2.3/",
    "http://0x7f.1/",
    "http://a.0x1f/",
    "http://a.0xg/",
    "http://-a-.b-/",
    "http://a..b/",
    "http://a.b./",
    "http://a_b.test/",
    "http://site.test/\\x",
    "relative/path",
    "",
    "   ",
    "\u00a0http://site.test/nbsp\u00a0",
    "http://site.test/\t/tab",
    "http://[::1]/v6",
    "http://user:pw@site.test/",
    "ftp://site.test/",
    "http://" + "a" * 2050 + ".test/",
    "http://site.test/" + "b" * 2030,
    "javascript:void(0)",
    "http://site.test/%zz",
]


def test_canonical_urls_take_the_fast_path() -> None:
    for url in (
        "https://www.example.com/",
        "https://www.example.com/blog/2024/05/post-title/",
        "https://shop.example.co.uk/p/item-1.html?ref=sitemap&v=2",
        "http://example.com/a%20b/~user/(x)",
    ):
        assert _CANONICAL.fullmatch(url), url


@pytest.mark.parametrize("raw", NORMALISE_SAMPLES)
def test_fast_normalise_equals_page_url(raw: str) -> None:
    assert _normalise(raw, BASE) == page_url(raw, BASE)


def test_fast_normalise_equals_page_url_on_many_urls() -> None:
    rng = random.Random(20240501)
    hosts = "abx0129-."
    paths = "aZ09-._~!$&'()*+,;=:@%2eE/?#\u00e9 "
    for _ in range(20_000):
        host = "".join(rng.choice(hosts) for _ in range(rng.randint(1, 9)))
        host = rng.choice(["", "", "", "0x", "xn--", "www."]) + host
        path = "".join(rng.choice(paths) for _ in range(rng.randint(0, 14)))
        raw = rng.choice(["http://", "https://"]) + host + rng.choice(["/", "", ":80/"]) + path
        assert _normalise(raw, BASE) == page_url(raw, BASE), raw


URLISH = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["http://", "https://", "HTTP://", "//", "/", "", "ftp://"]),
    st.text(alphabet="abcx0123456789.-_:@[]", max_size=16),
    st.text(alphabet="abc/.%2eE?&=!'~:@;,()*+$#\u00e9 \t\\", max_size=24),
    st.sampled_from(["", "#", "#!x", "#/y", "#z", " ", "?", "/"]),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), URLISH))
def test_fast_normalise_equals_page_url_generated(raw: str) -> None:
    assert _normalise(raw, BASE) == page_url(raw, BASE)


# --- hostile input -------------------------------------------------------------------------

LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<urlset><url><loc>http://site.test/&lol9;</loc></url></urlset>"
)
XXE = (
    '<?xml version="1.0"?>\n<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    "<urlset><url><loc>http://site.test/?leak=&xxe;</loc></url></urlset>"
)
REFUSED = [
    pytest.param(LAUGHS, id="billion-laughs"),
    pytest.param(XXE, id="external-entity-file"),
    pytest.param(
        '<!DOCTYPE urlset [<!ENTITY % p SYSTEM "http://127.0.0.1:1/evil.dtd"> %p;]><urlset/>',
        id="external-parameter-entity",
    ),
    pytest.param('<!DOCTYPE urlset SYSTEM "http://127.0.0.1:1/s.dtd"><urlset/>', id="external-dtd"),
    pytest.param(
        "<!DOCTYPE urlset><urlset><url><loc>http://site.test/a</loc></url></urlset>",
        id="bare-doctype",
    ),
    pytest.param("<!doctype urlset><urlset/>", id="lower-case-doctype"),
    pytest.param("<!DOCTYPE><urlset/>", id="doctype-without-name"),
    pytest.param('<!ENTITY x "y"><urlset/>', id="entity-without-doctype"),
    pytest.param("<!ELEMENT urlset ANY><urlset/>", id="element-declaration"),
    pytest.param(
        '<?xml version="1.0"?>\n<!-- a comment -->\n<?xml-stylesheet href="s.xsl"?>\n'
        "<!-- <urlset> -->\n<!DOCTYPE urlset [<!ENTITY a 'b'>]><urlset/>",
        id="after-comments-and-pis",
    ),
    pytest.param("\n\n   <!DOCTYPE urlset [<!ENTITY a 'b'>]><urlset/>", id="after-whitespace"),
    pytest.param(
        "Warning: x\n<?xml version='1.0'?><!DOCTYPE urlset [<!ENTITY a 'b'>]><urlset/>",
        id="after-junk",
    ),
    pytest.param(
        b"\xff\xfe" + f'<?xml version="1.0" encoding="UTF-16"?>{XXE[21:]}'.encode("utf-16-le"),
        id="utf-16-le",
    ),
    pytest.param(XXE.encode("utf-16-be"), id="utf-16-be-no-bom"),
    pytest.param(XXE.encode("utf-32"), id="utf-32"),
    pytest.param(
        # "+ADw-" is "<": only a scan of the decoded text can see this DOCTYPE.
        b'<?xml version="1.0" encoding="UTF-7"?>'
        b"+ADw-!DOCTYPE urlset +AFsAPA-!ENTITY a 'b'+AD4AXQA+-<urlset/>",
        id="utf-7-encoded",
    ),
    pytest.param(b"\xef\xbb\xbf" + XXE.encode(), id="utf-8-bom"),
]


@pytest.mark.parametrize("doc", REFUSED)
def test_dtds_and_entities_are_refused(doc: str | bytes) -> None:
    data = doc.encode() if isinstance(doc, str) else doc
    for chunk in (None, 1, 7):
        parser = SitemapParser(BASE)
        leaked: list[Entry] = []
        with pytest.raises(InvalidSitemap):
            if chunk is None:
                leaked += parser.feed(data)
            else:
                for i in range(0, len(data), chunk):
                    leaked += parser.feed(data[i : i + chunk])
            leaked += parser.close()
        assert leaked == []
        # The parser stays refused.
        with pytest.raises(InvalidSitemap):
            parser.feed(b"<urlset/>")


def test_doctype_is_caught_before_lxml_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lxml(*args: object, **kwargs: object) -> None:
        raise AssertionError("lxml was handed a document with a DOCTYPE")

    monkeypatch.setattr(etree, "XMLPullParser", no_lxml)
    for doc in (XXE.encode("utf-16"), LAUGHS.encode(), b"<!DOCTYPE x><urlset/>"):
        with pytest.raises(InvalidSitemap):
            parse_chunked(doc, 3)


def test_xinclude_is_never_processed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_text("<url><loc>http://site.test/secret</loc></url>")
    doc = (
        f'<urlset xmlns="{NS}" xmlns:xi="http://www.w3.org/2001/XInclude">'
        f'<xi:include href="{secret.as_uri()}"/>'
        '<xi:include href="file:///etc/passwd" parse="text"/>'
        "<url><loc>http://site.test/a</loc></url></urlset>"
    )
    assert parse(doc) == ("urlset", pages("http://site.test/a"))


def test_max_bytes() -> None:
    doc = urlset(*(f"http://site.test/{i}" for i in range(100))).encode()
    parser = SitemapParser(BASE, max_bytes=1000)
    got: list[Entry] = []
    with pytest.raises(ResponseTooLarge):
        for i in range(0, len(doc), 100):
            got += parser.feed(doc[i : i + 100])
    assert parser.bytes_read > 1000
    assert 0 < len(got) < 100  # what was read before the limit stands
    with pytest.raises(ResponseTooLarge):
        parser.close()


def test_exactly_max_bytes_is_fine() -> None:
    doc = urlset("http://site.test/a").encode()
    assert parse_chunked(doc, None, max_bytes=len(doc)) == ("urlset", pages("http://site.test/a"))


def test_feed_after_close_is_a_bug() -> None:
    parser = SitemapParser(BASE)
    parser.close()
    with pytest.raises(RuntimeError):
        parser.feed(b"<urlset/>")


def test_kind_is_known_early_and_bytes_are_counted() -> None:
    parser = SitemapParser(BASE)
    assert parser.kind == "unknown"
    first = b'<?xml version="1.0"?>\n<sitemapindex xmlns="x"><sitemap>'
    second = b"<loc>http://site.test/s.xml</loc></sitemap></sitemapindex>"
    parser.feed(first)
    assert parser.kind == "sitemapindex"
    parser.feed(second)
    assert parser.bytes_read == len(first) + len(second)
    parser.close()
    assert parser.kind == "sitemapindex"


def test_one_huge_chunk_equals_small_chunks() -> None:
    doc = urlset(*(f"http://site.test/{i}?q=a&b" for i in range(40_000))).encode()
    assert len(doc) > 2 * 2**20
    whole = parse_chunked(doc, None)
    assert whole == parse_chunked(doc, 65536)
    assert len(whole[1]) == 40_000


def test_long_text_lines_are_skipped_without_buffering() -> None:
    junk = b"x" * 100_000
    doc = b"http://site.test/1\n" + junk + b"\nhttp://site.test/2\nhttp://site.test/" + junk
    assert parse_chunked(doc, 1000) == ("text", pages("http://site.test/1", "http://site.test/2"))


# --- the fixture corpus ------------------------------------------------------------------------

CASES = sorted(p.parent for p in CORPUS.glob("*/case.json"))
DOCUMENTS = sorted(
    p for case in CASES for p in case.iterdir() if p.is_file() and p.name != "case.json"
)
ERRORS = {"NO_SITEMAP_FOUND", "NO_URLS_FOUND", "INVALID_SITEMAP"}


def load(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "case.json").read_text())
    return data


def served(case: Path, route: dict[str, Any]) -> bytes:
    """The body the test server sends for a file route (any content-encoding applied)."""
    path = case / str(route["file"])
    data = path.read_bytes()
    if path.suffix in (".xml", ".txt", ".html", ""):
        data = data.replace(b"{origin}", ORIGIN.encode())
    if route.get("gzip"):
        data = gzip.compress(data, mtime=0)
    if route.get("content_encoding") == "gzip":
        data = gzip.compress(data, mtime=0)
    return data


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        spec = load(case)
        assert set(spec) == {"description", "start", "args", "routes", "expect"}, case.name
        assert spec["description"] and "\n" not in spec["description"]
        assert spec["start"].startswith("/")
        assert all(isinstance(a, str) for a in spec["args"])
        for path, route in spec["routes"].items():
            assert path.startswith("/"), (case.name, path)
            assert set(route) <= {
                "file",
                "status",
                "content_type",
                "gzip",
                "content_encoding",
                "redirect",
                "headers",
            }
            if "file" in route:
                assert (case / route["file"]).is_file(), (case.name, route)
        expect = spec["expect"]
        assert len(set(expect) & {"urls", "error"}) == 1, case.name
        assert set(expect) <= {"urls", "error", "stderr"}, case.name
        assert all(isinstance(part, str) for part in expect.get("stderr", [])), case.name
        if "urls" in expect:
            assert expect["urls"] and len(set(expect["urls"])) == len(expect["urls"]), case.name
        else:
            assert expect["error"] in ERRORS, case.name
        for file in case.iterdir():
            assert file.stat().st_size < 8192, file


def single_document(case: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The case's spec and start route, when the start URL is the whole case."""
    spec = load(case)
    route = spec["routes"].get(spec["start"])
    if spec["args"] or route is None or "file" not in route or route.get("status", 200) != 200:
        return None
    return spec, route


def read_document(data: bytes, url: str) -> tuple[str, list[Entry]]:
    inflater = Inflater()
    parser = SitemapParser(url)
    entries: list[Entry] = []
    for i in range(0, len(data), 512):
        for piece in inflater.feed(data[i : i + 512]):
            entries += parser.feed(piece)
    for piece in inflater.close():
        entries += parser.feed(piece)
    entries += parser.close()
    return parser.kind, entries


def pure_cases() -> Iterator[Any]:
    for case in CASES:
        found = single_document(case)
        if found is None:
            continue
        spec, route = found
        try:
            _, entries = read_document(served(case, route), ORIGIN + spec["start"])
        except InvalidSitemap:
            entries = []
        if any(e.kind is SITEMAP for e in entries):
            continue  # an index: the HTTP harness follows it
        yield pytest.param(case, id=case.name)


PURE = list(pure_cases())


def test_enough_pure_cases() -> None:
    assert len(PURE) >= 30


@pytest.mark.parametrize("case", PURE)
def test_corpus_single_document_cases(case: Path) -> None:
    found = single_document(case)
    assert found is not None
    spec, route = found
    data = served(case, route)
    url = ORIGIN + spec["start"]
    expect = spec["expect"]
    if expect.get("error") == "INVALID_SITEMAP":
        with pytest.raises(InvalidSitemap):
            read_document(data, url)
        return
    kind, entries = read_document(data, url)
    urls = list(dict.fromkeys(e.url for e in entries))  # the caller dedupes
    if expect.get("error") == "NO_URLS_FOUND":
        assert urls == [] and kind in ("urlset", "sitemapindex", "rss", "atom")
    elif expect.get("error") == "NO_SITEMAP_FOUND":
        assert urls == [] and kind not in ("urlset", "sitemapindex", "rss", "atom")
    else:
        assert urls == [u.replace("{origin}", ORIGIN) for u in expect["urls"]]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_chunking_does_not_matter(path: Path) -> None:
    data = path.read_bytes().replace(b"{origin}", ORIGIN.encode())
    url = ORIGIN + "/" + path.name
    results = []
    for chunk in (None, 1, 7, 64):
        try:
            results.append(parse_chunked(data, chunk, url))
        except InvalidSitemap:
            results.append(("refused", []))
    assert results.count(results[0]) == len(results)


# --- Inflater ------------------------------------------------------------------------------------


def inflate(data: bytes, chunk: int = 1000, **kw: Any) -> bytes:
    inflater = Inflater(**kw)
    out = [b"".join(inflater.feed(data[i : i + chunk])) for i in range(0, len(data), chunk)]
    out.append(b"".join(inflater.close()))
    return b"".join(out)


DOC = urlset(*(f"http://site.test/{i}" for i in range(500))).encode()


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000, 10**6])
def test_inflater_gzip_by_magic(chunk: int) -> None:
    assert inflate(gzip.compress(DOC), chunk) == DOC


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_inflater_passes_plain_data_through(chunk: int) -> None:
    assert inflate(DOC, chunk) == DOC
    assert inflate(b"x", chunk) == b"x"
    assert inflate(b"", chunk) == b""
    assert inflate(b"\x1f", chunk) == b"\x1f"


def test_inflater_concatenated_members_and_trailing_garbage() -> None:
    data = gzip.compress(b"<urlset>") + gzip.compress(b"</urlset>") + b"\x00\x00garbage"
    assert inflate(data, 5) == b"<urlset></urlset>"


def test_inflater_double_gzip() -> None:
    assert inflate(gzip.compress(gzip.compress(DOC)), 100) == DOC


def test_inflater_layers_are_bounded() -> None:
    data = DOC
    for _ in range(4):
        data = gzip.compress(data)
    assert inflate(data) == gzip.compress(DOC)  # three layers undone, the fourth is data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x1f\x8b" + b"\x00" * 50, id="bad-header"),
        pytest.param(
            gzip.compress(DOC)[:10] + b"\xff" * 100 + gzip.compress(DOC)[110:], id="bad-block"
        ),
        pytest.param(
            gzip.compress(DOC)[:-8] + b"\x00\x00\x00\x00" + gzip.compress(DOC)[-4:], id="bad-crc"
        ),
        pytest.param(gzip.compress(DOC)[:200], id="truncated"),
        pytest.param(b"\x1f\x8b", id="magic-only"),
    ],
)
def test_inflater_corrupt_gzip(data: bytes) -> None:
    with pytest.raises(InvalidSitemap):
        inflate(data, 64)


def gzip_bomb(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(2**20)
    parts = [z.compress(block) for _ in range(size // 2**20)]
    parts.append(z.flush())
    return b"".join(parts)


def test_inflater_gzip_bomb_is_stopped_quickly_and_small() -> None:
    bomb = gzip_bomb(100 * 2**20)  # 100 MB of zeros in ~100 KB
    assert len(bomb) < 200_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        inflater = Inflater(max_output=2**20)
        with pytest.raises(ResponseTooLarge):
            for i in range(0, len(bomb), 65536):
                for _ in inflater.feed(bomb[i : i + 65536]):
                    pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 4 * 2**20  # budget + one decompress call, never the 100 MB


def test_inflater_gzip_bomb_against_the_default_budget() -> None:
    bomb = gzip_bomb(100 * 2**20)
    started = time.perf_counter()
    inflater = Inflater()
    produced = 0
    with pytest.raises(ResponseTooLarge):
        for i in range(0, len(bomb), 65536):
            for piece in inflater.feed(bomb[i : i + 65536]):
                produced += len(piece)
    assert produced <= 50 * 2**20
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("layers", [1, 2])
def test_inflater_caps_each_piece_whatever_the_chunk(layers: int) -> None:
    # The whole bomb (100 MiB of zeros in ~100 KB) in one feed, under a budget of
    # 64 MiB: the output still comes one bounded piece at a time, so no caller has to
    # slice its input, and memory stays at about one piece.
    bomb = gzip_bomb(100 * 2**20)
    if layers == 2:
        bomb = gzip.compress(bomb)
    inflater = Inflater(max_output=64 * 2**20, max_piece=64 * 1024)
    sizes: list[int] = []
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge):
            for piece in inflater.feed(bomb):
                sizes.append(len(piece))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(sizes) <= 64 * 1024
    assert sum(sizes) <= 64 * 2**20
    assert peak < 2**20 + 3 * len(bomb)


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_inflater_pieces_join_to_the_document(piece: int) -> None:
    for data in (DOC, gzip.compress(DOC), gzip.compress(gzip.compress(DOC))):
        inflater = Inflater(max_piece=piece)
        pieces = list(inflater.feed(data)) + list(inflater.close())
        assert b"".join(pieces) == DOC
        assert max(map(len, pieces)) <= piece


def test_inflater_budget_is_exact() -> None:
    data = gzip.compress(b"a" * 1000)
    assert inflate(data, max_output=1000) == b"a" * 1000
    with pytest.raises(ResponseTooLarge):
        inflate(data, max_output=999)
    assert inflate(b"b" * 10, max_output=10) == b"b" * 10
    with pytest.raises(ResponseTooLarge):
        inflate(b"b" * 11, max_output=10)


def test_inflater_feeds_the_parser() -> None:
    data = gzip.compress(urlset("http://site.test/gz").encode())
    inflater = Inflater()
    parser = SitemapParser(BASE)
    entries: list[Entry] = []
    for i in range(0, len(data), 10):
        for piece in inflater.feed(data[i : i + 10]):
            entries += parser.feed(piece)
    for piece in inflater.close():
        entries += parser.feed(piece)
    entries += parser.close()
    assert entries == [Entry(PAGE, "http://site.test/gz")]


# --- robots.txt -----------------------------------------------------------------------------

ROBOTS_URL = "https://site.test/robots.txt"
ROBOTS = [
    pytest.param("Sitemap: https://site.test/a.xml", ["https://site.test/a.xml"], id="simple"),
    pytest.param(
        "sitemap: /a.xml\nSITEMAP : b.xml\n  Sitemap\t:\thttps://site.test/c.xml  \n",
        ["https://site.test/a.xml", "https://site.test/b.xml", "https://site.test/c.xml"],
        id="case-blanks-relative",
    ),
    pytest.param(
        "Sitemap: https://site.test/a.xml # the main one\n# Sitemap: https://site.test/no.xml\n",
        ["https://site.test/a.xml"],
        id="comments",
    ),
    pytest.param(
        "Sitemap: https://site.test/a.xml\nSitemap: https://site.test/b.xml\nsitemap: https://site.test/a.xml",
        ["https://site.test/a.xml", "https://site.test/b.xml"],
        id="duplicates",
    ),
    pytest.param(
        "Sitemap: ftp://site.test/a.xml\nSitemap: javascript:x\nSitemap:\nSitemap: https://site.test/ok.xml",
        ["https://site.test/ok.xml"],
        id="non-http-and-empty",
    ),
    pytest.param(
        "\ufeffSitemap: https://site.test/bom.xml\r\nUser-agent: *\r\nSitemap: /crlf.xml\r\n",
        ["https://site.test/bom.xml", "https://site.test/crlf.xml"],
        id="bom-crlf",
    ),
    pytest.param(
        "Sitemap: https://site.test/a.xml\rSitemap: https://site.test/b.xml\r",
        ["https://site.test/a.xml", "https://site.test/b.xml"],
        id="cr-only",
    ),
    pytest.param(
        "User-agent: *\nDisallow: /x # Sitemap: https://site.test/no.xml\nNoSitemap: https://site.test/no2.xml\n"
        "Sitemaps: https://site.test/no3.xml",
        [],
        id="only-line-starts",
    ),
    pytest.param("User-agent: *\nDisallow:\n", [], id="none"),
    pytest.param("", [], id="empty"),
    pytest.param(
        "\x00\xff garbage \x01\nSitemap: https://site.test/s.xml\n\x00",
        ["https://site.test/s.xml"],
        id="garbage",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ROBOTS)
def test_parse_robots(text: str, expected: list[str]) -> None:
    assert parse_robots(text, ROBOTS_URL) == expected


def test_parse_robots_is_capped_and_fast() -> None:
    text = "".join(f"Sitemap: /s{i}.xml\nDisallow: /p{i}\n" for i in range(100_000))
    text += "x" * 5_000_000
    started = time.perf_counter()
    found = parse_robots(text, ROBOTS_URL)
    assert len(found) == MAX_ROBOTS_SITEMAPS
    assert found[0] == "https://site.test/s0.xml"
    assert time.perf_counter() - started < 2.0


# --- memory --------------------------------------------------------------------------------------


def huge_urlset(count: int, chunk: int = 65536) -> Iterator[bytes]:
    """A ``count``-URL urlset, generated in ``chunk``-byte pieces."""
    pending = bytearray(f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n'.encode())
    for i in range(count):
        pending += b"<url><loc>https://site.test/p/%d</loc></url>\n" % i
        if len(pending) >= chunk:
            yield bytes(pending[:chunk])
            del pending[:chunk]
    pending += b"</urlset>\n"
    yield bytes(pending)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("prefix", [b"<urlset><a><b>", b"<rss><channel><item>", b"<x:unknown>"])
def test_memory_is_flat_for_junk_elements(prefix: bytes) -> None:
    # No URL-bearing element at all (so no event would ever give the parser a
    # handle on the tree): 1M junk elements must not pile up as libxml2 nodes.
    parser = SitemapParser(BASE, max_bytes=2**30)
    parser.feed(prefix)
    chunk = b"<x/>" * 16384
    base_rss = rss_bytes()
    peak_rss = 0
    for i in range(64):  # 4 MiB
        assert parser.feed(chunk) == []
        if i % 16 == 0:
            peak_rss = max(peak_rss, rss_bytes() - base_rss)
    assert parser.close() == []
    assert peak_rss < 30 * 2**20, peak_rss


@pytest.mark.slow
def test_memory_is_flat_for_a_million_urls() -> None:
    # libxml2 allocates outside Python, where tracemalloc cannot see: the tree it
    # would build for 1M URLs is ~300 MB of C memory. So the process RSS is the
    # bound for the whole run, and tracemalloc watches Python's own allocations
    # over a window of ~40,000 URLs (tracing all 1M would take a minute).
    count = 1_000_000
    parser = SitemapParser("https://site.test/sitemap.xml", max_bytes=2**30)
    seen = 0
    last = ""
    base_rss = rss_bytes()
    peak_rss = 0
    traced_peak = 0
    for n, chunk in enumerate(huge_urlset(count)):
        if n == 200:
            tracemalloc.start()
        entries = parser.feed(chunk)
        if entries:
            seen += len(entries)
            last = entries[-1].url
        if n == 230:
            traced_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if n % 64 == 0:
            peak_rss = max(peak_rss, rss_bytes() - base_rss)
    seen += len(parser.close())
    assert seen == count
    assert last == f"https://site.test/p/{count - 1}"
    assert parser.bytes_read > 40 * 2**20
    print(f"traced peak {traced_peak / 2**20:.2f} MiB, RSS growth {peak_rss / 2**20:.2f} MiB")
    assert 0 < traced_peak < 5 * 2**20, traced_peak
    assert peak_rss < 30 * 2**20, peak_rss
