"""Requests a capture does not make: ``block_media`` and ``block_ads``.

Both work by routing the page's requests (Playwright's ``page.route``) and aborting
the ones to drop, so a blocked request never leaves Chromium. Routing switches
Chromium's HTTP cache off for the page, so routes are installed only on the pages
of a job that asked for blocking (``wants_routes``); every other job keeps its cache.

- ``block_media``: images, video and audio, and web fonts (Playwright's resource
  types ``image``, ``media``, ``font``).
- ``block_ads``: Brave's adblock engine (the ``adblock`` package: adblock-rust's Python
  bindings) with EasyList, shipped in ``data/`` with its licence
  (``data/EASYLIST-LICENSE.txt``). The engine is built once per process, off the
  loop (about a quarter of a second), the first time a job asks for it.

The page document itself is never blocked. Each page counts what it blocked
(``PageSlot.blocked``); a capture reports its own share (``Screenshot.blocked_requests``).

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Callable
from contextlib import suppress
from importlib import resources
from typing import Final

import adblock
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Request, Route

from .._options import CaptureOptions

__all__ = ["ad_engine", "install_routes", "wants_routes"]

_MEDIA: Final = frozenset({"image", "media", "font"})
# Playwright's resource types in adblock-rust's (webRequest) vocabulary.
_AD_TYPES: Final = {
    "xhr": "xmlhttprequest",
    "fetch": "xmlhttprequest",
    "eventsource": "other",
    "texttrack": "media",
    "manifest": "other",
}

_engine: adblock.Engine | None = None
_engine_lock: Final = threading.Lock()


def wants_routes(options: CaptureOptions) -> bool:
    """Whether a job's pages need request routing (and so go without HTTP cache)."""
    return options.block_media or options.block_ads


def _load_engine() -> adblock.Engine:
    # In a worker thread; one build per process, whichever pool (and loop) asks first.
    global _engine
    with _engine_lock:
        if _engine is None:
            data = resources.files("bulk._capture").joinpath("data", "easylist.txt.gz")
            filters = adblock.FilterSet()
            filters.add_filter_list(gzip.decompress(data.read_bytes()).decode("utf-8"))
            _engine = adblock.Engine(filters, optimize=True)
        return _engine


async def ad_engine() -> adblock.Engine:
    """The process's ad-blocking engine, built on first use in a worker thread."""
    if _engine is not None:
        return _engine
    return await asyncio.get_running_loop().run_in_executor(None, _load_engine)


def _is_ad(engine: adblock.Engine, request: Request, kind: str) -> bool:
    try:
        frame = request.frame
        source = frame.url
        if kind == "document":
            if frame.parent_frame is None:
                return False  # the page itself
            kind = "sub_frame"
    except PlaywrightError:
        source = ""
    if not source.startswith(("http://", "https://")):
        source = request.url
    result = engine.check_network_urls(request.url, source, _AD_TYPES.get(kind, kind))
    return result.matched


async def install_routes(
    page: Page, options: CaptureOptions, on_block: Callable[[], None]
) -> None:
    """Route ``page``'s requests: drop what ``options`` block, let the rest through.

    Args:
        page: A page of a job that ``wants_routes``.
        options: The job's options (``block_media``, ``block_ads``).
        on_block: Called once for each request dropped.
    """
    engine = await ad_engine() if options.block_ads else None
    media = options.block_media

    async def handle(route: Route, request: Request) -> None:
        kind = request.resource_type
        if (media and kind in _MEDIA) or (engine is not None and _is_ad(engine, request, kind)):
            on_block()
            with suppress(PlaywrightError):  # the page went away meanwhile
                await route.abort("blockedbyclient")
            return
        with suppress(PlaywrightError):
            await route.continue_()

    await page.route("**/*", handle)
