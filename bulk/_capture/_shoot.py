"""Taking the picture: the page, one element, or a PDF, of a page that is ready.

``shoot`` takes what the options ask for from the page as it is now (the capture
steps got it ready): a viewport or full-page image, an element's image (both with
the DevTools protocol's ``Page.captureScreenshot``), or a PDF (``Page.printToPDF``,
through Playwright's ``page.pdf``). With ``freeze_animations`` the page's animations
are finished first (``js/freeze.js``), after the full-page scroll, whose reveals
would otherwise start new ones.

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import Callable
from typing import Any, Final

import attrs
from PIL import Image
from playwright.async_api import Locator
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .._exceptions import PageTooLarge, SelectorNotFound
from .._options import FULL_PAGE_MAX_HEIGHT, CaptureOptions
from . import _scripts as js
from ._pages import PageSlot

__all__ = [
    "SELECTOR_MARGIN_MS",
    "Shot",
    "image_size",
    "max_css_height",
    "pdf_info",
    "shoot",
    "until_visible",
]

# Device pixels: Chromium's largest texture. A full page is cut here, whatever scale.
_MAX_DEVICE_PIXELS_HIGH: Final = 16384
# Device pixels of one image (RGBA in memory: 4 bytes each, in Chromium and Pillow).
_MAX_DEVICE_PIXELS_AREA: Final = 64 * 1024 * 1024
# SELECTOR_NOT_FOUND (and a failed script step) is decided this long before the
# deadline, so it is not lost in a race with CAPTURE_TIMEOUT: on a busy machine the
# loop thread may take a few hundred ms to hand the verdict back.
SELECTOR_MARGIN_MS: Final = 1000.0
# How long the element of ``selector`` gets to show once the page is ready (slower
# content is what ``wait_for_selector`` is for).
_ELEMENT_WAIT_MS: Final = 5000.0
# How long a full page waits for the images its scroll started loading; less on a
# page already known to wait for a host that does not answer.
_IMAGES_WAIT_MS: Final = 3000
_IMAGES_WAIT_PARTIAL_MS: Final = 1000
# Paper sizes in PDF points (1/72 inch), portrait.
_PAPER: Final = {
    "A4": (595.28, 841.89),
    "Letter": (612.0, 792.0),
    "Legal": (612.0, 1008.0),
    "A3": (841.89, 1190.55),
    "Tabloid": (792.0, 1224.0),
}


@attrs.frozen(kw_only=True)
class Shot:
    """One picture: an image's bytes and size, or a PDF's with its first page's size
    in PDF points and its page count."""

    data: bytes
    format: str
    width: int
    height: int
    pdf_pages: int | None = None
    truncated_height: bool = False


def image_size(data: bytes) -> tuple[int, int]:
    # Reads the header only: no pixel decoding on the capture path.
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def pdf_info(data: bytes) -> tuple[int, float, float]:
    """The page count and the first page's width and height (points) of a PDF.

    Raises:
        ValueError: Not a PDF that can be read.
    """
    # Imported here: pypdf (and what it pulls in) is needed only for PDF output, and
    # importing it costs every image capture run's start-up.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = len(reader.pages)
        box = reader.pages[0].mediabox
    except (PyPdfError, IndexError, KeyError, ValueError) as exc:
        raise ValueError(f"not a readable PDF: {exc}") from None
    return pages, float(box.width), float(box.height)


async def shoot(
    slot: PageSlot,
    opts: CaptureOptions,
    remaining_ms: Callable[[float], float],
    *,
    partial: bool = False,
) -> Shot:
    """The picture ``opts`` ask for, of ``slot``'s page as it is now.

    Args:
        slot: The page, ready (loaded, settled, cleaned up).
        opts: Format, full page, element, PDF settings, freezing.
        remaining_ms: Milliseconds left before the capture's deadline, less a margin.
        partial: The page did not finish loading (shorter waits for images).

    Raises:
        SelectorNotFound: ``opts.selector`` shows no element.
        PageTooLarge: The element is over the image size cap.
    """
    if opts.format == "pdf":
        return await _pdf_shot(slot, opts)
    if opts.selector:
        return await _element_shot(slot, opts, remaining_ms)
    return await _page_shot(slot, opts, remaining_ms, partial)


def _fast(opts: CaptureOptions) -> bool:
    # optimizeForSpeed makes Chromium's PNG encoder spend less on compression;
    # png_compression "small" turns it off for PNGs (other formats keep it on).
    return not (opts.format == "png" and opts.png_compression == "small")


async def _freeze(slot: PageSlot, opts: CaptureOptions) -> None:
    if opts.freeze_animations:
        await slot.page.evaluate(js.FREEZE)


def _margins(text: str | None) -> dict[str, str]:
    # CSS shorthand: top, right, bottom, left from one to four values.
    parts = (text or "0").split()
    top, right, bottom, left = {
        1: lambda p: (p[0], p[0], p[0], p[0]),
        2: lambda p: (p[0], p[1], p[0], p[1]),
        3: lambda p: (p[0], p[1], p[2], p[1]),
        4: lambda p: (p[0], p[1], p[2], p[3]),
    }[len(parts)](parts)
    return {"top": top, "right": right, "bottom": bottom, "left": left}


async def _pdf_shot(slot: PageSlot, opts: CaptureOptions) -> Shot:
    await _freeze(slot, opts)
    data = await slot.page.pdf(
        format=opts.pdf_format,
        landscape=opts.pdf_landscape,
        print_background=opts.pdf_print_background,
        margin=_margins(opts.pdf_margin),  # type: ignore[arg-type]
    )
    try:
        pages, width, height = pdf_info(data)
    except ValueError:
        # Not what Chromium writes today; the paper size is still known.
        pages = 0
        width, height = _PAPER[opts.pdf_format]
        if opts.pdf_landscape:
            width, height = height, width
    return Shot(
        data=data,
        format="pdf",
        width=round(width),
        height=round(height),
        pdf_pages=pages,
    )


async def _page_shot(
    slot: PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float], partial: bool
) -> Shot:
    params: dict[str, Any] = {"format": opts.format, "optimizeForSpeed": _fast(opts)}
    if opts.format != "png":
        params["quality"] = opts.quality
    truncated = False
    if opts.full_page:
        max_css = max_css_height(opts.width, opts.scale)
        budget = min(8000.0, remaining_ms(0) / 2)
        images = _IMAGES_WAIT_PARTIAL_MS if partial else _IMAGES_WAIT_MS
        page_height = int(await slot.page.evaluate(js.SCROLL, [max_css, budget, images]))
        truncated = page_height > max_css
        height = max(1, min(page_height, max_css))
        params["captureBeyondViewport"] = True
        # Document coordinates, CSS pixels; scale 1 keeps the emulated device
        # scale factor, so the image is (width x height) * scale device pixels.
        params["clip"] = {"x": 0, "y": 0, "width": opts.width, "height": height, "scale": 1}
    await _freeze(slot, opts)
    result = await slot.cdp.send("Page.captureScreenshot", params)
    data = base64.b64decode(result["data"])
    width, height = image_size(data)
    return Shot(
        data=data, format=opts.format, width=width, height=height, truncated_height=truncated
    )


async def _element_shot(
    slot: PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
) -> Shot:
    assert opts.selector is not None
    locator = slot.page.locator("css=" + opts.selector).first
    await until_visible(
        locator,
        min(remaining_ms(SELECTOR_MARGIN_MS), _ELEMENT_WAIT_MS),
        f"selector {opts.selector!r} matched no visible element",
    )
    box = await locator.evaluate(js.ELEMENT_BOX, timeout=remaining_ms(0))
    if box["width"] < 1 or box["height"] < 1:
        raise SelectorNotFound(f"selector {opts.selector!r} matched an empty element")
    # Whole device pixels around the box (what Playwright's element screenshot does).
    x0, y0 = math.floor(box["x"]), math.floor(box["y"])
    width = math.ceil(box["x"] + box["width"]) - x0
    height = math.ceil(box["y"] + box["height"]) - y0
    if (
        height * opts.scale > _MAX_DEVICE_PIXELS_HIGH
        or width * opts.scale > _MAX_DEVICE_PIXELS_HIGH
        or width * height * opts.scale**2 > _MAX_DEVICE_PIXELS_AREA
    ):
        raise PageTooLarge(f"the element is {width} x {height} px, over the image cap")
    params: dict[str, Any] = {
        "format": opts.format,
        "optimizeForSpeed": _fast(opts),
        "captureBeyondViewport": not box["fits"],
        "clip": {"x": x0, "y": y0, "width": width, "height": height, "scale": 1},
    }
    if opts.format != "png":
        params["quality"] = opts.quality
    await _freeze(slot, opts)
    result = await slot.cdp.send("Page.captureScreenshot", params)
    data = base64.b64decode(result["data"])
    image_width, image_height = image_size(data)
    return Shot(data=data, format=opts.format, width=image_width, height=image_height)


async def until_visible(locator: Locator, budget_ms: float, message: str) -> None:
    """Wait until ``locator`` shows an element, or raise ``SelectorNotFound``.

    The limit is an asyncio timer, not Playwright's own timeout: that one is decided
    in the driver process and may arrive after the capture's deadline on a busy
    machine, which would turn a missing selector into ``CAPTURE_TIMEOUT``.
    """
    try:
        await asyncio.wait_for(
            locator.wait_for(state="visible", timeout=budget_ms + 5000), budget_ms / 1000
        )
    except (TimeoutError, PlaywrightTimeout):
        raise SelectorNotFound(message) from None


def max_css_height(width: int, scale: float) -> int:
    """The tallest full page, in CSS pixels, for a viewport ``width`` and ``scale``."""
    by_texture = _MAX_DEVICE_PIXELS_HIGH / scale
    by_area = _MAX_DEVICE_PIXELS_AREA / (width * scale * scale)
    return max(1, int(min(FULL_PAGE_MAX_HEIGHT, by_texture, by_area)))
