"""The one exception tree of bulk.

Every error bulk raises is a ``BulkError`` with a stable ``code``. The code is what
users' scripts match on: it appears verbatim in API error bodies, in the
``error_code`` of ``_manifest.json`` rows and at the start of the CLI's stderr line.
Library code raises these; only the ``_cli`` package maps them to exit codes.

Each class carries what the outside world knows about its error: its ``code``, its
``api_status`` (the HTTP status the API answers with; ``CaptureError.http_status`` is
something else, the page's own status) and a one-line ``description``.
``error_table()`` collects them; the API's status mapping, the OpenAPI document's
error-code enum and the README's error-code table are all derived from it, so a new
error is one new class in this module, with those three attributes, and nothing else
(``tests/test_errors.py`` checks every class defines all three itself).

    BulkError                         INTERNAL_ERROR
    ├── ValidationError               VALIDATION_ERROR   (names the field)
    │   └── InvalidSchedule           INVALID_SCHEDULE   (a schedule's every or notify)
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
    │   ├── PageTooLarge              PAGE_TOO_LARGE     (over the pixel or memory cap)
    │   └── ActionFailed              ACTION_FAILED      (a step of the actions script)
    ├── BrowserUnavailable            CHROMIUM_NOT_FOUND
    │   └── BrowserRefused            BROWSER_REFUSED    (a remote browser bulk cannot police)
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
    ├── NoPagesCaptured               NO_PAGES_CAPTURED  (a job where every page failed)
    ├── EndpointNotFound              NOT_FOUND          (API: no such path)
    ├── MethodNotAllowed              METHOD_NOT_ALLOWED (API: path exists, method does not)
    ├── InvalidJobTransition          INVALID_JOB_TRANSITION
    ├── LockHeld                      LOCKED             (another process holds the lock)
    ├── SecretsUnavailable            SECRETS_UNAVAILABLE (a job's cookies cannot be decrypted)
    ├── ArchiveError                  ARCHIVE_ERROR      (the ZIP cannot be made as asked)
    ├── InvalidArchive                INVALID_ARCHIVE    (bulk diff: not a readable bulk ZIP)
    ├── OutputExists                  OUTPUT_EXISTS      (``bulk archive`` would replace work)
    ├── ScheduleNotFound              SCHEDULE_NOT_FOUND (API: no such schedule or run)
    └── ConnectorNotFound             CONNECTOR_NOT_FOUND (API: no such connector)
    (CaptureError also has ConnectorOffline CONNECTOR_OFFLINE and ConnectorTimeout
    CONNECTOR_TIMEOUT: a capture routed to a connector that is gone or too slow.)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "APIKeyRequired",
    "ActionFailed",
    "ArchiveError",
    "BrowserCrashed",
    "BrowserRefused",
    "BrowserUnavailable",
    "BulkError",
    "CaptureError",
    "CaptureTimeout",
    "ConnectorNotFound",
    "ConnectorOffline",
    "ConnectorTimeout",
    "DiscoveryError",
    "DownloadExpired",
    "DownloadRefused",
    "EmailTaken",
    "EndpointNotFound",
    "FetchError",
    "HTTPStatusError",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "Interrupted",
    "InvalidAPIKey",
    "InvalidArchive",
    "InvalidJobTransition",
    "InvalidSchedule",
    "InvalidSitemap",
    "InvalidURL",
    "JobNotFound",
    "JobNotReady",
    "KeyLimitReached",
    "LockHeld",
    "MethodNotAllowed",
    "NavigationError",
    "NoPagesCaptured",
    "NoSitemapFound",
    "NoURLsFound",
    "OutputExists",
    "PageTooLarge",
    "PayloadTooLarge",
    "RateLimitExceeded",
    "ResponseTooLarge",
    "ResumeMismatch",
    "ScheduleNotFound",
    "SecretsUnavailable",
    "SelectorNotFound",
    "URLBlocked",
    "ValidationError",
    "error_table",
]


class BulkError(Exception):
    """Base of every error bulk raises on purpose.

    Args:
        message: One human sentence, safe to show to the user who caused it
            (never a stack trace, never a secret).
        details: Optional JSON-serialisable extra data (the API's ``details``).
    """

    #: The stable code (API ``error.code``, manifest ``error_code``, CLI stderr).
    code: ClassVar[str] = "INTERNAL_ERROR"
    #: The HTTP status the API answers with when this error ends a request.
    api_status: ClassVar[int] = 500
    #: One line for the README and the OpenAPI document.
    description: ClassVar[str] = "Unexpected server error"

    def __init__(self, message: str = "", *, details: Any = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def __str__(self) -> str:
        return self.message


def error_table() -> Mapping[str, type[BulkError]]:
    """Every error code -> its class: the one table of codes, statuses and descriptions.

    Read at call time (not frozen at import), so a class appended to this module is in
    it without any other step. Order: the tree's, depth first, as drawn above.

    Returns:
        A read-only mapping ``code -> class``; ``cls.api_status`` and
        ``cls.description`` are the rest of the row.
    """
    table: dict[str, type[BulkError]] = {}

    def walk(cls: type[BulkError]) -> None:
        # Only this module's classes: an error defined elsewhere is a defect that
        # tests/test_errors.py reports, not a silent extra row.
        if cls.__module__ == __name__:
            table.setdefault(cls.code, cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(BulkError)
    return MappingProxyType(table)


class ValidationError(BulkError):
    """A request or option value is not acceptable; ``field`` names it."""

    code = "VALIDATION_ERROR"
    api_status = 400
    description = "A field is missing, of the wrong type or out of range (details.field names it)"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        if details is None and field is not None:
            details = {"field": field}
        super().__init__(message, details=details)
        self.field = field


class InvalidURL(BulkError):
    """The URL cannot be parsed, or is not an http(s) URL bulk accepts."""

    code = "INVALID_URL"
    api_status = 400
    description = "The URL is not a valid http(s) URL"


class URLBlocked(BulkError):
    """The egress policy refuses this destination (private address, port, scheme...)."""

    code = "URL_BLOCKED"
    api_status = 400
    description = "The egress policy refuses the destination (localhost, internal IPs, ports)"


class DiscoveryError(BulkError):
    """Sitemap discovery could not produce page URLs."""

    code = "DISCOVERY_ERROR"
    api_status = 400
    description = "Sitemap discovery produced no page URLs"


class NoSitemapFound(DiscoveryError):
    """Neither robots.txt nor the common paths led to a sitemap."""

    code = "NO_SITEMAP_FOUND"
    api_status = 400
    description = "Neither robots.txt nor the common paths led to a sitemap"


class NoURLsFound(DiscoveryError):
    """Sitemaps were found but listed no usable page URL."""

    code = "NO_URLS_FOUND"
    api_status = 400
    description = "The sitemaps list no usable page URL"


class InvalidSitemap(DiscoveryError):
    """A sitemap document was refused (DTD/entities, over a size limit, unreadable)."""

    code = "INVALID_SITEMAP"
    api_status = 400
    description = "A sitemap was refused (DTD/entities, over a size limit, unreadable)"


class FetchError(BulkError):
    """A robots.txt or sitemap request failed at the transport level."""

    code = "FETCH_ERROR"
    api_status = 400
    description = "robots.txt or a sitemap could not be fetched"


class ResponseTooLarge(FetchError):
    """A response (raw or decompressed) went over its byte budget."""

    code = "RESPONSE_TOO_LARGE"
    api_status = 400
    description = "robots.txt or a sitemap went over its byte budget"


class CaptureError(BulkError):
    """One URL could not be captured. Subclasses say why.

    Args:
        http_status: The main document's HTTP status, when one was received.
        final_url: Where the page ended up after redirects, when known.
    """

    code = "CAPTURE_ERROR"
    api_status = 500
    description = "The page could not be captured (details.reason has the cause)"

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
    api_status = 500
    description = "The page could not be loaded (DNS, connection, TLS)"


class HTTPStatusError(CaptureError):
    """The main document answered with a 4xx or 5xx status."""

    code = "HTTP_ERROR"
    api_status = 500
    description = "The page answered 4xx/5xx"


class CaptureTimeout(CaptureError):
    """The URL's wall-clock deadline passed before an image was made."""

    code = "CAPTURE_TIMEOUT"
    api_status = 500
    description = "The capture went over its timeout"


class SelectorNotFound(CaptureError):
    """``selector`` or ``wait_for_selector`` matched nothing in time."""

    code = "SELECTOR_NOT_FOUND"
    api_status = 500
    description = "selector or wait_for_selector matched nothing"


class BrowserCrashed(CaptureError):
    """Chromium (or the page's renderer) died during the capture, twice."""

    code = "BROWSER_CRASHED"
    api_status = 500
    description = "Chromium crashed during the capture, twice"


class DownloadRefused(CaptureError):
    """The URL answered with a file download rather than a page."""

    code = "DOWNLOAD_REFUSED"
    api_status = 500
    description = "The URL is a file download, not a page"


class PageTooLarge(CaptureError):
    """The page went over the pixel or memory cap."""

    code = "PAGE_TOO_LARGE"
    api_status = 500
    description = "The page went over the pixel or memory cap"


class BrowserUnavailable(BulkError):
    """No usable Chromium was found or it would not start."""

    code = "CHROMIUM_NOT_FOUND"
    api_status = 503
    description = "No usable Chromium was found, or it would not start"


class APIKeyRequired(BulkError):
    code = "API_KEY_REQUIRED"
    api_status = 401
    description = "No API key provided"


class InvalidAPIKey(BulkError):
    code = "INVALID_API_KEY"
    api_status = 401
    description = "The API key is invalid or inactive"


class InsufficientCredits(BulkError):
    code = "INSUFFICIENT_CREDITS"
    api_status = 402
    description = "Not enough credits for the request"


class KeyLimitReached(BulkError):
    code = "KEY_LIMIT_REACHED"
    api_status = 409
    description = "An account can have at most 5 active API keys"


class EmailTaken(BulkError):
    code = "EMAIL_TAKEN"
    api_status = 409
    description = "The email is already registered"


class JobNotFound(BulkError):
    code = "JOB_NOT_FOUND"
    api_status = 404
    description = "No such job for this API key"


class JobNotReady(BulkError):
    code = "JOB_NOT_READY"
    api_status = 409
    description = "The job has not completed; its ZIP is not ready"


class DownloadExpired(BulkError):
    code = "DOWNLOAD_EXPIRED"
    api_status = 410
    description = "The download window of the job has passed"


class IdempotencyKeyReused(BulkError):
    code = "IDEMPOTENCY_KEY_REUSED"
    api_status = 422
    description = "The Idempotency-Key was used with a different request body"


class RateLimitExceeded(BulkError):
    """Too many requests; ``retry_after`` is in whole seconds."""

    code = "RATE_LIMIT_EXCEEDED"
    api_status = 429
    description = "Too many requests, or too many at once (see Retry-After)"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class PayloadTooLarge(BulkError):
    code = "PAYLOAD_TOO_LARGE"
    api_status = 413
    description = "The request body is over 64 KiB"


class ResumeMismatch(BulkError):
    """``--resume`` was asked for a work directory made by a different run."""

    code = "RESUME_MISMATCH"
    api_status = 409
    description = "--resume found the work of a different run"


class Interrupted(BulkError):
    """The run was interrupted (Ctrl-C or SIGTERM); its state allows ``--resume``."""

    code = "INTERRUPTED"
    api_status = 503
    description = "The run was interrupted (Ctrl-C, SIGTERM); it can be resumed"


class NoPagesCaptured(BulkError):
    """A job ended with every page failed: no archive is written, every credit refunded."""

    code = "NO_PAGES_CAPTURED"
    api_status = 500
    description = "Every page of the job failed; no ZIP was made and every credit was refunded"


class EndpointNotFound(BulkError):
    """The API has no endpoint at this path."""

    code = "NOT_FOUND"
    api_status = 404
    description = "No such endpoint"


class MethodNotAllowed(BulkError):
    """The path exists but not with this HTTP method (the response has ``Allow``)."""

    code = "METHOD_NOT_ALLOWED"
    api_status = 405
    description = "The endpoint does not accept this HTTP method"


class InvalidJobTransition(BulkError):
    """A job cannot move from its status to the one asked (e.g. ``failed`` to
    ``processing``), or would end with URLs unfinished (HTTP 409 if it ever reaches
    the API)."""

    code = "INVALID_JOB_TRANSITION"
    api_status = 409
    description = "A job cannot move to the status asked, or would end with URLs unfinished"


class LockHeld(BulkError):
    """Another process holds the lock of a database or an output (a second
    ``bulk serve`` on one ``--db``, a second ``bulk archive`` to one ``OUT``)."""

    code = "LOCKED"
    api_status = 409
    description = "Another process holds the lock of this database or output"


class SecretsUnavailable(BulkError):
    """A job's cookie and header values cannot be decrypted (the key file changed or
    is missing), so it cannot run as it was asked to; it fails, fully refunded."""

    code = "SECRETS_UNAVAILABLE"
    api_status = 500
    description = "A job's cookie and header values cannot be decrypted; it failed, refunded"


class ArchiveError(BulkError, ValueError):
    """The archive cannot be made as asked (``_archive``): an unsafe or clashing entry
    name, two rows with one ``seq``, a source that is a symlink or not a regular file,
    manifest data JSON cannot hold, an image no thumbnail can be made of.

    Entry names come from ``Layout``, which never gives an unsafe or clashing one, so
    outside thumbnails this means a bug or a tampered work directory (code
    ``ARCHIVE_ERROR``). It is also a ``ValueError``, what these functions raised before.
    """

    code = "ARCHIVE_ERROR"
    api_status = 500
    description = "The ZIP could not be made (an internal error; the job's credits are refunded)"


class InvalidArchive(BulkError):
    """``bulk diff`` (or ``--compare-with``) was given a file that is not a readable
    bulk ZIP: not a ZIP, no ``_manifest.json`` of bulk's schema, a listed image that
    is missing, over a size limit or cannot be decoded."""

    code = "INVALID_ARCHIVE"
    api_status = 400
    description = "The file is not a readable bulk archive (ZIP with a bulk _manifest.json)"


class OutputExists(BulkError):
    """``bulk archive`` was asked to write where earlier work is: an existing ``OUT``
    (``--force`` replaces it) or an unfinished run in ``OUT.work`` (``--resume``
    continues it, ``--force`` discards it). Nothing was touched."""

    code = "OUTPUT_EXISTS"
    api_status = 409
    description = "The output or an unfinished run of it exists (--force replaces it)"


class ActionFailed(CaptureError):
    """A step of the capture script (the ``actions`` option) failed; ``details`` has
    ``step`` (its index), ``action`` (its kind) and ``reason``."""

    code = "ACTION_FAILED"
    api_status = 500
    description = "A step of the actions script failed (details: step, action, reason)"


class ScheduleNotFound(BulkError):
    """No schedule with this id belongs to the caller (or it was deleted), or it has
    no run (or no change report) with the number asked for."""

    code = "SCHEDULE_NOT_FOUND"
    api_status = 404
    description = "No such schedule (or run, or change report) for this API key's account"


class InvalidSchedule(ValidationError):
    """A schedule's ``every`` is neither ``1h``, ``1d``, ``7d`` nor a valid 5-field
    cron expression, or its ``notify`` is malformed; ``field`` names it."""

    code = "INVALID_SCHEDULE"
    api_status = 400
    description = "every is not 1h, 1d, 7d or a 5-field cron expression, or notify is invalid"


class BrowserRefused(BrowserUnavailable):
    """A remote browser endpoint is not a ``bulk node``: its pages would reach the
    network without passing bulk's address policy, so bulk does not use it."""

    code = "BROWSER_REFUSED"
    api_status = 503
    description = "A remote browser is not a bulk node: bulk cannot apply its address policy there"


class ConnectorNotFound(BulkError):
    """No connector with this id belongs to the caller's account (or it was deleted):
    another account's connector is answered exactly as a missing one."""

    code = "CONNECTOR_NOT_FOUND"
    api_status = 404
    description = "Connector ID doesn't exist or doesn't belong to your account"


class ConnectorOffline(CaptureError):
    """A capture routed to a connector (``connector_id``) whose tunnel is not up: it
    never connected, it was stopped, or it went away during the capture. A bulk job's
    URL failing so is refunded like any failed capture."""

    code = "CONNECTOR_OFFLINE"
    api_status = 503
    description = "Connector is not currently connected"


class ConnectorTimeout(CaptureError):
    """A capture routed to a connector did not answer in time (the capture's own
    timeout, plus a grace period, through the tunnel)."""

    code = "CONNECTOR_TIMEOUT"
    api_status = 504
    description = "Connector didn't respond in time"
