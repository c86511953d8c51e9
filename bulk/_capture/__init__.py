"""The capture engine: a bounded, crash-proof pool of Chromium pages behind a trio API.

This package is the only part of bulk that imports ``asyncio`` or ``playwright``.
Playwright's async API runs on one asyncio loop on a dedicated thread; everything
else in bulk sees the trio-native ``BrowserPool`` / ``CaptureSession``:

    async with BrowserPool.open(config, policy) as pool:
        async with pool.session(options, site_url) as session:   # one context per job
            shot = await session.capture(url)                     # -> Screenshot

One concept per module (each docstring says why it is shaped as it is):

- ``_pool``: ``BrowserPool`` and ``CaptureSession``, the trio side: slots, deadlines,
  relaunch and retry.
- ``_bridge``: ``AsyncioThread``, the trio <-> asyncio bridge.
- ``_engine``: the Playwright engine on the loop thread: browser, contexts, pages.
- ``_steps``: one capture: navigate, wait (``wait_until``, ``load_timeout``), clean
  up, run the script, shoot; ``Screenshot`` and the script's ``NamedShot``s.
- ``_shoot``: the picture itself: viewport, full page, element, PDF.
- ``_actions``: running a capture script's steps (``bulk/_actions.py`` parses them).
- ``_network``: a page's requests in flight (quiet waits, pending hosts).
- ``_blocking``: ``block_media`` and ``block_ads`` (adblock + EasyList in ``data/``).
- ``_pages``: a job's context state and its pages (reuse, blanking, closing).
- ``_source``: ``BrowserSource``, where a browser comes from; ``LocalLaunch``.
- ``_remote``: ``RemoteNode``, a ``bulk node``'s browser over Playwright's protocol.
- ``_hygiene``: process groups, priorities and capabilities of the capture side.
- ``_errors``: Playwright's errors as bulk's typed capture errors.
- ``_scripts`` and ``js/``: the in-page scripts, as ``.js`` files.
- ``_config``: ``PoolConfig`` and the fixed cleanup time limits.
"""

from __future__ import annotations

from ._bridge import AsyncioThread
from ._config import PoolConfig, RemoteEndpoint, default_concurrency
from ._pool import BrowserPool, CaptureSession
from ._source import BrowserSource, LocalLaunch
from ._steps import NamedShot, Screenshot

__all__ = [
    "AsyncioThread",
    "BrowserPool",
    "BrowserSource",
    "CaptureSession",
    "LocalLaunch",
    "NamedShot",
    "PoolConfig",
    "RemoteEndpoint",
    "Screenshot",
    "default_concurrency",
]
