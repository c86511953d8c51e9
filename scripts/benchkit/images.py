"""Pixel identity: are two sets of images the same picture, whatever their bytes?

Images are decoded with Pillow and compared pixel by pixel (same size, same RGBA
values): two encoders, or one encoder's options, may write the same picture in
different bytes. A tolerance (in levels of one channel) sorts the images that differ
only by raster noise from those that differ in content. ``compare_dirs`` pairs
files by relative path; ``compare_pairs`` takes explicit pairs (bulk's entry for a
URL against another tool's file for it).
"""

from __future__ import annotations

import pathlib
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Comparison:
    """How many images matched.

    ``identical``: the same pixels. ``near``: the same size, no channel of any pixel
    more than ``tolerance`` levels apart (Chromium's raster of anti-aliased edges
    varies by a level or two from run to run). ``different``: the rest.
    ``max_level`` is the largest channel difference seen; ``examples`` names a few
    images that were not identical.
    """

    tolerance: int = 0
    identical: int = 0
    near: int = 0
    different: int = 0
    missing: int = 0  # in the reference, not in the new set
    extra: int = 0  # in the new set, not in the reference
    max_level: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.identical + self.near + self.different

    @property
    def ok(self) -> bool:
        """Something was compared, and nothing differs beyond the tolerance or is missing."""
        return self.compared > 0 and not self.different and not self.missing

    def summary(self) -> str:
        text = f"{self.identical} of {self.compared} pixel-identical"
        if self.near:
            text += f", {self.near} within {self.tolerance} levels"
        if self.different:
            text += f", {self.different} differ more"
        if self.identical < self.compared:
            text += f" (largest channel difference {self.max_level})"
        if self.missing:
            text += f", {self.missing} missing"
        if self.extra:
            text += f", {self.extra} new"
        if self.examples:
            text += "; e.g. " + "; ".join(self.examples[:3])
        return text


@dataclass(frozen=True)
class _Diff:
    level: int  # largest channel difference (256 for a size mismatch)
    what: str


def _difference(a: pathlib.Path, b: pathlib.Path) -> _Diff | None:
    """None when ``a`` and ``b`` hold the same pixels, else how they differ."""
    from PIL import Image, ImageChops

    with Image.open(a) as ia, Image.open(b) as ib:
        if ia.size != ib.size:
            return _Diff(256, f"size {ia.size} vs {ib.size}")
        pa, pb = ia.convert("RGBA"), ib.convert("RGBA")
        if pa.tobytes() == pb.tobytes():
            return None
        # Each pixel's largest channel difference (RGBA's getbbox would see alpha only).
        bands = ImageChops.difference(pa, pb).split()
        changed_mask = ImageChops.lighter(
            ImageChops.lighter(bands[0], bands[1]), ImageChops.lighter(bands[2], bands[3])
        )
        level = int(cast(tuple[int, int], changed_mask.getextrema())[1])
        changed = sum(changed_mask.point(lambda v: 255 if v else 0).histogram()[255:])
        return _Diff(level, f"{changed} px up to {level} levels in {changed_mask.getbbox()}")


def compare_pairs(
    pairs: Iterable[tuple[pathlib.Path, pathlib.Path, str]], tolerance: int = 0
) -> Comparison:
    """Compare (new, reference, label) pairs; a missing file counts as missing/extra."""
    result = Comparison(tolerance=tolerance)
    for new, ref, label in pairs:
        if not ref.exists():
            result.extra += 1
            continue
        if not new.exists():
            result.missing += 1
            continue
        diff = _difference(new, ref)
        if diff is None:
            result.identical += 1
            continue
        result.max_level = max(result.max_level, min(255, diff.level))
        if diff.level <= tolerance:
            result.near += 1
        else:
            result.different += 1
        if len(result.examples) < 3:
            result.examples.append(f"{label}: {diff.what}")
    return result


def compare_dirs(new: pathlib.Path, ref: pathlib.Path, tolerance: int = 0) -> Comparison:
    """Every image under ``new`` against the file of the same relative path in ``ref``."""

    def images(root: pathlib.Path) -> set[str]:
        if not root.is_dir():
            return set()
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
        }

    mine, theirs = images(new), images(ref)
    result = compare_pairs(((new / n, ref / n, n) for n in sorted(mine & theirs)), tolerance)
    result.extra += len(mine - theirs)
    result.missing += len(theirs - mine)
    return result


def sizes(files: Iterable[pathlib.Path]) -> list[tuple[int, int]]:
    """Each image's (width, height), from its header only."""
    from PIL import Image

    out = []
    for file in files:
        with Image.open(file) as img:
            out.append(img.size)
    return out


def extract_images(zip_path: pathlib.Path, dest: pathlib.Path) -> dict[str, str]:
    """Write a bulk ZIP's page images (no thumbnails) under ``dest``, paths relative to
    the ZIP's root folder; return URL -> that relative path, from the manifest."""
    import json

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    by_url: dict[str, str] = {}
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        manifest_name = next(n for n in names if n.endswith("/_manifest.json"))
        root = manifest_name.rsplit("/", 1)[0] + "/"
        manifest = json.loads(zf.read(manifest_name))
        rows = manifest.get("pages") or manifest.get("urls") or []
        for row in rows:
            if isinstance(row, dict) and row.get("status") == "ok" and row.get("entry"):
                entry = str(row["entry"])
                rel = entry[len(root) :] if entry.startswith(root) else entry
                by_url[str(row["url"])] = rel
        for name in names:
            rel = name[len(root) :] if name.startswith(root) else name
            if rel.startswith("_thumbs/") or not rel.lower().endswith(IMAGE_SUFFIXES):
                continue
            target = dest / rel
            # Entry names are safe by bulk's contract; checked anyway before writing.
            if ".." in pathlib.PurePosixPath(rel).parts or rel.startswith("/"):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    return by_url
