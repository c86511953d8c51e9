"""What went wrong in the browser, in bulk's terms.

Two internal signals travel from the engine (asyncio side) to the pool (trio side):
``BrowserGone`` (Chromium disconnected: relaunch and retry) and ``PageCrashed`` (one
renderer died). ``map_error`` turns a Playwright error of a page that is still alive
into a typed ``CaptureError`` with a stable code; ``looks_closed`` says whether an error
may mean the whole browser is gone (the engine then waits for the disconnect event).
"""

from __future__ import annotations

from playwright.async_api import Error as PlaywrightError

from .._exceptions import BrowserCrashed, CaptureError, DownloadRefused, NavigationError

__all__ = ["BrowserGone", "PageCrashed", "looks_closed", "map_error", "net_error"]


class BrowserGone(Exception):
    """Chromium disconnected under a capture; ``generation`` is the dead browser's."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"browser generation {generation} is gone")
        self.generation = generation


class PageCrashed(Exception):
    """The page's renderer died (its ``crash`` event) during a capture."""


def looks_closed(exc: BaseException) -> bool:
    # Not "crashed": Chromium itself reports a renderer crash, so it is alive.
    text = str(exc).lower()
    return "closed" in text or "disconnected" in text


def net_error(exc: BaseException) -> str | None:
    text = str(exc)
    i = text.find("net::ERR_")
    if i < 0:
        return None
    return text[i + 5 :].split()[0].rstrip(".;:,")


def map_error(exc: PlaywrightError) -> CaptureError:
    """A Playwright error of a page that is still alive, as a typed capture error."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "Download is starting" in text:
        return DownloadRefused("the URL answered with a file download, not a page")
    if "crashed" in text.lower():
        return BrowserCrashed("the page's renderer crashed (out of memory?)")
    net = net_error(exc)
    if net is not None:
        return NavigationError(f"could not load the page: {net}", details={"net_error": net})
    return NavigationError(f"could not load the page: {first[:300]}")
