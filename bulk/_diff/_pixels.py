"""Perceptual per-pixel comparison of two screenshots: pixelmatch's rules, vectorised.

    two decoded images (RGB; transparency flattened onto white)
      -> common part (the smaller width and height); the rest counts as changed
      -> bands of ``BAND`` rows: Pillow's C code finds each band's box of differing
         pixels (``ImageChops.difference`` + ``getbbox``); identical bands cost nothing
      -> each box (+2 px of context) to numpy: pixelmatch's test per pixel
           YIQ colour distance > 35215 * threshold**2 ......... a candidate
           anti-aliasing in either image (3x3 brightness test,
           "has many siblings" in both images) ............... not counted
      -> changed pixel count, tiles of changes -> bounding boxes, a diff image

The rules are mapbox/pixelmatch's (v7: ``colorDelta``, ``antialiased``,
``hasManySiblings``), evaluated on arrays instead of pixel by pixel: on the same
images they count the same pixels (``tests/test_diff.py`` checks it against a
straightforward per-pixel transcription). Measured against the Python ports on
PyPI (``pixelmatch-fast``, numba; ``pybind11-pixelmatch``, C++), this is faster on
screenshots, where changes are local: the ports walk every pixel, this only the
boxes that differ (``scripts/bench-diff`` prints the figures).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import Final, final

import attrs
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops

from .._exceptions import InvalidArchive

__all__ = [
    "BAND",
    "DEFAULT_THRESHOLD",
    "Box",
    "PixelDiff",
    "compare_images",
    "decode",
    "diff_png",
]

#: pixelmatch's default: the matching threshold (0..1), smaller is more sensitive.
DEFAULT_THRESHOLD: Final = 0.1
#: The largest YIQ distance there is (black against white).
MAX_YIQ_DELTA: Final = 35215.0
#: Rows per band: a band with no difference is skipped by C code alone.
BAND: Final = 64
#: Edge of the tiles that group changed pixels into boxes.
TILE: Final = 32
#: Boxes reported per page at most (the largest ones).
MAX_BOXES: Final = 50
#: Decoders accepted: what bulk captures in.
FORMATS: Final = ("PNG", "JPEG", "WEBP")
# The 8 neighbours in pixelmatch's visiting order (x outer, y inner): ties between
# equally dark (or bright) neighbours go to the first one, as there.
_OFFSETS: Final = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_Y: Final = np.array([0.29889531, 0.58662247, 0.11448223], np.float32)
_I: Final = np.array([0.59597799, -0.27417610, -0.32180189], np.float32)
_Q: Final = np.array([0.21147017, -0.52261711, 0.31114694], np.float32)
_KY, _KI, _KQ = np.float32(0.5053), np.float32(0.299), np.float32(0.1957)

# The diff image is a palette PNG: the new page in dimmed grey (pixelmatch's
# "grayscale blended with white", at DIM), changed pixels red, anti-aliasing yellow,
# area only one of the two pages has pink.
DIM: Final = 0.2
_GREYS: Final = round(255 * DIM) + 1
RED: Final = _GREYS
YELLOW: Final = _GREYS + 1
PINK: Final = _GREYS + 2
_PALETTE: Final = [
    *(v for i in range(_GREYS) for v in (255 - i, 255 - i, 255 - i)),
    *(255, 0, 0),
    *(255, 200, 0),
    *(255, 190, 200),
]
_DIM_LUT: Final = [round((255 - v) * DIM) for v in range(256)]

U32 = npt.NDArray[np.uint32]
Mask = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


@final
@attrs.frozen
class Box:
    """A rectangle of the page, in pixels."""

    x: int
    y: int
    width: int
    height: int

    def to_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@final
@attrs.frozen
class _Region:
    """The changed (and anti-aliased) pixels of one box of one band."""

    x: int
    y: int
    changed: Mask
    aa: Mask


@final
@attrs.frozen(kw_only=True)
class PixelDiff:
    """How two screenshots differ.

    Args:
        old_size, new_size: ``(width, height)`` of each image.
        changed_pixels: Pixels that changed: those of the common part that differ
            beyond the threshold and are not anti-aliasing, plus every pixel only one
            of the two images has (a page that grew or shrank).
        aa_pixels: Pixels that differ only by anti-aliasing (not counted).
        boxes: Bounding boxes of the changed regions, largest first (at most
            ``MAX_BOXES``).
        regions: Where the changed pixels are (for ``diff_png``).
    """

    old_size: tuple[int, int]
    new_size: tuple[int, int]
    changed_pixels: int
    aa_pixels: int
    boxes: tuple[Box, ...]
    regions: tuple[_Region, ...] = attrs.field(repr=False, eq=False)

    @property
    def size(self) -> tuple[int, int]:
        """The size of both pages together (the diff image's)."""
        return max(self.old_size[0], self.new_size[0]), max(self.old_size[1], self.new_size[1])

    @property
    def share(self) -> float:
        """Changed pixels as a share (0..1) of ``size``."""
        width, height = self.size
        return self.changed_pixels / (width * height) if width and height else 0.0


def decode(data: bytes) -> Image.Image:
    """Decode a screenshot as RGB (transparency flattened onto white, as pixelmatch).

    Raises:
        InvalidArchive: Not a decodable PNG, JPEG or WebP, or over Pillow's
            decompression-bomb limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArchive(f"an image cannot be decoded: {exc}") from None
    except Image.DecompressionBombWarning:
        raise InvalidArchive("an image is over the decompression limit") from None
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def compare_images(
    old: Image.Image, new: Image.Image, *, threshold: float = DEFAULT_THRESHOLD
) -> PixelDiff:
    """Compare two RGB screenshots (``decode``) by pixelmatch's rules.

    Args:
        old, new: The images (RGB).
        threshold: 0..1; a pixel differs when its YIQ distance is over
            ``35215 * threshold**2`` (pixelmatch's ``threshold``).

    Returns:
        What changed. The common part (smaller width and height) is compared pixel
        by pixel; the area only one image has counts as changed.
    """
    if old.mode != "RGB" or new.mode != "RGB":
        raise ValueError("compare_images takes RGB images (see decode)")
    width, height = min(old.width, new.width), min(old.height, new.height)
    a = old if old.size == (width, height) else old.crop((0, 0, width, height))
    b = new if new.size == (width, height) else new.crop((0, 0, width, height))
    max_delta = MAX_YIQ_DELTA * threshold * threshold
    regions: list[_Region] = []
    changed = aa = 0
    difference = ImageChops.difference(a, b) if width and height else None
    if difference is not None and difference.getbbox() is not None:
        for region in _regions(a, b, difference, max_delta):
            regions.append(region)
            changed += int(region.changed.sum())
            aa += int(region.aa.sum())
    full_w, full_h = max(old.width, new.width), max(old.height, new.height)
    extra = full_w * full_h - width * height
    boxes = _boxes(regions)
    if full_h > height:
        boxes.append(Box(0, height, full_w, full_h - height))
    if full_w > width:
        boxes.append(Box(width, 0, full_w - width, height))
    boxes.sort(key=lambda box: (-box.width * box.height, box.y, box.x))
    return PixelDiff(
        old_size=old.size,
        new_size=new.size,
        changed_pixels=changed + extra,
        aa_pixels=aa,
        boxes=tuple(boxes[:MAX_BOXES]),
        regions=tuple(regions),
    )


def _regions(
    a: Image.Image, b: Image.Image, difference: Image.Image, max_delta: float
) -> Iterator[_Region]:
    """The changed pixels of each band's box of differing pixels."""
    width, height = a.size
    for top in range(0, height, BAND):
        bottom = min(height, top + BAND)
        found = difference.crop((0, top, width, bottom)).getbbox()
        if found is None:
            continue
        x0, y0, x1, y1 = found[0], top + found[1], found[2], top + found[3]
        # Two pixels of context: the anti-aliasing test reads the neighbours of a
        # pixel's neighbours.
        cx0, cy0 = max(0, x0 - 2), max(0, y0 - 2)
        cx1, cy1 = min(width, x1 + 2), min(height, y1 + 2)
        area = (cx0, cy0, cx1, cy1)
        ctx_a = _packed(a.crop(area))
        ctx_b = _packed(b.crop(area))
        changed, aa = _match(
            ctx_a,
            ctx_b,
            (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0),
            origin=(cx0, cy0),
            size=(width, height),
            max_delta=max_delta,
        )
        if changed.any() or aa.any():
            yield _Region(x0, y0, changed, aa)


def _packed(image: Image.Image) -> U32:
    """An RGB image as one uint32 per pixel (R | G << 8 | B << 16 | 0xFF << 24)."""
    raw = image.tobytes("raw", "RGBX")
    return np.frombuffer(raw, np.uint32).reshape(image.height, image.width)


def _match(
    a: U32,
    b: U32,
    box: tuple[int, int, int, int],
    *,
    origin: tuple[int, int],
    size: tuple[int, int],
    max_delta: float,
) -> tuple[Mask, Mask]:
    """pixelmatch over ``box`` of the context arrays ``a`` and ``b``.

    Args:
        a, b: The pixels of both images around the box (2 px of context, less at the
            image's edges).
        box: ``(x0, y0, x1, y1)`` in ``a``'s coordinates: the pixels judged.
        origin: Where ``a`` is in the image (for pixelmatch's edge rule).
        size: The compared image's size.
        max_delta: The squared YIQ distance over which a pixel differs.

    Returns:
        ``(changed, anti_aliased)`` masks of the box's shape.
    """
    x0, y0, x1, y1 = box
    w = a.shape[1]
    shape = (y1 - y0, x1 - x0)
    changed = np.zeros(shape, np.bool_)
    aa = np.zeros(shape, np.bool_)
    ys, xs = np.nonzero(a[y0:y1, x0:x1] != b[y0:y1, x0:x1])
    if not len(ys):
        return changed, aa
    ys = ys + y0
    xs = xs + x0
    flat = ys * w + xs
    delta = _yiq_delta(a.ravel()[flat], b.ravel()[flat])
    over = np.abs(delta) > max_delta
    ys, xs = ys[over], xs[over]
    # pixelmatch's edge rule: a pixel on the image's border starts with one "equal
    # neighbour" (the context arrays' own borders are never the image's otherwise).
    gx, gy = xs + origin[0], ys + origin[1]
    edge = ((gx == 0) | (gx == size[0] - 1) | (gy == 0) | (gy == size[1] - 1)).astype(np.int8)
    anti = _antialiased(a, b, xs, ys, edge)
    rest = np.flatnonzero(~anti)
    anti[rest] = _antialiased(b, a, xs[rest], ys[rest], edge[rest])
    changed[ys[~anti] - y0, xs[~anti] - x0] = True
    aa[ys[anti] - y0, xs[anti] - x0] = True
    return changed, aa


def _channels(values: U32) -> npt.NDArray[np.float32]:
    return values.view(np.uint8).reshape(-1, 4)[:, :3].astype(np.float32)


def _yiq_delta(a: U32, b: U32) -> npt.NDArray[np.float32]:
    """pixelmatch's ``colorDelta``: the squared YIQ distance (sign dropped)."""
    d = _channels(a) - _channels(b)
    y, i, q = d @ _Y, d @ _I, d @ _Q
    out = _KY * y * y + _KI * i * i + _KQ * q * q
    return out.astype(np.float32, copy=False)


def _brightness(values: U32) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = _channels(values) @ _Y
    return out


def _neighbour(img: U32, xs: Ints, ys: Ints, dx: int, dy: int) -> tuple[U32, Mask]:
    h, w = img.shape
    nx, ny = xs + dx, ys + dy
    inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
    values = img[np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)]
    return values, inside


def _antialiased(img: U32, other: U32, xs: Ints, ys: Ints, edge: npt.NDArray[np.int8]) -> Mask:
    """pixelmatch's ``antialiased(img, x, y, ..., other)`` for every (x, y) at once."""
    n = len(xs)
    result = np.zeros(n, np.bool_)
    if not n:
        return result
    centre = img[ys, xs]
    bright = _brightness(centre)
    zeroes = edge.copy()
    deltas = np.empty((len(_OFFSETS), n), np.float32)
    for k, (dx, dy) in enumerate(_OFFSETS):
        values, inside = _neighbour(img, xs, ys, dx, dy)
        delta = bright - _brightness(values)
        delta[values == centre] = 0.0
        delta[~inside] = 0.0
        zeroes += inside & (delta == 0.0)
        deltas[k] = delta
    darkest = deltas.argmin(axis=0)
    brightest = deltas.argmax(axis=0)
    ar = np.arange(n)
    # More than 2 equal neighbours, or not both darker and brighter ones: not AA.
    maybe = np.flatnonzero(
        (zeroes <= 2) & (deltas[darkest, ar] < 0.0) & (deltas[brightest, ar] > 0.0)
    )
    if not len(maybe):
        return result
    offsets = np.array(_OFFSETS)
    lo = offsets[darkest[maybe]]
    hi = offsets[brightest[maybe]]
    lx, ly = xs[maybe] + lo[:, 0], ys[maybe] + lo[:, 1]
    hx, hy = xs[maybe] + hi[:, 0], ys[maybe] + hi[:, 1]
    result[maybe] = (_many_siblings(img, lx, ly) & _many_siblings(other, lx, ly)) | (
        _many_siblings(img, hx, hy) & _many_siblings(other, hx, hy)
    )
    return result


def _many_siblings(img: U32, xs: Ints, ys: Ints) -> Mask:
    """pixelmatch's ``hasManySiblings``: 3 or more neighbours of exactly this colour.

    The coordinates are inside the context array; its borders are the image's only
    where the context was clipped, which is where pixelmatch's edge rule applies.
    """
    h, w = img.shape
    centre = img[ys, xs]
    count = ((xs == 0) | (xs == w - 1) | (ys == 0) | (ys == h - 1)).astype(np.int8)
    for dx, dy in _OFFSETS:
        values, inside = _neighbour(img, xs, ys, dx, dy)
        count += inside & (values == centre)
    out: Mask = count > 2
    return out


def _boxes(regions: list[_Region]) -> list[Box]:
    """Changed pixels grouped into boxes: tiles with changes, 8-connected (a gap of
    one empty tile still joins), each box cut to the exact extent of its pixels."""
    tiles: dict[tuple[int, int], list[int]] = {}
    for region in regions:
        ys, xs = np.nonzero(region.changed)
        if not len(ys):
            continue
        gy = ys + region.y
        gx = xs + region.x
        keys = (gy // TILE) * 1_000_000 + gx // TILE
        order = np.argsort(keys, kind="stable")
        keys, gx, gy = keys[order], gx[order], gy[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        mins_x = np.minimum.reduceat(gx, starts)
        maxs_x = np.maximum.reduceat(gx, starts)
        mins_y = np.minimum.reduceat(gy, starts)
        maxs_y = np.maximum.reduceat(gy, starts)
        for i, start in enumerate(starts):
            key = int(keys[start])
            tile = (key // 1_000_000, key % 1_000_000)
            extent = [int(mins_x[i]), int(mins_y[i]), int(maxs_x[i]), int(maxs_y[i])]
            if tile in tiles:
                old = tiles[tile]
                extent = [
                    min(old[0], extent[0]),
                    min(old[1], extent[1]),
                    max(old[2], extent[2]),
                    max(old[3], extent[3]),
                ]
            tiles[tile] = extent
    boxes: list[Box] = []
    seen: set[tuple[int, int]] = set()
    for start_tile in sorted(tiles):
        if start_tile in seen:
            continue
        seen.add(start_tile)
        stack = [start_tile]
        x0 = y0 = 1 << 62
        x1 = y1 = -1
        while stack:
            ty, tx = stack.pop()
            ex0, ey0, ex1, ey1 = tiles[(ty, tx)]
            x0, y0, x1, y1 = min(x0, ex0), min(y0, ey0), max(x1, ex1), max(y1, ey1)
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    near = (ty + dy, tx + dx)
                    if near in tiles and near not in seen:
                        seen.add(near)
                        stack.append(near)
        boxes.append(Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    return boxes


def diff_png(old: Image.Image, new: Image.Image, diff: PixelDiff) -> bytes:
    """The diff image: changed pixels red (anti-aliasing yellow) over a dimmed grey
    copy of the new page; area only one page has is pink over that page's grey.

    A palette PNG (few colours, mostly one): small and quick to write.
    """
    width, height = diff.size
    if new.size == (width, height):
        base = new
    else:
        base = Image.new("RGB", (width, height), "white")
        base.paste(old, (0, 0))
        base.paste(new, (0, 0))
    index = np.array(base.convert("L").point(_DIM_LUT), dtype=np.uint8)
    common_w = min(old.width, new.width)
    common_h = min(old.height, new.height)
    for extra in (index[common_h:, :], index[:common_h, common_w:]):
        extra[extra < 4] = PINK
    for region in diff.regions:
        h, w = region.changed.shape
        view = index[region.y : region.y + h, region.x : region.x + w]
        view[region.aa] = YELLOW
        view[region.changed] = RED
    image = Image.fromarray(index)
    image.putpalette(_PALETTE)  # L -> P, the indices kept
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()
