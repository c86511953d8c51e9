"""bulk: sitemap-driven bulk website archiver (library, CLI and HTTP service).

The public names below are the library's face; the modules behind them are private.
They load lazily, so ``import bulk`` stays cheap (the CLI's bootstrap uses it); type
checkers see them through the ``TYPE_CHECKING`` imports, which name the same modules
as ``_EXPORTS`` (tests/test_exports.py checks both against ``__all__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._api import ApiConfig, create_app
    from ._archive import ArchiveInfo, PageRecord, build_zip, write_zip
    from ._capture import BrowserPool, CaptureSession, PoolConfig, Screenshot
    from ._config import Settings, find_chromium
    from ._discover import DiscoverLimits, Discovery, discover, discover_all
    from ._exceptions import (
        APIKeyRequired,
        BrowserCrashed,
        BrowserUnavailable,
        BulkError,
        CaptureError,
        CaptureTimeout,
        DiscoveryError,
        DownloadExpired,
        DownloadRefused,
        EmailTaken,
        EndpointNotFound,
        FetchError,
        HTTPStatusError,
        IdempotencyKeyReused,
        InsufficientCredits,
        Interrupted,
        InvalidAPIKey,
        InvalidSitemap,
        InvalidURL,
        JobNotFound,
        JobNotReady,
        KeyLimitReached,
        MethodNotAllowed,
        NavigationError,
        NoPagesCaptured,
        NoSitemapFound,
        NoURLsFound,
        PageTooLarge,
        PayloadTooLarge,
        RateLimitExceeded,
        ResponseTooLarge,
        ResumeMismatch,
        SelectorNotFound,
        URLBlocked,
        ValidationError,
    )
    from ._fetch import FetchLimits, open_fetcher
    from ._jobs import JobRunner, RunnerConfig
    from ._ledger import Ledger
    from ._offline import archive_site
    from ._options import CaptureOptions, Cookie
    from ._paths import Layout, entry_name, root_folder
    from ._policy import EgressPolicy, is_public_address
    from ._proxy import open_egress_proxy
    from ._service import ServiceConfig, serve
    from ._sitemap import SitemapParser, parse_robots

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
    "archive_site": "_offline",
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
    "EndpointNotFound": "_exceptions",
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
    "MethodNotAllowed": "_exceptions",
    "NavigationError": "_exceptions",
    "NoPagesCaptured": "_exceptions",
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

__all__ = [
    "APIKeyRequired",
    "ApiConfig",
    "ArchiveInfo",
    "BrowserCrashed",
    "BrowserPool",
    "BrowserUnavailable",
    "BulkError",
    "CaptureError",
    "CaptureOptions",
    "CaptureSession",
    "CaptureTimeout",
    "Cookie",
    "DiscoverLimits",
    "Discovery",
    "DiscoveryError",
    "DownloadExpired",
    "DownloadRefused",
    "EgressPolicy",
    "EmailTaken",
    "EndpointNotFound",
    "FetchError",
    "FetchLimits",
    "HTTPStatusError",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "Interrupted",
    "InvalidAPIKey",
    "InvalidSitemap",
    "InvalidURL",
    "JobNotFound",
    "JobNotReady",
    "JobRunner",
    "KeyLimitReached",
    "Layout",
    "Ledger",
    "MethodNotAllowed",
    "NavigationError",
    "NoPagesCaptured",
    "NoSitemapFound",
    "NoURLsFound",
    "PageRecord",
    "PageTooLarge",
    "PayloadTooLarge",
    "PoolConfig",
    "RateLimitExceeded",
    "ResponseTooLarge",
    "ResumeMismatch",
    "RunnerConfig",
    "Screenshot",
    "SelectorNotFound",
    "ServiceConfig",
    "Settings",
    "SitemapParser",
    "URLBlocked",
    "ValidationError",
    "__version__",
    "archive_site",
    "build_zip",
    "create_app",
    "discover",
    "discover_all",
    "entry_name",
    "find_chromium",
    "is_public_address",
    "open_egress_proxy",
    "open_fetcher",
    "parse_robots",
    "root_folder",
    "serve",
    "write_zip",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bulk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bulk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
