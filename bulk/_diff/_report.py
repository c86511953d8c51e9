"""The change report: one static HTML page, readable offline with no script.

    summary (counts, the two archives, the settings, the changed pages by size)
    changed pages, largest change first: before / after / diff / slider
    added, removed and failed pages

The views are radio buttons and CSS (``:checked ~``); the slider is a box the reader
drags wider (CSS ``resize``) over the new screenshot to uncover the old one. A
Content-Security-Policy forbids scripts. Images are files beside the report
(``<stem>_files/``, what ``bulk diff -o`` writes); ``src`` maps an entry to its URL.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import quote

from .._archive import _link_or_text, _text
from ._compare import ArchiveDiff, PageChange

__all__ = ["report_html", "write_report"]

_CSP: Final = "script-src 'none'; object-src 'none'; base-uri 'none'"
_CSS: Final = resources.files("bulk._diff").joinpath("report.css").read_text(encoding="utf-8")
_EAGER_DIFFS: Final = 4
_VIEWS: Final = (("diff", "Diff"), ("before", "Before"), ("after", "After"), ("slider", "Slider"))


def write_report(diff: ArchiveDiff, out: Path) -> None:
    """Write the report to ``out`` (images are the files ``compare_archives`` wrote
    beside it). It appears complete or not at all."""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(report_html(diff, _relative), encoding="utf-8")
    os.replace(tmp, out)


def _relative(entry: str) -> str:
    return quote(entry, safe="/")


def report_html(diff: ArchiveDiff, src: Callable[[str], str]) -> str:
    """The report as one HTML document.

    Args:
        diff: What ``compare_archives`` found (with its ``*_entry`` files).
        src: The ``src`` of an image entry (a relative URL or a ``data:`` URI).
    """
    return "".join(_chunks(diff, src))


def _percent(share: float) -> str:
    value = share * 100
    if value >= 10:
        return f"{value:.1f} %"
    if value >= 0.01:
        return f"{value:.2f} %"
    return f"{value:.4f} %"


def _chunks(diff: ArchiveDiff, src: Callable[[str], str]) -> Iterator[str]:
    counts = diff.counts()
    site = diff.new.site or diff.old.site or diff.new.archive
    yield (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Changes of {_text(site)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>Changes of {_link_or_text(site)}</h1>\n"
        f"<p class=\"sides\">{_side(diff.old.archive, diff.old.finished_at)} \u2192 "
        f"{_side(diff.new.archive, diff.new.finished_at)}</p>\n</header>\n"
        '<section id="summary">\n<h2>Summary</h2>\n<ul class="counts">\n'
    )
    for key in ("changed", "added", "removed", "unchanged", "failed"):
        yield f'<li class="{key}"><b>{counts[key]}</b> {key}</li>\n'
    yield (
        "</ul>\n"
        f"<p class=\"settings\">{diff.old.pages} pages before, {diff.new.pages} after; "
        f"a pixel differs over threshold {diff.options.threshold:g} (YIQ distance, "
        f"anti-aliasing ignored), a page changes over {_percent(diff.options.min_change)} "
        "of its pixels.</p>\n"
    )
    if diff.changed:
        yield '<ol class="toc">\n'
        for i, change in enumerate(diff.changed, 1):
            yield (
                f'<li><a href="#change-{i}">{_text(change.url)}</a> '
                f'<span class="share">{_percent(change.share)}</span></li>\n'
            )
        yield "</ol>\n"
    else:
        yield '<p class="nochange">No page changed.</p>\n'
    yield "</section>\n"
    if diff.changed:
        yield f'<section id="changed">\n<h2>Changed pages ({len(diff.changed)})</h2>\n'
        for i, change in enumerate(diff.changed, 1):
            yield _article(i, change, src)
        yield "</section>\n"
    for key, title, urls in (
        ("added", "Added pages", diff.added),
        ("removed", "Removed pages", diff.removed),
        ("failed", "Failed in the new archive (not compared)", diff.failed),
    ):
        if urls:
            yield f'<section id="{key}">\n<h2>{title} ({len(urls)})</h2>\n<ul class="urls">\n'
            for url in urls:
                yield f"<li>{_link_or_text(url)}</li>\n"
            yield "</ul>\n</section>\n"
    yield "</body>\n</html>\n"


def _side(archive: str, finished: str | None) -> str:
    when = f" ({_text(finished[:16].replace('T', ' '))} UTC)" if finished else ""
    return f"<b>{_text(archive)}</b>{when}"


def _article(i: int, change: PageChange, src: Callable[[str], str]) -> str:
    (ow, oh), (nw, nh) = change.old_size, change.new_size
    size = f"{ow}\u00d7{oh}" if (ow, oh) == (nw, nh) else f"{ow}\u00d7{oh} \u2192 {nw}\u00d7{nh}"
    if change.height_change:
        size += f" (height {change.height_change:+d} px)"
    regions = len(change.boxes)
    meta = (
        f"{_percent(change.share)} of the pixels ({change.changed_pixels:,} px) \u00b7 {size}"
        f" \u00b7 {regions} region{'s' if regions != 1 else ''}"
    )
    out = [
        f'<article class="page" id="change-{i}">',
        f"<h3>{_link_or_text(change.url)}</h3>",
        f'<p class="meta">{meta}</p>',
    ]
    if change.diff_entry and change.before_entry and change.after_entry:
        name = f"v{i}"
        out.append('<div class="views">')
        for key, label in _VIEWS:
            checked = " checked" if key == "diff" else ""
            out.append(
                f'<input type="radio" class="t-{key}" name="{name}" id="{name}-{key}"{checked}>'
                f'<label for="{name}-{key}">{label}</label>'
            )
        diff_src, before, after = (
            html.escape(src(e), quote=True)
            for e in (change.diff_entry, change.before_entry, change.after_entry)
        )
        alt = html.escape(change.url, quote=True)
        lazy = ' loading="lazy"' if i > _EAGER_DIFFS else ""
        out += [
            # The first diffs load at once; the rest as the reader scrolls to them.
            f'<div class="view diff"><img{lazy} src="{diff_src}" alt="changes of {alt}"></div>',
            f'<div class="view before"><img loading="lazy" src="{before}" alt="before"></div>',
            f'<div class="view after"><img loading="lazy" src="{after}" alt="after"></div>',
            '<div class="view slider"><p class="hint">Drag the corner of the old page '
            "(left) to uncover the new one.</p>"
            f'<div class="compare"><img loading="lazy" src="{after}" alt="after">'
            f'<div class="reveal"><img loading="lazy" src="{before}" alt="before"></div>'
            "</div></div>",
            "</div>",
        ]
    out.append("</article>\n")
    return "\n".join(out)
