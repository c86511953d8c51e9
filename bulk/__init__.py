"""bulk: sitemap-driven bulk website archiver (library, CLI and HTTP service).

The public names below are the library's face; the modules behind them are private.
They load lazily, so ``import bulk`` stays cheap (the CLI's bootstrap uses it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # pipeline stages
    "DiscoverLimits": "_discover",
    "Discovery": "_discover",
    "discover": "_discover",
    "discover_all": "_discover",
    "SitemapParser": "_sitemap",
    "parse_robots": "_sitemap",
    "EgressPolicy": "_policy",
    "is_public_address": "_policy",
    "open_egress_proxy": "_proxy",
    "FetchLimits": "_fetch",
    "open_fetcher": "_fetch",
    "Ledger": "_ledger",
    "BrowserPool": "_capture",
    "CaptureSession": "_capture",
    "PoolConfig": "_capture",
    "Screenshot": "_capture",
    "Layout": "_paths",
    "entry_name": "_paths",
    "root_folder": "_paths",
    "ArchiveInfo": "_archive",
    "PageRecord": "_archive",
    "build_zip": "_archive",
    "write_zip": "_archive",
    "JobRunner": "_jobs",
    "RunnerConfig": "_jobs",
    "archive_site": "_jobs",
    "ApiConfig": "_api",
    "create_app": "_api",
    "ServiceConfig": "_service",
    "serve": "_service",
    # configuration
    "CaptureOptions": "_options",
    "Cookie": "_options",
    "Settings": "_config",
    "find_chromium": "_config",
    # errors
    "APIKeyRequired": "_exceptions",
    "BrowserCrashed": "_exceptions",
    "BrowserUnavailable": "_exceptions",
    "BulkError": "_exceptions",
    "CaptureError": "_exceptions",
    "CaptureTimeout": "_exceptions",
    "DiscoveryError": "_exceptions",
    "DownloadExpired": "_exceptions",
    "DownloadRefused": "_exceptions",
    "EmailTaken": "_exceptions",
    "FetchError": "_exceptions",
    "HTTPStatusError": "_exceptions",
    "IdempotencyKeyReused": "_exceptions",
    "InsufficientCredits": "_exceptions",
    "Interrupted": "_exceptions",
    "InvalidAPIKey": "_exceptions",
    "InvalidSitemap": "_exceptions",
    "InvalidURL": "_exceptions",
    "JobNotFound": "_exceptions",
    "JobNotReady": "_exceptions",
    "KeyLimitReached": "_exceptions",
    "NavigationError": "_exceptions",
    "NoSitemapFound": "_exceptions",
    "NoURLsFound": "_exceptions",
    "PageTooLarge": "_exceptions",
    "PayloadTooLarge": "_exceptions",
    "RateLimitExceeded": "_exceptions",
    "ResponseTooLarge": "_exceptions",
    "ResumeMismatch": "_exceptions",
    "SelectorNotFound": "_exceptions",
    "URLBlocked": "_exceptions",
    "ValidationError": "_exceptions",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bulk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bulk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
