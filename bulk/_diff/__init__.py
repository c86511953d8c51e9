"""Change reports: two archives in, what changed out (a stage after archive).

    _snapshot   a bulk ZIP opened for reading: manifest rows by URL, images on demand
    _pixels     pixelmatch's perceptual per-pixel test, vectorised; boxes; diff image
    _compare    pages matched by URL: added, removed, failed, changed, unchanged
    _report     the offline HTML report (before / after / diff / slider, no script)

``bulk diff`` and ``bulk archive --compare-with`` both call
``compare_archives`` and ``write_report``.
"""

from __future__ import annotations

from ._compare import (
    DEFAULT_MIN_CHANGE,
    ArchiveDiff,
    DiffOptions,
    PageChange,
    SideInfo,
    compare_archives,
    files_dir_for,
)
from ._pixels import DEFAULT_THRESHOLD, Box, PixelDiff, compare_images, decode, diff_png
from ._report import report_html, write_report
from ._snapshot import Snapshot, open_snapshot

__all__ = [
    "DEFAULT_MIN_CHANGE",
    "DEFAULT_THRESHOLD",
    "ArchiveDiff",
    "Box",
    "DiffOptions",
    "PageChange",
    "PixelDiff",
    "SideInfo",
    "Snapshot",
    "compare_archives",
    "compare_images",
    "decode",
    "diff_png",
    "files_dir_for",
    "open_snapshot",
    "report_html",
    "write_report",
]
