"""What one discovery is allowed (``DiscoverLimits``) and what it reports (``Discovery``).

Plain values, shared by discovery (``_discover``), which fills the report in, and
the front doors that set the limits and show the report: the CLI's ``warning:``
lines and the API's job status (``Discovery.to_json``).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, final

import attrs

from ._exceptions import ValidationError

__all__ = [
    "DEFAULT_MAX_SITEMAPS",
    "SKIPPED_CROSS_HOST",
    "SKIPPED_FAILED",
    "SKIPPED_RELATIVE",
    "DiscoverLimits",
    "Discovery",
    "StopReason",
    "max_sitemaps_for",
]

#: Sitemap documents one discovery fetches unless told otherwise (the API's budget).
DEFAULT_MAX_SITEMAPS: Final = 100
# The CLI's budget grows with --max-pages (one document per this many pages) up to
# the most one sitemap index may list.
_PAGES_PER_SITEMAP: Final = 10
_MAX_SCALED_SITEMAPS: Final = 50_000
# Warnings kept in ``Discovery.to_json`` (the API status), and their length.
_REPORTED_WARNINGS: Final = 20
_WARNING_CHARS: Final = 300

#: Why a discovery's list is incomplete: ``max_pages`` (more URLs than asked for),
#: ``max_sitemaps`` / ``max_depth`` / ``timeout`` (a budget ran out),
#: ``incomplete_document`` (a document over its byte budget or cut off midway).
StopReason: TypeAlias = Literal[
    "max_pages", "max_sitemaps", "max_depth", "timeout", "incomplete_document"
]
#: ``Discovery.skipped`` keys.
SKIPPED_RELATIVE: Final = "relative_loc"
SKIPPED_CROSS_HOST: Final = "cross_host_sitemap"
SKIPPED_FAILED: Final = "failed_sitemap"


def max_sitemaps_for(max_pages: int) -> int:
    """The sitemap-document budget that suits a page limit (the CLI's default).

    One document per ``_PAGES_PER_SITEMAP`` pages, never below ``DEFAULT_MAX_SITEMAPS``
    nor above 50,000 (the most one sitemap index may list).
    """
    return max(DEFAULT_MAX_SITEMAPS, min(max_pages // _PAGES_PER_SITEMAP, _MAX_SCALED_SITEMAPS))


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValidationError(f"{name} must be at least {low:g}", field=name)


@attrs.frozen(kw_only=True)
class DiscoverLimits:
    """Bounds of one discovery (a hostile site cannot make it unbounded).

    Args:
        max_pages: Send at most this many unique page URLs.
        same_host: Keep only URLs on the site's host.
        max_depth: Sitemap index nesting followed (the top level is 1).
        max_sitemaps: Sitemap documents fetched in all (probes, robots.txt lines and
            index children alike; robots.txt itself is not one).
        max_document_bytes: Decompressed bytes read from one document (the protocol's
            limit is 50 MB; like ultimate-sitemap-parser, twice that is accepted).
            Memory does not grow with it: documents are parsed as they stream.
        total_timeout: Seconds for the whole discovery.
        lookahead: Documents fetched ahead of the one being read, per level.
        count_limit: Unique URLs counted in all (sent or not) to tell how many the
            sitemaps list (``Discovery.found``); past it, ``found`` is unknown.
        count_timeout: Seconds spent counting once ``max_pages`` URLs are sent
            (0: stop at once; ``found`` is then unknown when there are more).

    Raises:
        ValidationError: A bound below its minimum (names the field).
    """

    max_pages: int = 100
    same_host: bool = False
    max_depth: int = 5
    max_sitemaps: int = DEFAULT_MAX_SITEMAPS
    max_document_bytes: int = 100 * 2**20
    total_timeout: float = 120.0
    lookahead: int = 4
    count_limit: int = 100_000
    count_timeout: float = 2.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_pages", "max_depth", "max_sitemaps", "max_document_bytes", "lookahead"):
            _at_least(name, getattr(self, name), 1)
        _at_least("count_limit", self.count_limit, 0)
        _at_least("count_timeout", self.count_timeout, 0)


@final
@attrs.define
class Discovery:
    """What a discovery found, filled in as it runs.

    Attributes:
        site: The origin the sitemaps were found for.
        sitemaps: Final URLs of the sitemap documents read, in order.
        pages: Unique page URLs sent.
        found: Unique page URLs the documents read list in all (``pages`` and those
            past ``max_pages``), when known: ``None`` when counting stopped first.
        requests: HTTP requests made.
        truncated: Some page URLs were not sent; ``reasons`` says why.
        reasons: Every ``StopReason`` that cut the list, in the order met.
        skipped: How many values and documents were skipped, by kind:
            ``relative_loc`` (``<loc>`` values that are not absolute URLs),
            ``cross_host_sitemap`` (index children on another host, not fetched),
            ``failed_sitemap`` (documents asked for by name that could not be read).
        warnings: What happened, in words (one line each).
        refused: Sitemaps refused as hostile (they decide INVALID_SITEMAP).
    """

    site: str = ""
    sitemaps: list[str] = attrs.field(factory=list)
    pages: int = 0
    found: int | None = None
    requests: int = 0
    truncated: bool = False
    reasons: list[StopReason] = attrs.field(factory=list)
    skipped: dict[str, int] = attrs.field(
        factory=lambda: {SKIPPED_RELATIVE: 0, SKIPPED_CROSS_HOST: 0, SKIPPED_FAILED: 0}
    )
    warnings: list[str] = attrs.field(factory=list)
    refused: int = 0

    def stop(self, reason: StopReason, message: str = "") -> None:
        """Record that ``reason`` cut the list (its ``message`` once, as a warning)."""
        self.truncated = True
        if reason not in self.reasons:
            self.reasons.append(reason)
            if message:
                self.warnings.append(message)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values (the API's job status shows it as ``discovery``)."""
        return {
            "site": self.site,
            "sitemaps": len(self.sitemaps),
            "pages": self.pages,
            "found": self.found,
            "truncated": self.truncated,
            "reasons": list(self.reasons),
            "skipped": dict(self.skipped),
            "requests": self.requests,
            "warnings": [w[:_WARNING_CHARS] for w in self.warnings[:_REPORTED_WARNINGS]],
        }
