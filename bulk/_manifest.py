"""What an archive says about each page: ``PageRecord`` (one manifest row), its
``ExtraShot`` entries, the run's ``ArchiveInfo``, and the ``_manifest.json`` built from them.

``manifest_bytes`` is synchronous; ``_archive`` streams the result into the ZIP and
``_gallery`` renders the same records as HTML.
"""


from __future__ import annotations

import datetime
import itertools
import json
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, final

import attrs

from ._exceptions import ArchiveError

__all__ = [
    "MANIFEST_SCHEMA",
    "ROOT_RE",
    "ArchiveInfo",
    "ExtraShot",
    "PageRecord",
    "in_order",
    "manifest_bytes",
    "manifest_chunks",
]

MANIFEST_SCHEMA: Final = "bulk.manifest/1"
# The root folder is ``screenshots-<host>-<date>`` from ``_paths.root_folder``.
ROOT_RE: Final = re.compile(r"[a-z0-9-]{1,255}")


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
    return "".join(manifest_chunks(info, in_order(records))).encode("utf-8")


def manifest_chunks(info: ArchiveInfo, records: Sequence[PageRecord]) -> Iterator[str]:
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


def in_order(records: Sequence[PageRecord]) -> list[PageRecord]:
    """``records`` by ``seq``; each ``seq`` names a thumbnail, so they must differ."""
    ordered = sorted(records, key=lambda record: record.seq)
    for before, after in itertools.pairwise(ordered):
        if before.seq == after.seq:
            raise ArchiveError(f"two records have seq {after.seq}")
    return ordered


# --- gallery ----------------------------------------------------------------------
