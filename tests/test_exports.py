"""The public face of the library: pinned, sorted, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import bulk

EXPECTED = [
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
    "NavigationError",
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


def test_all_is_pinned_and_sorted() -> None:
    assert bulk.__all__ == sorted(EXPECTED)


def test_every_name_resolves() -> None:
    for name in bulk.__all__:
        assert getattr(bulk, name) is not None, name


def test_every_error_has_a_unique_code() -> None:
    errors = [getattr(bulk, n) for n in bulk.__all__ if isinstance(getattr(bulk, n), type)]
    codes = [e.code for e in errors if issubclass(e, bulk.BulkError)]
    assert len(codes) == len(set(codes))
    assert all(c.isupper() and " " not in c for c in codes)


def test_import_is_cheap() -> None:
    # `import bulk` must not pull Playwright, lxml or Starlette (the bootstrap imports it).
    code = (
        "import sys, bulk; "
        "print(sorted(m for m in ('playwright', 'lxml', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
