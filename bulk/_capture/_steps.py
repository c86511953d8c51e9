"""The capture steps: navigate, settle, clean the page up, take the image.

One capture, on a page the engine hands over (``capture_on``): check the job's CSS
selectors once, navigate, tell the site's HTTP errors from the egress proxy's own
answers, wait for "load" (most of the time left), web fonts and two frames, then the
options' waits (``wait_for_selector``, ``delay``), hide ``block_selectors``, dismiss
cookie banners, and take the page (scrolled through first for a full page) or one
element with the DevTools protocol's ``Page.captureScreenshot``.

Chromium reaches the network only through bulk's egress proxy (``_proxy.py``), which
applies the same address policy as the httpx fetches. The proxy's refusals
(``X-Bulk-Error`` / a refused ``CONNECT``) are told apart from network errors by
asking the proxy whether it refused one of the hosts this navigation went to.

Runs on the asyncio loop thread only; the in-page scripts are ``js/*.js``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
from PIL import Image
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, Request
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .._exceptions import (
    CaptureError,
    CaptureTimeout,
    HTTPStatusError,
    InvalidURL,
    NavigationError,
    PageTooLarge,
    SelectorNotFound,
    URLBlocked,
)
from .._options import FULL_PAGE_MAX_HEIGHT, CaptureOptions
from .._proxy import EgressProxy
from .._urls import parse_http_url
from . import _scripts as js
from ._pages import ContextState, PageSlot

__all__ = ["Screenshot", "capture_on", "hostname", "max_css_height"]

# Device pixels: Chromium's largest texture. A full page is cut here, whatever scale.
_MAX_DEVICE_PIXELS_HIGH: Final = 16384
# Device pixels of one image (RGBA in memory: 4 bytes each, in Chromium and Pillow).
_MAX_DEVICE_PIXELS_AREA: Final = 64 * 1024 * 1024
# Part of the timeout kept for the work after "load" when load is slow: a page whose
# beacon never finishes is captured after DOMContentLoaded rather than not at all.
_AFTER_LOAD_RESERVE: Final = 0.25
# SELECTOR_NOT_FOUND is decided this long before the deadline, so it is not lost in
# a race with CAPTURE_TIMEOUT.
_SELECTOR_MARGIN_MS: Final = 300.0
# How long the element of ``selector`` gets to show once the page is ready (slower
# content is what ``wait_for_selector`` is for).
_ELEMENT_WAIT_MS: Final = 5000.0
_CONSENT_POLL_MS: Final = 1000


@attrs.frozen(kw_only=True)
class Screenshot:
    """One captured image and what is known about the page it came from."""

    data: bytes
    format: str
    width: int
    height: int
    final_url: str
    http_status: int | None
    elapsed: float


def image_size(data: bytes) -> tuple[int, int]:
    # Reads the header only: no pixel decoding on the capture path.
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def hostname(url: str) -> str:
    try:
        return parse_http_url(url).hostname
    except InvalidURL:
        return urlsplit(url).hostname or ""


async def capture_on(
    slot: PageSlot,
    state: ContextState,
    url: str,
    deadline: float,
    since: float,
    proxy: EgressProxy | None,
) -> Screenshot:
    """Load ``url`` in ``slot``'s page, wait as ``state``'s options say, take the image.

    ``deadline`` is the asyncio loop time the capture must end by; ``since`` the trio
    time the attempt started at, and ``proxy`` the egress proxy, whose refusals since
    then tell a blocked URL from a network error.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    opts = state.options

    def remaining_ms(margin: float = 0.0) -> float:
        # Never 0: Playwright reads a timeout of 0 as "no timeout".
        return max(1.0, (deadline - loop.time()) * 1000 - margin)

    page = slot.page
    await check_selectors(page, state)

    hosts = {hostname(url)}

    def on_request(request: Request) -> None:
        # Every main-frame navigation request, redirects included: a refusal of
        # any of them by the proxy explains a failed navigation.
        with suppress(PlaywrightError):
            if request.is_navigation_request() and request.frame.parent_frame is None:
                hosts.add(hostname(request.url))

    page.on("request", on_request)
    try:
        response = await page.goto(url, wait_until="domcontentloaded", timeout=remaining_ms())
    except PlaywrightTimeout:
        raise CaptureTimeout(f"page did not load within {opts.timeout} ms") from None
    except PlaywrightError:
        if refused(proxy, hosts, since):
            raise URLBlocked("the egress policy blocked this page or a redirect") from None
        raise
    finally:
        page.remove_listener("request", on_request)

    status = response.status if response is not None else None
    final_url = page.url
    if response is not None and status is not None and status >= 400:
        check_proxy_answer(proxy, response.headers, status, hosts, since)
        raise HTTPStatusError(
            f"the page answered HTTP {status}", http_status=status, final_url=final_url
        )
    try:
        # A page may navigate itself (a JS or meta redirect) while it is being
        # prepared: the new document gets the same treatment, twice at most.
        for again in (True, True, False):
            try:
                data = await prepare_and_shoot(slot, opts, remaining_ms)
                break
            except PlaywrightError as exc:
                if not again or "context was destroyed" not in str(exc):
                    raise
                with suppress(PlaywrightTimeout):
                    await page.wait_for_load_state(
                        "domcontentloaded", timeout=remaining_ms(_SELECTOR_MARGIN_MS)
                    )
        final_url = page.url
        if refused(proxy, {hostname(final_url)}, since):
            # What is showing is the proxy's refusal (or Chromium's error page).
            raise URLBlocked("the egress policy blocked where the page navigated to")
    except CaptureError as exc:
        exc.http_status = exc.http_status or status
        exc.final_url = exc.final_url or final_url
        raise
    width, height = image_size(data)
    return Screenshot(
        data=data,
        format=opts.format,
        width=width,
        height=height,
        final_url=final_url,
        http_status=status,
        elapsed=loop.time() - started,
    )


async def prepare_and_shoot(
    slot: PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
) -> bytes:
    """Wait as the options say, clean the page up, take the image."""
    page = slot.page
    # "load" gets most of the time left; a beacon that never finishes must not
    # cost the whole capture.
    with suppress(PlaywrightTimeout):
        await page.wait_for_load_state(
            "load", timeout=remaining_ms(opts.timeout * _AFTER_LOAD_RESERVE)
        )
    await page.evaluate(js.SETTLE)
    if opts.wait_for_selector:
        await until_visible(
            page.locator("css=" + opts.wait_for_selector).first,
            remaining_ms(_SELECTOR_MARGIN_MS),
            f"wait_for_selector {opts.wait_for_selector!r} did not appear",
        )
    if opts.delay:
        await asyncio.sleep(min(opts.delay, remaining_ms(0)) / 1000)
    if opts.block_selectors:
        await page.evaluate(js.HIDE_SELECTORS, list(opts.block_selectors))
    if opts.dismiss_cookie_consent:
        await page.evaluate(js.DISMISS_CONSENT, min(_CONSENT_POLL_MS, remaining_ms(0) / 4))
    if opts.selector:
        return await element_shot(slot, opts, remaining_ms)
    return await page_shot(slot, opts, remaining_ms)


async def check_selectors(page: Page, state: ContextState) -> None:
    """Refuse an invalid CSS selector once per job, before any navigation."""
    opts = state.options
    if state.selector_error is None:
        pairs = [["block_selectors", s] for s in opts.block_selectors]
        for field in ("selector", "wait_for_selector"):
            value = getattr(opts, field)
            if value:
                pairs.append([field, value])
        state.selector_error = await page.evaluate(js.CHECK_SELECTORS, pairs) if pairs else ""
    if state.selector_error:
        field, _, selector = state.selector_error.partition(": ")
        raise CaptureError(
            f"{field} has an invalid CSS selector: {selector!r}",
            details={"field": field, "selector": selector},
        )


def refused(proxy: EgressProxy | None, hosts: Iterable[str], since: float) -> bool:
    """Whether the egress proxy refused one of ``hosts`` since trio time ``since``."""
    return proxy is not None and any(proxy.recently_blocked(h, since) for h in hosts if h)


def check_proxy_answer(
    proxy: EgressProxy | None,
    headers: dict[str, str],
    status: int,
    hosts: set[str],
    since: float,
) -> None:
    """Tell the egress proxy's own answers (refusal, unreachable) from the site's."""
    if proxy is None:
        return
    code = headers.get("x-bulk-error")
    if code == URLBlocked.code and refused(proxy, hosts, since):
        raise URLBlocked("the egress policy blocked this page or a redirect")
    if code == NavigationError.code and status == 502:
        raise NavigationError(
            "could not connect to the server", details={"net_error": "PROXY_CONNECT_FAILED"}
        )


async def page_shot(
    slot: PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
) -> bytes:
    params: dict[str, Any] = {"format": opts.format, "optimizeForSpeed": True}
    if opts.format != "png":
        params["quality"] = opts.quality
    if opts.full_page:
        max_css = max_css_height(opts.width, opts.scale)
        budget = min(8000.0, remaining_ms(0) / 2)
        height = await slot.page.evaluate(js.SCROLL, [max_css, budget])
        height = max(1, min(int(height), max_css))
        params["captureBeyondViewport"] = True
        # Document coordinates, CSS pixels; scale 1 keeps the emulated device
        # scale factor, so the image is (width x height) * scale device pixels.
        params["clip"] = {"x": 0, "y": 0, "width": opts.width, "height": height, "scale": 1}
    result = await slot.cdp.send("Page.captureScreenshot", params)
    return base64.b64decode(result["data"])


async def element_shot(
    slot: PageSlot, opts: CaptureOptions, remaining_ms: Callable[[float], float]
) -> bytes:
    assert opts.selector is not None
    locator = slot.page.locator("css=" + opts.selector).first
    await until_visible(
        locator,
        min(remaining_ms(_SELECTOR_MARGIN_MS), _ELEMENT_WAIT_MS),
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
        "optimizeForSpeed": True,
        "captureBeyondViewport": not box["fits"],
        "clip": {"x": x0, "y": y0, "width": width, "height": height, "scale": 1},
    }
    if opts.format != "png":
        params["quality"] = opts.quality
    result = await slot.cdp.send("Page.captureScreenshot", params)
    return base64.b64decode(result["data"])


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
