"""The deliverable: one ZIP with the images, ``_manifest.json`` and an ``index.html`` gallery.

Layout (the root folder's name and the image entry names come from ``_paths``)::

    screenshots-<host>-<YYYY-MM-DD>/
      _manifest.json              every selected URL, ok or failed, in sitemap order
      index.html                  static gallery, relative links only, no script
      index.png, about/index.png  the images (or PDFs: ``index.pdf``)
      about/index@after.png       a page's named intermediate screenshots
      _thumbs/000001.jpg          gallery thumbnails, named by the row's ``seq``

The ZIP is streamed with zipstream-ng: every entry is stored (the images are
compressed already), so ``len()`` of the stream is its exact size before a byte is
produced, and memory stays flat whatever the page count: the manifest and the gallery
are written to disk first and the images are read in 64 KiB chunks.

``manifest_bytes``, ``gallery_html`` and ``make_thumbnail`` are synchronous (the
latter is CPU-bound: callers run it in a thread); ``write_zip`` is trio-native.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import html
import itertools
import json
import math
import os
import pathlib
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, Final, Literal, final
from urllib.parse import quote

import attrs
import trio
import zipstream
from PIL import Image, ImageFile, UnidentifiedImageError

from ._exceptions import ArchiveError
from ._paths import GALLERY_NAME, MANIFEST_NAME, THUMBS_DIR, is_safe_entry

__all__ = [
    "MANIFEST_SCHEMA",
    "ArchiveInfo",
    "ExtraShot",
    "PageRecord",
    "build_zip",
    "gallery_html",
    "make_thumbnail",
    "manifest_bytes",
    "write_zip",
]

MANIFEST_SCHEMA: Final = "bulk.manifest/1"

# MANIFEST_NAME, GALLERY_NAME and THUMBS_DIR come from _paths: the layout keeps pages
# off them, so one definition serves both.

# The root folder is ``screenshots-<host>-<date>`` from ``_paths.root_folder``.
_ROOT_RE: Final = re.compile(r"[a-z0-9-]{1,255}")
# Chunks of the ZIP are small (headers, 64 KiB of data); one larger buffer turns
# them into few write() calls.
_WRITE_BUFFER: Final = 1024 * 1024
# zipstream-ng 1.9.3 decides on a Zip64 end record with ``count >= 65535`` when
# writing but ``count > 65535`` in ``len()``, so at exactly this many entries the
# announced size is 76 bytes short (see build_zip).
_ZIP64_COUNT_TRAP: Final = 0xFFFF
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
_THUMB_QUALITY: Final = 70
# Decoders make_thumbnail accepts: the formats bulk captures in, nothing else.
_THUMB_FORMATS: Final = ("PNG", "JPEG", "WEBP")


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _extras(values: Iterable[ExtraShot]) -> tuple[ExtraShot, ...]:
    return tuple(values)


@final
@attrs.frozen(kw_only=True)
class ExtraShot:
    """A named intermediate screenshot of a page (a capture script's ``screenshot``).

    Args:
        name: The name the script gave it.
        entry: Its entry name, next to the page's (``_paths.Layout.assign_shots``).
        path: The image on disk; not written to the manifest.
        width: Width in pixels, when known.
        height: Height in pixels, when known.
        bytes: Size in bytes, when known.
        sha256: Hex SHA-256 of the file, when known.
    """

    name: str
    entry: str
    path: pathlib.Path
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None


@final
@attrs.frozen(kw_only=True)
class PageRecord:
    """One selected URL, captured or not, as the archive reports it.

    Args:
        seq: 1-based position in sitemap order; names the thumbnail.
        url: The page URL as selected from the sitemap.
        entry: The image's entry name relative to the root folder (``None`` when
            failed).
        status: ``ok`` or ``failed``.
        error_code: The ``BulkError.code`` of a failed capture.
        error_message: Its human message.
        http_status: The main document's HTTP status, when one was received.
        final_url: Where the page ended up after redirects, when known.
        width: Image width in pixels.
        height: Image height in pixels.
        bytes: Image size in bytes.
        sha256: Hex SHA-256 of the image file.
        image_path: The image on disk (ok rows); not written to the manifest.
        thumb_path: Its thumbnail on disk, if one was made.
        truncated_height: A full-page capture was cut at the height cap.
        load: ``"partial"`` when the capture was taken before the page's ``load``
            (sub-resources still pending), else ``None``.
        pending_hosts: The hosts whose requests were still pending then.
        pdf_pages: The page count of a PDF capture.
        blocked_requests: Requests blocked by ``block_ads``/``block_media``.
        extras: The page's named intermediate screenshots, in script order.
        options: The URL's own capture options (a URL list's per-URL override),
            redacted; ``None`` when it has the job's.

    Raises:
        ArchiveError: ``seq`` is below 1, ``status`` is unknown, an ok row has no
            ``entry`` or a failed row has one.
    """

    seq: int
    url: str
    entry: str | None
    status: Literal["ok", "failed"]
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    image_path: pathlib.Path | None = None
    thumb_path: pathlib.Path | None = None
    truncated_height: bool = False
    load: str | None = None
    pending_hosts: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    pdf_pages: int | None = None
    blocked_requests: int | None = None
    extras: tuple[ExtraShot, ...] = attrs.field(default=(), converter=_extras)
    options: Mapping[str, Any] | None = None

    @property
    def is_pdf(self) -> bool:
        """Whether the capture is a PDF (no thumbnail; the gallery shows a tile)."""
        return self.entry is not None and self.entry.lower().endswith(".pdf")

    def __attrs_post_init__(self) -> None:
        if self.seq < 1:
            raise ArchiveError(f"seq must be 1 or more, not {self.seq}")
        if self.status not in ("ok", "failed"):
            raise ArchiveError(f"status must be 'ok' or 'failed', not {self.status!r}")
        # The manifest says which file holds which page: an ok row without a file
        # or a failed row pointing at one would make it lie.
        if (self.status == "ok") != (self.entry is not None):
            raise ArchiveError(f"row {self.seq}: an ok row needs an entry, a failed row has none")


@final
@attrs.frozen(kw_only=True)
class ArchiveInfo:
    """What the archive says about the job as a whole.

    Args:
        job_id: The job's id.
        root: The root folder, e.g. ``screenshots-example-com-2026-11-23``.
        site: The site as the user gave it.
        sitemap_urls: The sitemaps the URLs came from.
        options: Capture options as JSON, already redacted by the caller.
        started_at: When the job started (timezone-aware).
        finished_at: When capturing ended (timezone-aware).
        tool: Name and version of the producer.
        truncated: A limit cut the list (``--max-pages``, ``maxPages``, a discovery
            budget): the archive holds fewer pages than the sitemaps list.
        found: How many page URLs the sitemaps list, when known.
        reasons: What cut the list (``Discovery.reasons``).
        source: ``"sitemap"`` or ``"urls"`` (a URL list).
        deduplicated: URL list items that repeated an earlier one (captured once).

    Raises:
        ArchiveError: A timestamp is naive.
    """

    job_id: str
    root: str
    site: str
    sitemap_urls: tuple[str, ...]
    options: Mapping[str, Any]
    started_at: datetime.datetime
    finished_at: datetime.datetime
    tool: str = "bulk 0.1.0"
    truncated: bool = False
    found: int | None = None
    reasons: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    source: Literal["sitemap", "urls"] = "sitemap"
    deduplicated: int = 0

    def __attrs_post_init__(self) -> None:
        for name in ("started_at", "finished_at"):
            if getattr(self, name).utcoffset() is None:
                raise ArchiveError(f"{name} must be timezone-aware")


# --- thumbnails -------------------------------------------------------------------


def make_thumbnail(
    image: pathlib.Path, thumb: pathlib.Path, *, width: int = 320, max_height: int = 480
) -> None:
    """Write a small JPEG of the top of ``image`` for the gallery.

    The thumbnail is ``width`` pixels wide; a page taller than ``max_height`` at that
    scale is cut to its top part (what a visitor sees first), which also lets a tall
    PNG be decoded only down to that cut and a JPEG be decoded at 1/2 to 1/8 scale.
    Transparency is flattened onto white.

    Args:
        image: A PNG, JPEG or WebP file.
        thumb: Where to write the JPEG; its directory is created if needed. It appears
            complete or not at all (temporary file + rename).
        width: Thumbnail width in pixels.
        max_height: Thumbnail height cap in pixels.

    Raises:
        ArchiveError: ``image`` is not a decodable PNG/JPEG/WebP (corrupt, truncated,
            another format, over Pillow's decompression-bomb limit), or ``width`` or
            ``max_height`` is below 1; no file is left.
        OSError: ``image`` cannot be opened or ``thumb`` cannot be written.
    """
    if width < 1 or max_height < 1:
        raise ArchiveError("thumbnail width and max_height must be positive")
    with open(image, "rb") as fp:
        try:
            small = _render_thumbnail(fp, width, max_height, trim=True)
            if small is None:
                fp.seek(0)
                small = _render_thumbnail(fp, width, max_height, trim=False)
            assert small is not None
        except UnidentifiedImageError as exc:
            raise ArchiveError(
                f"cannot make a thumbnail of {image.name}: not a PNG, JPEG or WebP"
            ) from exc
        except Exception as exc:
            raise ArchiveError(f"cannot make a thumbnail of {image.name}: {exc}") from exc
    thumb.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=thumb.parent, prefix=f".{thumb.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            small.save(out, format="JPEG", quality=_THUMB_QUALITY)
        # mkstemp makes 0600 files; the mode travels into the ZIP and unzip restores it.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, thumb)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _render_thumbnail(
    fp: IO[bytes], width: int, max_height: int, *, trim: bool
) -> Image.Image | None:
    """The thumbnail as an RGB image, or ``None`` if the trimmed decode failed."""
    with Image.open(fp, formats=_THUMB_FORMATS) as im:
        src_w, src_h = im.size
        if im.format == "JPEG" and src_w > width:
            # The JPEG decoder scales by 1/2..1/8 while decoding: far less to inflate.
            im.draft("RGB", (width, max(1, src_h * width // src_w)))
            src_w, src_h = im.size
        scale = width / src_w
        rows = min(src_h, max(1, math.ceil(max_height / scale)))
        height = max(1, min(max_height, round(rows * scale)))
        trimmed = trim and _decode_top_rows_only(im, rows)
        try:
            im.load()
        except Exception:
            if trimmed:
                return None  # the caller retries with a plain full decode
            raise
        if trimmed and im.size != (src_w, rows):
            return None
        source: Image.Image = im
        if source.mode not in ("RGB", "RGBA", "L", "LA"):
            has_alpha = "transparency" in source.info or source.mode in ("PA", "RGBa", "La")
            source = source.convert("RGBA" if has_alpha else "RGB")
        # reducing_gap shrinks by whole factors with reduce() first (fast, box filter),
        # then finishes with Lanczos: near-Lanczos quality at a fraction of the cost.
        small = source.resize(
            (width, height),
            Image.Resampling.LANCZOS,
            box=(0, 0, src_w, rows),
            reducing_gap=2.0,
        )
    if small.mode in ("RGBA", "LA"):
        flat = Image.new("RGB", small.size, "white")
        flat.paste(small, mask=small.getchannel("A"))
        return flat
    return small.convert("RGB")


def _decode_top_rows_only(im: ImageFile.ImageFile, rows: int) -> bool:
    """Make a non-interlaced PNG decode only its first ``rows`` rows.

    A full-page capture can be 16384 rows; the thumbnail needs the first few hundred.
    The PNG decoder stops once the image's rows are filled and ``load_end`` skips the
    remaining IDAT data, so shrinking the (only) tile and the size before ``load()``
    decodes a fraction of the pixels in a fraction of the memory. It relies on Pillow
    internals, so it is only done when the file has exactly the expected shape and the
    caller falls back to a full decode if anything about it goes wrong.
    """
    src_w, src_h = im.size
    if rows >= src_h or im.format != "PNG" or im.info.get("interlace"):
        return False
    if getattr(im, "is_animated", False) or len(im.tile) != 1:
        return False
    tile = im.tile[0]
    if tile.codec_name != "zip" or tuple(tile.extents or ()) != (0, 0, src_w, src_h):
        return False
    im._size = (src_w, rows)
    im.tile = [tile._replace(extents=(0, 0, src_w, rows))]
    return True


# --- manifest ---------------------------------------------------------------------


def manifest_bytes(info: ArchiveInfo, records: Sequence[PageRecord]) -> bytes:
    """The ``_manifest.json`` document.

    One row per record (failed ones included, with ``entry`` null), in ``seq`` order,
    one row per line so the file greps and diffs well::

        {"schema": "bulk.manifest/1",
         "job": {"id", "site", "sitemap_urls", "options", "started_at", "finished_at",
                 "root", "tool", "counts": {"total", "ok", "failed"},
                 "source", "truncated", "found", "reasons", "deduplicated"?},
         "urls": [{"seq", "url", "entry", "status", "error_code", "error_message",
                   "http_status", "final_url", "width", "height", "bytes", "sha256",
                   ...only when they apply: "truncated_height": true,
                   "load": "partial", "pending_hosts", "pdf_pages",
                   "blocked_requests", "screenshots": [{"name", "entry", "width",
                   "height", "bytes", "sha256"}], "options"}]}

    Timestamps are ISO 8601 UTC with milliseconds and ``Z``. ``truncated`` says a
    limit cut the list (``found``: how many URLs the sitemaps list, when known;
    ``reasons``: which limits); ``source`` is ``sitemap`` or ``urls`` (a URL list,
    with ``deduplicated`` items that repeated an earlier one).

    Args:
        info: The job.
        records: Every selected URL.

    Returns:
        UTF-8 JSON (non-ASCII kept as is), ending with a newline.

    Raises:
        ArchiveError: Duplicate ``seq``; ``info.options`` holds something JSON cannot
            represent (an object, a NaN/infinite number); a string that is not valid
            Unicode (lone surrogates).
    """
    return "".join(_manifest_chunks(info, _in_order(records))).encode("utf-8")


def _manifest_chunks(info: ArchiveInfo, records: Sequence[PageRecord]) -> Iterator[str]:
    ok = sum(1 for record in records if record.status == "ok")
    job: dict[str, object] = {
        "id": info.job_id,
        "site": info.site,
        "sitemap_urls": list(info.sitemap_urls),
        "options": dict(info.options),
        "started_at": _iso_utc(info.started_at),
        "finished_at": _iso_utc(info.finished_at),
        "root": info.root,
        "tool": info.tool,
        "counts": {"total": len(records), "ok": ok, "failed": len(records) - ok},
        "source": info.source,
        "truncated": info.truncated,
        "found": info.found,
        "reasons": list(info.reasons),
    }
    if info.source == "urls":
        job["deduplicated"] = info.deduplicated
    head = {"schema": MANIFEST_SCHEMA, "job": job}
    text = _json(head, indent=1)
    # Reopen the object (``...\n}``) to stream the rows one line each.
    yield text[: -len("\n}")] + ',\n "urls": ['
    for index, record in enumerate(records):
        yield "\n  " if index == 0 else ",\n  "
        yield _json(_manifest_row(record))
    yield "\n ]\n}\n" if records else "]\n}\n"


def _manifest_row(record: PageRecord) -> dict[str, object]:
    row: dict[str, object] = {
        "seq": record.seq,
        "url": record.url,
        "entry": record.entry,
        "status": record.status,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "http_status": record.http_status,
        "final_url": record.final_url,
        "width": record.width,
        "height": record.height,
        "bytes": record.bytes,
        "sha256": record.sha256,
    }
    # Only where they apply: the common row stays as short as it was.
    if record.truncated_height:
        row["truncated_height"] = True
    if record.load == "partial":
        row["load"] = "partial"
        row["pending_hosts"] = list(record.pending_hosts)
    if record.pdf_pages is not None:
        row["pdf_pages"] = record.pdf_pages
    if record.blocked_requests is not None:
        row["blocked_requests"] = record.blocked_requests
    if record.extras:
        row["screenshots"] = [
            {
                "name": extra.name,
                "entry": extra.entry,
                "width": extra.width,
                "height": extra.height,
                "bytes": extra.bytes,
                "sha256": extra.sha256,
            }
            for extra in record.extras
        ]
    if record.options is not None:
        row["options"] = dict(record.options)
    return row


def _json(value: object, *, indent: int | None = None) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"manifest data is not JSON: {exc}") from None
    # Checked here so the error names the cause instead of surfacing as an encode
    # failure of the whole document.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArchiveError(f"manifest data is not valid Unicode: {exc}") from None
    return text


def _iso_utc(moment: datetime.datetime) -> str:
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _in_order(records: Sequence[PageRecord]) -> list[PageRecord]:
    """``records`` by ``seq``; each ``seq`` names a thumbnail, so they must differ."""
    ordered = sorted(records, key=lambda record: record.seq)
    for before, after in itertools.pairwise(ordered):
        if before.seq == after.seq:
            raise ArchiveError(f"two records have seq {after.seq}")
    return ordered


# --- gallery ----------------------------------------------------------------------

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
    return "".join(_gallery_chunks(info, _in_order(records))).encode("utf-8")


def _gallery_chunks(info: ArchiveInfo, records: Sequence[PageRecord]) -> Iterator[str]:
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


# --- ZIP --------------------------------------------------------------------------


@final
@attrs.frozen
class _Source:
    """A file on disk and the name it takes in the archive."""

    arcname: str
    path: pathlib.Path


def build_zip(
    info: ArchiveInfo, records: Sequence[PageRecord], *, work_dir: pathlib.Path
) -> zipstream.ZipStream:
    """Write the manifest and gallery to ``work_dir`` and plan the archive's stream.

    Entries, all under ``info.root + "/"``, all stored, all regular files, in this
    order: ``_manifest.json``, ``index.html``, the images (``record.entry``, each
    followed by its intermediate screenshots) by ``seq``, the thumbnails
    (``_thumbs/<seq:06>.jpg``) by ``seq``. Non-ASCII names
    carry the ZIP UTF-8 flag. Every name is checked again here (the caller's names
    are already safe; this is the last line of defence before users' disks): the root
    must match ``[a-z0-9-]+``, every name must satisfy ``is_safe_entry`` and no two
    may be equal, equal after NFC + casefold (they would overwrite each other on
    macOS and Windows), or make one name both a file and a directory.

    Args:
        info: The job; ``info.root`` is the root folder.
        records: Every selected URL; ok rows need ``image_path``.
        work_dir: An existing directory for ``_manifest.json`` and ``index.html``.

    Returns:
        A sized ``zipstream.ZipStream``: ``len()`` is the exact byte size, known
        before any byte is produced. Consume it once (``write_zip``).

    Raises:
        ArchiveError: An unsafe or duplicate name, a duplicate ``seq``, an ok row
            without ``image_path``, an image or thumbnail that is a symlink or not a
            regular file, or manifest data JSON cannot hold. Raised before anything
            is written. (With names from ``Layout`` none of these can come from what
            a site serves.)
        OSError: A file cannot be read or ``work_dir`` cannot be written.

    Resource handling:
        Nothing is opened until the stream is consumed; each file is then opened,
        read in 64 KiB chunks and closed in turn. A file that changes size after
        this call makes the stream fail rather than produce a corrupt ZIP.
    """
    if not _ROOT_RE.fullmatch(info.root):
        raise ArchiveError(f"unsafe root folder {info.root!r}")
    ordered = _in_order(records)
    images: list[_Source] = []
    thumbs: list[_Source] = []
    for record in ordered:
        if record.status != "ok":
            continue
        assert record.entry is not None  # PageRecord guarantees it for ok rows
        if record.image_path is None:
            raise ArchiveError(f"row {record.seq} is ok but has no image_path")
        images.append(_Source(_arcname(info.root, record.entry), record.image_path))
        for extra in record.extras:
            images.append(_Source(_arcname(info.root, extra.entry), extra.path))
        if record.thumb_path is not None:
            thumb_entry = f"{THUMBS_DIR}/{record.seq:06d}.jpg"
            thumbs.append(_Source(_arcname(info.root, thumb_entry), record.thumb_path))
    for source in (*images, *thumbs):
        _require_regular_file(source.path)
    manifest = _Source(_arcname(info.root, MANIFEST_NAME), work_dir / MANIFEST_NAME)
    gallery = _Source(_arcname(info.root, GALLERY_NAME), work_dir / GALLERY_NAME)
    sources = [manifest, gallery, *images, *thumbs]
    _require_distinct(source.arcname for source in sources)

    _write_text(manifest.path, _manifest_chunks(info, ordered))
    _write_text(gallery.path, _gallery_chunks(info, ordered))

    zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    if len(sources) == _ZIP64_COUNT_TRAP:
        # Step off zipstream-ng's off-by-one (len() would be 76 bytes short): the
        # root folder's own directory entry is harmless and makes it 65536 entries.
        zs.mkdir(info.root)
    for source in sources:
        # recurse=False: a path that became a directory must not pull in its tree.
        zs.add_path(os.fspath(source.path), source.arcname, recurse=False)
    return zs


def _arcname(root: str, entry: str) -> str:
    # zipstream-ng normalises names (os.path.normpath) when it writes an entry but
    # not when it computes len(), so only names normpath leaves alone are sized right;
    # is_safe_entry's rules (no '', '.', '..' segments) guarantee that, re-checked here.
    name = f"{root}/{entry}"
    if not is_safe_entry(entry) or os.path.normpath(name) != name:
        raise ArchiveError(f"unsafe entry name {entry!r}")
    return name


def _require_regular_file(path: pathlib.Path) -> None:
    # lstat: a symlink could point anywhere on the host (/etc/shadow, a device) and
    # zipstream would follow it.
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{path} is a symlink")
    if not stat.S_ISREG(mode):
        raise ArchiveError(f"{path} is not a regular file")


def _require_distinct(names: Iterable[str]) -> None:
    """Refuse names that would overwrite each other or clash as file and directory."""
    files: dict[str, str] = {}
    dirs: set[str] = set()
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        other = files.get(key)
        if other is not None:
            if other == name:
                raise ArchiveError(f"two entries are named {name!r}")
            raise ArchiveError(f"entries {other!r} and {name!r} differ only by case/normalisation")
        files[key] = name
        parts = key.split("/")
        dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    clash = dirs.intersection(files)
    if clash:
        raise ArchiveError(f"{files[min(clash)]!r} would be both a file and a directory")


def _write_text(path: pathlib.Path, chunks: Iterable[str]) -> None:
    """Write ``chunks`` to ``path`` via a temporary file (never through a symlink)."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            out.writelines(chunks)
        os.chmod(tmp_name, 0o644)  # the mode travels into the ZIP
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


async def write_zip(zs: zipstream.ZipStream, out: pathlib.Path) -> tuple[int, str]:
    """Stream ``zs`` to ``out``: the file appears complete or not at all.

    The bytes go to ``out.name + ".partial"`` next to ``out`` in a worker thread,
    one chunk at a time (memory does not grow with the archive), are fsynced, and the
    file is renamed to ``out`` only once every byte is there and, for a sized stream,
    the byte count equals ``len(zs)``.

    Args:
        zs: A stream from ``build_zip`` (or any ZipStream), not consumed yet.
        out: The final path; an existing file there is replaced on success only.

    Returns:
        ``(size, sha256 hex)`` of the written file.

    Raises:
        OSError: Reading a source or writing ``out`` failed (e.g. an image was deleted).
        RuntimeError: A source changed size, or the stream did not produce ``len(zs)``
            bytes (zipstream-ng miscounted, or ``zs`` was consumed before).

    Cancellation:
        The worker thread checks for cancellation between chunks
        (``trio.from_thread.check_cancelled``) and is waited for, not abandoned: on
        cancellation it stops, removes the ``.partial`` file and only then does
        ``Cancelled`` propagate, with ``out`` untouched. A cancel that arrives after the
        final rename cannot undo it: the call then returns normally with ``out`` complete.
        Exceptions clean up the same way.
    """
    partial = out.with_name(out.name + ".partial")
    expected = len(zs) if zs.sized else None
    return await trio.to_thread.run_sync(
        _stream_to_file, zs, out, partial, expected, abandon_on_cancel=False
    )


def _stream_to_file(
    zs: zipstream.ZipStream, out: pathlib.Path, partial: pathlib.Path, expected: int | None
) -> tuple[int, str]:
    """Worker-thread body of ``write_zip``."""
    digest = hashlib.sha256()
    size = 0
    try:
        # O_NOFOLLOW: a symlink planted at the .partial name must not redirect the write.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(partial, flags, 0o644)
        with open(fd, "wb", buffering=_WRITE_BUFFER) as fp:
            chunks = iter(zs)
            try:
                for chunk in chunks:
                    trio.from_thread.check_cancelled()
                    fp.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            finally:
                # Closes the file zipstream is reading now, not whenever GC runs.
                chunks.close()
            if expected is not None and size != expected:
                raise RuntimeError(f"ZIP stream produced {size} bytes, announced {expected}")
            fp.flush()
            os.fsync(fp.fileno())
        trio.from_thread.check_cancelled()
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _fsync_dir(out.parent)
    return size, digest.hexdigest()


def _fsync_dir(directory: pathlib.Path) -> None:
    # Makes the rename itself durable. Best effort: some file systems refuse fsync on
    # a directory, and the archive is already complete under its final name.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
