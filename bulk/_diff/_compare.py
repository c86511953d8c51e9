"""Two bulk ZIPs in, what changed out: pages matched by URL through the manifests.

    old ZIP, new ZIP -> manifests (``_snapshot``)
      URL ok only in new ........................... added
      URL ok in old, not listed in new ............. removed
      URL ok in old, failed in new ................. failed (nothing to compare)
      ok in both, same sha256 ...................... unchanged (never decoded)
      ok in both, other bytes -> decode both, compare (``_pixels``)
          share of changed pixels > min_change ..... changed (+ before/after/diff files)
          else ..................................... unchanged

Pairs are decoded and compared in a few threads (Pillow and numpy release the GIL
for the heavy parts); the ZIPs are read in the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, final

import attrs

from .._exceptions import ValidationError
from ._pixels import DEFAULT_THRESHOLD, Box, compare_images, decode, diff_png
from ._snapshot import Page, Snapshot, open_snapshot

__all__ = [
    "DEFAULT_MIN_CHANGE",
    "ArchiveDiff",
    "DiffOptions",
    "PageChange",
    "SideInfo",
    "compare_archives",
    "files_dir_for",
]

#: A page counts as changed when more than this share of its pixels changed: about
#: 10 pixels of a 1280x800 screenshot, 200 of a 1280x16384 one (a word of text is
#: several hundred), so a small edit counts and a stray pixel does not.
DEFAULT_MIN_CHANGE: Final = 0.00001
_IMAGE_EXT: Final = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
_OUR_FILES: Final = re.compile(r"[0-9]{6,}-(?:before|after|diff)\.(?:png|jpg|webp|img)")


def _unit(name: str) -> Any:
    def check(instance: Any, attribute: Any, value: float) -> None:
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValidationError(f"{name} must be between 0 and 1", field=name)

    return check


@final
@attrs.frozen(kw_only=True)
class DiffOptions:
    """How pages are judged.

    Args:
        threshold: Per pixel, 0..1: a pixel differs when its YIQ colour distance is
            over ``35215 * threshold**2`` (pixelmatch's; smaller is more sensitive).
        min_change: Per page, 0..1: a page is changed when the share of its changed
            pixels is over this.

    Raises:
        ValidationError: A value outside 0..1.
    """

    threshold: float = attrs.field(default=DEFAULT_THRESHOLD, validator=_unit("threshold"))
    min_change: float = attrs.field(default=DEFAULT_MIN_CHANGE, validator=_unit("min_change"))


@final
@attrs.frozen(kw_only=True)
class SideInfo:
    """One of the two archives, as the report names it."""

    archive: str
    site: str | None
    finished_at: str | None
    pages: int

    @classmethod
    def of(cls, snapshot: Snapshot) -> SideInfo:
        site = snapshot.job.get("site")
        finished = snapshot.job.get("finished_at")
        return cls(
            archive=snapshot.path.name,
            site=site if isinstance(site, str) else None,
            finished_at=finished if isinstance(finished, str) else None,
            pages=sum(1 for p in snapshot.pages.values() if p.ok),
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@final
@attrs.frozen(kw_only=True)
class PageChange:
    """A page whose screenshot changed.

    Args:
        url: The page (as both manifests list it).
        seq: Its position in the new archive.
        changed_pixels: Pixels changed (area only one screenshot has included).
        share: ``changed_pixels`` over the area of both screenshots together.
        boxes: Where, largest first.
        old_size, new_size: ``(width, height)`` of each screenshot.
        diff_entry, before_entry, after_entry: The report's image files, relative to
            the report's folder (None when no files were written).
    """

    url: str
    seq: int
    changed_pixels: int
    share: float
    boxes: tuple[Box, ...]
    old_size: tuple[int, int]
    new_size: tuple[int, int]
    diff_entry: str | None = None
    before_entry: str | None = None
    after_entry: str | None = None

    @property
    def height_change(self) -> int:
        return self.new_size[1] - self.old_size[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "changed_pixels": self.changed_pixels,
            "share": round(self.share, 6),
            "boxes": [box.to_json() for box in self.boxes],
            "diff_entry": self.diff_entry,
            "before_entry": self.before_entry,
            "after_entry": self.after_entry,
            "old": {"width": self.old_size[0], "height": self.old_size[1]},
            "new": {"width": self.new_size[0], "height": self.new_size[1]},
            "height_change": self.height_change,
        }


@final
@attrs.frozen(kw_only=True)
class ArchiveDiff:
    """What changed between two archives (``compare_archives``).

    ``changed`` is ordered largest share first; the URL lists keep the new (for
    ``added``, ``failed``) or old (``removed``) archive's order.
    """

    old: SideInfo
    new: SideInfo
    added: tuple[str, ...]
    removed: tuple[str, ...]
    failed: tuple[str, ...]
    changed: tuple[PageChange, ...]
    unchanged: int
    options: DiffOptions
    #: Pairs that had to be decoded (the others were skipped by sha256).
    decoded: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
            "failed": len(self.failed),
        }

    def summary_line(self) -> str:
        """One line: ``3 changed, 1 added, 2 removed, 94 unchanged (1 failed)``."""
        c = self.counts()
        line = (
            f"{c['changed']} changed, {c['added']} added, {c['removed']} removed, "
            f"{c['unchanged']} unchanged"
        )
        return line + (f" ({c['failed']} failed in the new archive)" if c["failed"] else "")

    def to_json(self) -> dict[str, Any]:
        """The ``bulk diff --json`` object."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [change.to_json() for change in self.changed],
            "unchanged": self.unchanged,
            "failed": list(self.failed),
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "threshold": self.options.threshold,
            "min_change": self.options.min_change,
        }


def files_dir_for(report: Path) -> Path:
    """Where the images of the report ``report`` go: ``<stem>_files/`` beside it."""
    return report.with_name(f"{report.stem}_files")


def compare_archives(
    old: Path,
    new: Path,
    *,
    options: DiffOptions | None = None,
    files: Path | None = None,
    workers: int | None = None,
) -> ArchiveDiff:
    """Compare two bulk ZIPs page by page (matched by URL).

    Args:
        old, new: The archives.
        options: Per-pixel threshold and per-page minimum change.
        files: Write each changed page's before, after and diff images here (the
            report's ``files_dir_for``); None writes nothing (``*_entry`` are None).
        workers: Threads decoding and comparing pairs (default: the CPU count, at
            most 4).

    Returns:
        What changed.

    Raises:
        InvalidArchive: Either file is not a readable bulk ZIP, or one of its images
            cannot be read or decoded.
        OSError: ``files`` cannot be written.
    """
    options = options or DiffOptions()
    started = time.monotonic()
    with open_snapshot(old) as before, open_snapshot(new) as after:
        added: list[str] = []
        failed: list[str] = []
        pairs: list[tuple[Page, Page]] = []
        unchanged = 0
        for url, page in after.pages.items():
            earlier = before.pages.get(url)
            if earlier is None or not earlier.ok:
                if page.ok:
                    added.append(url)
                continue
            if not page.ok:
                failed.append(url)
            elif page.sha256 is not None and page.sha256 == earlier.sha256:
                unchanged += 1  # same bytes: never decoded
            else:
                pairs.append((earlier, page))
        removed = [u for u, p in before.pages.items() if p.ok and u not in after.pages]
        if files is not None:
            _prepare(files)
        changed: list[PageChange] = []
        for result in _compare_pairs(before, after, pairs, options, files, workers):
            if result is None:
                unchanged += 1
            else:
                changed.append(result)
        changed.sort(key=lambda c: (-c.share, c.url))
        return ArchiveDiff(
            old=SideInfo.of(before),
            new=SideInfo.of(after),
            added=tuple(added),
            removed=tuple(removed),
            failed=tuple(failed),
            changed=tuple(changed),
            unchanged=unchanged,
            options=options,
            decoded=len(pairs),
            seconds=time.monotonic() - started,
        )


def _prepare(files: Path) -> None:
    """Create the images folder; clear the images an earlier report left in it."""
    files.mkdir(parents=True, exist_ok=True)
    for stale in files.iterdir():
        if _OUR_FILES.fullmatch(stale.name) and stale.is_file():
            stale.unlink()


def _compare_pairs(
    before: Snapshot,
    after: Snapshot,
    pairs: list[tuple[Page, Page]],
    options: DiffOptions,
    files: Path | None,
    workers: int | None,
) -> Iterator[PageChange | None]:
    count = workers or min(4, os.cpu_count() or 1)
    if count <= 1 or len(pairs) <= 1:
        for old_page, new_page in pairs:
            yield _compare_pair(
                old_page, new_page, before.image(old_page), after.image(new_page), options, files
            )
        return
    # A bounded window of pairs in flight: the ZIPs are read here, the threads decode.
    with concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="bulk-diff") as pool:
        window: list[concurrent.futures.Future[PageChange | None]] = []
        for old_page, new_page in pairs:
            window.append(
                pool.submit(
                    _compare_pair,
                    old_page,
                    new_page,
                    before.image(old_page),
                    after.image(new_page),
                    options,
                    files,
                )
            )
            if len(window) >= count * 2:
                yield window.pop(0).result()
        for future in window:
            yield future.result()


def _compare_pair(
    old_page: Page,
    new_page: Page,
    old_bytes: bytes,
    new_bytes: bytes,
    options: DiffOptions,
    files: Path | None,
) -> PageChange | None:
    old_image = decode(old_bytes)
    new_image = decode(new_bytes)
    pixels = compare_images(old_image, new_image, threshold=options.threshold)
    if pixels.changed_pixels == 0 or pixels.share <= options.min_change:
        return None
    change = PageChange(
        url=new_page.url,
        seq=new_page.seq,
        changed_pixels=pixels.changed_pixels,
        share=pixels.share,
        boxes=pixels.boxes,
        old_size=old_image.size,
        new_size=new_image.size,
    )
    if files is None:
        return change
    stem = f"{new_page.seq:06d}"
    before = f"{stem}-before.{_ext(old_page.entry)}"
    after = f"{stem}-after.{_ext(new_page.entry)}"
    diff = f"{stem}-diff.png"
    _write(files / before, old_bytes)
    _write(files / after, new_bytes)
    _write(files / diff, diff_png(old_image, new_image, pixels))
    return attrs.evolve(
        change,
        diff_entry=f"{files.name}/{diff}",
        before_entry=f"{files.name}/{before}",
        after_entry=f"{files.name}/{after}",
    )


def _ext(entry: str | None) -> str:
    suffix = (entry or "").rpartition(".")[2].lower()
    return _IMAGE_EXT.get(suffix, "img")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
