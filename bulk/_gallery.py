"""The archive's ``index.html``: a static gallery of the pages, relative links only,
no script (a CSP forbids it), every string a site controls escaped and shown visibly."""


from __future__ import annotations

import datetime
import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Final
from urllib.parse import quote

from ._manifest import ArchiveInfo, PageRecord, in_order
from ._paths import THUMBS_DIR

__all__ = ["gallery_chunks", "gallery_html"]

# Error messages are shown in the gallery cut to this many characters (the manifest
# keeps them whole): one runaway message must not swamp the page.
_GALLERY_MESSAGE_CHARS: Final = 500
# Only these become links to the live site: ``javascript:``, ``data:`` and friends
# stay text. Controls and spaces are refused outright because browsers strip or
# skip them while parsing (``java\tscript:``).
_HTTP_HREF_RE: Final = re.compile(r"(?i)https?://[^\x00-\x20\x7f]+")
# Characters that hide or reorder text (controls, bidi overrides, zero-width and
# line separators) are shown as \\u escapes so a hostile URL cannot spoof another.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
_EXTERNAL_REL: Final = "noopener noreferrer nofollow"
_DOT: Final = " \u00b7 "
_PRINTABLE_ASCII: Final = "".join(map(chr, range(0x21, 0x7F)))


_CSP: Final = "script-src 'none'; object-src 'none'; base-uri 'none'"
_CSS: Final = """\
:root{color-scheme:light dark;font-family:system-ui,sans-serif}
body{margin:0 auto;padding:1rem 1.5rem;max-width:110rem}
h1{font-size:1.4rem;margin:.2rem 0;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin-top:2rem}
header p{margin:.2rem 0;opacity:.75}
.grid{list-style:none;margin:1rem 0;padding:0;display:grid;gap:1rem;
grid-template-columns:repeat(auto-fill,minmax(200px,1fr))}
.card{border:1px solid #8886;border-radius:6px;overflow:hidden;
content-visibility:auto;contain-intrinsic-size:auto 420px}
.thumb{display:block;aspect-ratio:16/10;overflow:hidden;background:#8882}
.thumb img{display:block;width:100%;height:auto}
.nothumb{display:flex;align-items:center;justify-content:center;height:100%}
.card p{margin:.4rem .6rem;font-size:.8rem;overflow-wrap:anywhere}
.meta{opacity:.75}
.failed li{margin:.3rem 0;overflow-wrap:anywhere}
.warn{opacity:1!important;border-left:4px solid #c80;padding-left:.5rem}
"""


def gallery_html(info: ArchiveInfo, records: Sequence[PageRecord]) -> bytes:
    """The ``index.html`` gallery: open it straight from the unzipped folder.

    Every link is relative (thumbnails ``_thumbs/<seq>.jpg``, images by their entry
    name, percent-encoded because names may hold ``%``, ``#``, ``?``...). Everything
    that came from a sitemap or a page is HTML-escaped, with invisible and
    bidi-control characters shown as ``\\uXXXX``; only http(s) URLs become links to
    the live site (``noopener noreferrer nofollow``), anything else stays text. Each
    thumbnail shows the top of its page at the page's full width (clipped below,
    never cropped at the sides). A
    Content-Security-Policy forbids scripts and plugins; the page has no script and
    no inline image data, so it stays light at 10,000 rows.

    Args:
        info: The job.
        records: Every selected URL; a thumbnail is linked when ``thumb_path`` is set.

    Returns:
        The UTF-8 HTML document.

    Raises:
        ArchiveError: Duplicate ``seq``.
    """
    return "".join(gallery_chunks(info, in_order(records))).encode("utf-8")


def gallery_chunks(info: ArchiveInfo, records: Sequence[PageRecord]) -> Iterator[str]:
    ok_rows = [record for record in records if record.status == "ok"]
    failed_rows = [record for record in records if record.status != "ok"]
    started = info.started_at.astimezone(datetime.UTC)
    finished = info.finished_at.astimezone(datetime.UTC)
    site = _text(info.site)
    # The count links to the list of failed pages (their reasons are there).
    failed = f'<a href="#failed">{len(failed_rows)} failed</a>' if failed_rows else "0 failed"
    yield (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Screenshots of {site} \u2014 {started:%Y-%m-%d}</title>\n"
        f"<style>\n{_CSS}</style>\n</head>\n<body>\n<header>\n"
        f"<h1>Screenshots of {_link_or_text(info.site)}</h1>\n"
        f"<p>{started:%Y-%m-%d} \u00b7 captured {started:%H:%M}\u2013{finished:%H:%M} UTC"
        f" \u00b7 {_text(info.tool)} \u00b7 job {_text(info.job_id)}</p>\n"
        f"<p>{len(records)} pages: {len(ok_rows)} captured, {failed}"
        ' \u00b7 <a href="_manifest.json">_manifest.json</a></p>\n'
        f"{_truncation_note(info, len(records))}"
        "</header>\n<main>\n"
    )
    if ok_rows:
        yield '<ul class="grid">\n'
        for record in ok_rows:
            yield _card(record)
        yield "</ul>\n"
    if failed_rows:
        yield f'<h2 id="failed">Failed ({len(failed_rows)})</h2>\n<ol class="failed">\n'
        for record in failed_rows:
            yield _failed_item(record)
        yield "</ol>\n"
    yield "</main>\n</body>\n</html>\n"


def _truncation_note(info: ArchiveInfo, pages: int) -> str:
    """The header's warning that a limit cut the list (empty when none did)."""
    if not info.truncated:
        return ""
    listed = (
        f"the sitemaps list {info.found} URLs"
        if info.found is not None
        else (f"the sitemaps list more than {pages} URLs")
    )
    limits = ", ".join(info.reasons) or "a limit"
    return (
        f'<p class="warn"><strong>Not the whole site:</strong> {listed}; '
        f"{pages} were selected ({_text(limits)} cut the list).</p>\n"
    )


def _card(record: PageRecord) -> str:
    assert record.entry is not None
    image_href = _attr(quote(record.entry, safe="/"))
    if record.is_pdf:
        pages = "" if record.pdf_pages is None else f" \u00b7 {record.pdf_pages} pages"
        picture = f'<span class="nothumb pdf">PDF{pages}</span>'
    elif record.thumb_path is not None:
        picture = (
            f'<img loading="lazy" decoding="async" src="{THUMBS_DIR}/{record.seq:06d}.jpg"'
            f' alt="{_attr(_visible(record.url))}">'
        )
    else:
        picture = '<span class="nothumb">no preview</span>'
    meta = [f'<a href="{image_href}">{_text(record.entry)}</a>']
    if record.width is not None and record.height is not None:
        meta.append(f"{record.width}\u00d7{record.height}")
    if record.http_status is not None:
        meta.append(f"HTTP {record.http_status}")
    if record.truncated_height:
        meta.append("cut at the height limit")
    if record.load == "partial":
        meta.append("load partial")
    lines = [
        f'<li class="card" id="p{record.seq:06d}">',
        f'<a class="thumb" href="{image_href}">{picture}</a>',
        f'<p class="url">{_link_or_text(record.url)}</p>',
        f'<p class="meta">{_DOT.join(meta)}</p>',
    ]
    if record.final_url is not None and record.final_url != record.url:
        lines.append(f'<p class="meta">\u2192 {_link_or_text(record.final_url)}</p>')
    if record.extras:
        links = _DOT.join(
            f'<a href="{_attr(quote(extra.entry, safe="/"))}">{_text(extra.name)}</a>'
            for extra in record.extras
        )
        lines.append(f'<p class="meta">screenshots: {links}</p>')
    lines.append("</li>\n")
    return "\n".join(lines)


def _failed_item(record: PageRecord) -> str:
    parts = [f"<code>{_text(record.error_code or 'ERROR')}</code>", _link_or_text(record.url)]
    message = record.error_message or ""
    # The status once: HTTP_ERROR's own message already names it.
    if record.http_status is not None and f"HTTP {record.http_status}" not in message:
        parts.append(f"(HTTP {record.http_status})")
    if len(message) > _GALLERY_MESSAGE_CHARS:
        message = message[:_GALLERY_MESSAGE_CHARS] + "\u2026"
    if message:
        parts.append(f"\u2014 {_text(message)}")
    return f'<li id="p{record.seq:06d}">{" ".join(parts)}</li>\n'


def _link_or_text(url: str) -> str:
    if _HTTP_HREF_RE.fullmatch(url):
        # Non-ASCII is percent-encoded (as browsers do when they fetch it) so no bidi
        # or invisible character reaches the markup; printable ASCII keeps its meaning.
        href = _attr(quote(url, safe=_PRINTABLE_ASCII))
        return f'<a href="{href}" rel="{_EXTERNAL_REL}">{_text(url)}</a>'
    return _text(url)


def _text(value: str) -> str:
    return html.escape(_visible(value), quote=True)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _visible(value: str) -> str:
    if value.isprintable():  # fast path: no control, format or separator character
        return value
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in _HIDDEN_CATEGORIES else char
        for char in value
    )
