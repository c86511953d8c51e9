"""A job's browser context and its pages: the state the engine keeps per job and per
page, and the ways a page is left (``about:blank`` between captures, closed, crashed).

A job gets one browser *context* (cookies never cross jobs or API keys); its pages are
reused for ``page_reuse`` captures, then replaced. A page that served a capture is sent
to ``about:blank`` before it idles, so a late CPU or memory hog cannot spin there or
hurt the next capture. A page whose renderer does not answer the close is crashed
from the renderer's IO thread (``Page.crash``) so it stops eating CPU.

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import attrs
from playwright.async_api import BrowserContext, CDPSession, Page
from playwright.async_api import Error as PlaywrightError

from .._options import CaptureOptions
from ._config import CLOSE_TIMEOUT
from ._network import NetworkWatch

__all__ = ["ContextState", "PageSlot", "blank", "close_hard", "close_page", "done"]


@attrs.define(eq=False)
class PageSlot:
    page: Page
    cdp: CDPSession
    context: BrowserContext
    crashed: asyncio.Event
    uses: int = 0
    # Popups being closed; a capture waits for them before it returns.
    closing: set[asyncio.Future[None]] = attrs.field(factory=set)
    # block_media / block_ads: whether the page's requests are routed, and how many
    # requests it dropped so far (each capture reports its own difference).
    routed: bool = False
    blocked: int = 0
    # The page's requests in flight (``_network.NetworkWatch``), from its first capture.
    watch: NetworkWatch | None = None


@attrs.define(eq=False)
class ContextState:
    """A job's browser context, rebuilt lazily when the browser was relaunched."""

    options: CaptureOptions
    cookie_url: str | None
    context: BrowserContext | None = None
    generation: int = -1
    idle: list[PageSlot] = attrs.field(factory=list)
    closed: bool = False
    lock: asyncio.Lock | None = None
    # None: not checked yet; "" valid; otherwise the error message.
    selector_error: str | None = None
    cookies_pending: bool = False


async def blank(page: Page) -> bool:
    """Leave the captured document for ``about:blank``; False if the page would not.

    An idle page must not go on running the last site's JS (timers, a CPU or memory
    hog that starts late, network), and the next capture must never see its pixels.
    """
    try:
        await asyncio.wait_for(page.goto("about:blank"), CLOSE_TIMEOUT)
    except (PlaywrightError, TimeoutError):
        return False
    return True


async def close_page(page: Page) -> None:
    with suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(page.close(run_before_unload=False), CLOSE_TIMEOUT)


async def close_hard(slot: PageSlot) -> None:
    """Close the page; a renderer that does not answer is crashed first."""
    try:
        await asyncio.wait_for(slot.page.close(run_before_unload=False), CLOSE_TIMEOUT)
        return
    except PlaywrightError:
        return  # already closed, or the browser is gone
    except TimeoutError:
        pass
    # Page.crash is handled on the renderer's IO thread: it works while JS spins.
    with suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(slot.cdp.send("Page.crash"), CLOSE_TIMEOUT / 2)
    await close_page(slot.page)


def done(future: asyncio.Future[Any]) -> None:
    # Retrieve the exception of a fire-and-forget future, so asyncio does not log it.
    if not future.cancelled():
        future.exception()

