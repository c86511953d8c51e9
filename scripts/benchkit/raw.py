"""The reference capture loops: plain async Playwright, no bulk in the way.

``capture_loop`` launches one Chromium (the executable and switches bulk uses), opens
one context with the viewport and ``concurrency`` pages, and has each page loop over
the URLs: ``goto(url, wait_until="load")``, capture, write the file. Two ways to
capture:

- ``cdp``: a CDP session per page sending ``Page.captureScreenshot`` with
  ``optimizeForSpeed: true`` (and ``quality`` for JPEG/WebP): the protocol call bulk
  itself makes, so nothing but bulk's own work separates the two. A full page is the
  document's content height (``Page.getLayoutMetrics``, cut at 16,384 px, Chromium's
  largest texture and bulk's cap at scale 1) captured with ``captureBeyondViewport``
  and a clip, as bulk does; unlike bulk it does not scroll the page first to start
  lazy images.
- ``screenshot``: Playwright's own ``page.screenshot()`` (``full_page=True`` for a
  full page): what most scripts do; it also waits for fonts and takes care of
  scrollbars and animations, and has no ``optimizeForSpeed``.

Files are named ``{seq:06d}.{ext}`` in the order of ``urls`` (1-based).
"""

from __future__ import annotations

import asyncio
import base64
import math
import pathlib
import time
from typing import Any

MAX_FULL_PAGE_HEIGHT = 16384


def extension(fmt: str) -> str:
    return "jpg" if fmt == "jpeg" else fmt


async def capture_loop(
    urls: list[str],
    out: pathlib.Path,
    *,
    method: str,
    fmt: str,
    quality: int,
    full_page: bool,
    concurrency: int,
    width: int,
    height: int,
    executable: str,
    chromium_args: list[str],
    timeout_ms: float = 30_000,
    small_png: bool = False,
) -> dict[str, Any]:
    """Capture ``urls`` into the directory ``out`` (which must exist); return counts,
    launch and loop seconds and the first errors."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    if method not in ("cdp", "screenshot"):
        raise ValueError(f"unknown capture method {method!r}")
    if method == "screenshot" and fmt == "webp":
        raise ValueError("page.screenshot() has no WebP")
    ext = extension(fmt)
    started = time.perf_counter()
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=chromium_args,
            # Playwright turns the popup blocker off; bulk turns it back on.
            ignore_default_args=["--disable-popup-blocking"],
        )
        context = await browser.new_context(viewport={"width": width, "height": height})
        launched = time.perf_counter()
        todo = iter(enumerate(urls, 1))
        counts = {"ok": 0, "failed": 0}
        errors: list[str] = []

        async def shoot_cdp(cdp: Any) -> bytes:
            params: dict[str, Any] = {"format": fmt, "optimizeForSpeed": not small_png}
            if fmt != "png":
                params["quality"] = quality
            if full_page:
                metrics = await cdp.send("Page.getLayoutMetrics")
                tall = math.ceil(metrics["cssContentSize"]["height"])
                params["captureBeyondViewport"] = True
                params["clip"] = {
                    "x": 0,
                    "y": 0,
                    "width": width,
                    "height": max(1, min(tall, MAX_FULL_PAGE_HEIGHT)),
                    "scale": 1,
                }
            result = await cdp.send("Page.captureScreenshot", params)
            return base64.b64decode(result["data"])

        async def worker() -> None:
            page = await context.new_page()
            cdp = await context.new_cdp_session(page) if method == "cdp" else None
            for seq, url in todo:
                try:
                    await page.goto(url, wait_until="load", timeout=timeout_ms)
                    if cdp is not None:
                        data = await shoot_cdp(cdp)
                    else:
                        shot: dict[str, Any] = {"type": fmt, "full_page": full_page}
                        if fmt != "png":
                            shot["quality"] = quality
                        data = await page.screenshot(**shot)
                except PlaywrightError as exc:
                    counts["failed"] += 1
                    errors.append(f"{url}: {str(exc).splitlines()[0]}")
                    continue
                (out / f"{seq:06d}.{ext}").write_bytes(data)
                counts["ok"] += 1
            await page.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        looped = time.perf_counter()
        await browser.close()
    return {
        "ok": counts["ok"],
        "failed": counts["failed"],
        "launch_seconds": launched - started,
        "loop_seconds": looped - launched,
        "errors": errors[:3],
    }
