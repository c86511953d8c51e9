"""The one exception tree of bulk.

Every error bulk raises is a ``BulkError`` with a stable ``code``. The code is what
users' scripts match on: it appears verbatim in API error bodies, in the
``error_code`` of ``_manifest.json`` rows and at the start of the CLI's stderr line.
Library code raises these; only ``_api.py`` maps them to HTTP statuses and only
``_cli.py`` maps them to exit codes.

    BulkError                         INTERNAL_ERROR
    ├── ValidationError               VALIDATION_ERROR   (names the field)
    ├── InvalidURL                    INVALID_URL
    ├── URLBlocked                    URL_BLOCKED        (the egress policy said no)
    ├── DiscoveryError                DISCOVERY_ERROR
    │   ├── NoSitemapFound            NO_SITEMAP_FOUND
    │   ├── NoURLsFound               NO_URLS_FOUND
    │   └── InvalidSitemap            INVALID_SITEMAP    (DTDs, entities, over a limit)
    ├── FetchError                    FETCH_ERROR        (robots/sitemap transport)
    │   └── ResponseTooLarge          RESPONSE_TOO_LARGE
    ├── CaptureError                  CAPTURE_ERROR      (one URL could not be captured)
    │   ├── NavigationError           NAVIGATION_ERROR
    │   ├── HTTPStatusError           HTTP_ERROR         (main document 4xx/5xx)
    │   ├── CaptureTimeout            CAPTURE_TIMEOUT
    │   ├── SelectorNotFound          SELECTOR_NOT_FOUND
    │   ├── BrowserCrashed            BROWSER_CRASHED
    │   ├── DownloadRefused           DOWNLOAD_REFUSED   (the URL is a file download)
    │   └── PageTooLarge              PAGE_TOO_LARGE     (over the pixel or memory cap)
    ├── BrowserUnavailable            CHROMIUM_NOT_FOUND
    ├── APIKeyRequired                API_KEY_REQUIRED
    ├── InvalidAPIKey                 INVALID_API_KEY
    ├── InsufficientCredits           INSUFFICIENT_CREDITS
    ├── KeyLimitReached               KEY_LIMIT_REACHED
    ├── EmailTaken                    EMAIL_TAKEN
    ├── JobNotFound                   JOB_NOT_FOUND
    ├── JobNotReady                   JOB_NOT_READY
    ├── DownloadExpired               DOWNLOAD_EXPIRED
    ├── IdempotencyKeyReused          IDEMPOTENCY_KEY_REUSED
    ├── RateLimitExceeded             RATE_LIMIT_EXCEEDED
    ├── PayloadTooLarge               PAYLOAD_TOO_LARGE
    ├── ResumeMismatch                RESUME_MISMATCH    (``--resume`` on another run)
    ├── Interrupted                   INTERRUPTED        (Ctrl-C / SIGTERM)
    ├── InvalidJobTransition          INVALID_JOB_TRANSITION
    ├── LockHeld                      LOCKED             (another process holds the lock)
    └── SecretsUnavailable            SECRETS_UNAVAILABLE (a job's cookies cannot be decrypted)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APIKeyRequired",
    "BrowserCrashed",
    "BrowserUnavailable",
    "BulkError",
    "CaptureError",
    "CaptureTimeout",
    "DiscoveryError",
    "DownloadExpired",
    "DownloadRefused",
    "EmailTaken",
    "FetchError",
    "HTTPStatusError",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "Interrupted",
    "InvalidAPIKey",
    "InvalidJobTransition",
    "InvalidSitemap",
    "InvalidURL",
    "JobNotFound",
    "JobNotReady",
    "KeyLimitReached",
    "LockHeld",
    "NavigationError",
    "NoSitemapFound",
    "NoURLsFound",
    "PageTooLarge",
    "PayloadTooLarge",
    "RateLimitExceeded",
    "ResponseTooLarge",
    "ResumeMismatch",
    "SecretsUnavailable",
    "SelectorNotFound",
    "URLBlocked",
    "ValidationError",
]


class BulkError(Exception):
    """Base of every error bulk raises on purpose.

    Args:
        message: One human sentence, safe to show to the user who caused it
            (never a stack trace, never a secret).
        details: Optional JSON-serialisable extra data (the API's ``details``).
    """

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str = "", *, details: Any = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationError(BulkError):
    """A request or option value is not acceptable; ``field`` names it."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        if details is None and field is not None:
            details = {"field": field}
        super().__init__(message, details=details)
        self.field = field


class InvalidURL(BulkError):
    """The URL cannot be parsed, or is not an http(s) URL bulk accepts."""

    code = "INVALID_URL"


class URLBlocked(BulkError):
    """The egress policy refuses this destination (private address, port, scheme...)."""

    code = "URL_BLOCKED"


class DiscoveryError(BulkError):
    """Sitemap discovery could not produce page URLs."""

    code = "DISCOVERY_ERROR"


class NoSitemapFound(DiscoveryError):
    """Neither robots.txt nor the common paths led to a sitemap."""

    code = "NO_SITEMAP_FOUND"


class NoURLsFound(DiscoveryError):
    """Sitemaps were found but listed no usable page URL."""

    code = "NO_URLS_FOUND"


class InvalidSitemap(DiscoveryError):
    """A sitemap document was refused (DTD/entities, over a size limit, unreadable)."""

    code = "INVALID_SITEMAP"


class FetchError(BulkError):
    """A robots.txt or sitemap request failed at the transport level."""

    code = "FETCH_ERROR"


class ResponseTooLarge(FetchError):
    """A response (raw or decompressed) went over its byte budget."""

    code = "RESPONSE_TOO_LARGE"


class CaptureError(BulkError):
    """One URL could not be captured. Subclasses say why.

    Args:
        http_status: The main document's HTTP status, when one was received.
        final_url: Where the page ended up after redirects, when known.
    """

    code = "CAPTURE_ERROR"

    def __init__(
        self,
        message: str = "",
        *,
        http_status: int | None = None,
        final_url: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, details=details)
        self.http_status = http_status
        self.final_url = final_url


class NavigationError(CaptureError):
    """The page could not be loaded (DNS, connection refused, TLS, aborted...)."""

    code = "NAVIGATION_ERROR"


class HTTPStatusError(CaptureError):
    """The main document answered with a 4xx or 5xx status."""

    code = "HTTP_ERROR"


class CaptureTimeout(CaptureError):
    """The URL's wall-clock deadline passed before an image was made."""

    code = "CAPTURE_TIMEOUT"


class SelectorNotFound(CaptureError):
    """``selector`` or ``wait_for_selector`` matched nothing in time."""

    code = "SELECTOR_NOT_FOUND"


class BrowserCrashed(CaptureError):
    """Chromium (or the page's renderer) died during the capture, twice."""

    code = "BROWSER_CRASHED"


class DownloadRefused(CaptureError):
    """The URL answered with a file download rather than a page."""

    code = "DOWNLOAD_REFUSED"


class PageTooLarge(CaptureError):
    """The page went over the pixel or memory cap."""

    code = "PAGE_TOO_LARGE"


class BrowserUnavailable(BulkError):
    """No usable Chromium was found or it would not start."""

    code = "CHROMIUM_NOT_FOUND"


class APIKeyRequired(BulkError):
    code = "API_KEY_REQUIRED"


class InvalidAPIKey(BulkError):
    code = "INVALID_API_KEY"


class InsufficientCredits(BulkError):
    code = "INSUFFICIENT_CREDITS"


class KeyLimitReached(BulkError):
    code = "KEY_LIMIT_REACHED"


class EmailTaken(BulkError):
    code = "EMAIL_TAKEN"


class JobNotFound(BulkError):
    code = "JOB_NOT_FOUND"


class JobNotReady(BulkError):
    code = "JOB_NOT_READY"


class DownloadExpired(BulkError):
    code = "DOWNLOAD_EXPIRED"


class IdempotencyKeyReused(BulkError):
    code = "IDEMPOTENCY_KEY_REUSED"


class RateLimitExceeded(BulkError):
    """Too many requests; ``retry_after`` is in whole seconds."""

    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class PayloadTooLarge(BulkError):
    code = "PAYLOAD_TOO_LARGE"


class ResumeMismatch(BulkError):
    """``--resume`` was asked for a work directory made by a different run."""

    code = "RESUME_MISMATCH"


class Interrupted(BulkError):
    """The run was interrupted (Ctrl-C or SIGTERM); its state allows ``--resume``."""

    code = "INTERRUPTED"


class InvalidJobTransition(BulkError):
    """A job cannot move from its status to the one asked (e.g. ``failed`` to
    ``processing``), or would end with URLs unfinished (HTTP 409 if it ever reaches
    the API)."""

    code = "INVALID_JOB_TRANSITION"


class LockHeld(BulkError):
    """Another process holds the lock of a database or an output (a second
    ``bulk serve`` on one ``--db``, a second ``bulk archive`` to one ``OUT``)."""

    code = "LOCKED"


class SecretsUnavailable(BulkError):
    """A job's cookie and header values cannot be decrypted (the key file changed or
    is missing), so it cannot run as it was asked to; it fails, fully refunded."""

    code = "SECRETS_UNAVAILABLE"


class ArchiveError(BulkError, ValueError):
    """The archive cannot be made as asked (``_archive``): an unsafe or clashing entry
    name, two rows with one ``seq``, a source that is a symlink or not a regular file,
    manifest data JSON cannot hold, an image no thumbnail can be made of.

    Entry names come from ``Layout``, which never gives an unsafe or clashing one, so
    outside thumbnails this means a bug or a tampered work directory: the code stays
    ``INTERNAL_ERROR``. It is also a ``ValueError``, what these functions raised before.
    """


__all__ += ["ArchiveError"]
