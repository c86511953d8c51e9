"""What the ledger hands out and takes in: frozen records, status names, limits.

Plain values, no I/O: the rows of ``jobs``, ``job_urls``, ``accounts`` and
``deliveries`` as the rest of bulk sees them, and the few constants the schema and
the callers share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs

__all__ = [
    "KEY_PREFIX",
    "MAX_KEYS_PER_ACCOUNT",
    "TERMINAL_JOB",
    "Account",
    "AuditReport",
    "Claim",
    "Delivery",
    "JobKind",
    "JobRow",
    "JobStatus",
    "NewJob",
    "NewUrl",
    "UrlResult",
    "UrlRow",
    "iso",
    "parse_iso",
]

JobStatus = Literal["pending", "processing", "packaging", "completed", "failed", "expired"]
JobKind = Literal["bulk", "shot", "offline"]
TERMINAL_JOB: Final = ("completed", "failed", "expired")
MAX_KEYS_PER_ACCOUNT: Final = 5
KEY_PREFIX: Final = "pix_"


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC with milliseconds and ``Z`` (the API's format)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> datetime:
    """The inverse of ``iso`` (any ISO 8601 text with ``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@attrs.frozen(kw_only=True)
class Account:
    id: int
    email: str | None
    plan: str
    balance: int
    webhook_secret: str
    api_key_id: int | None = None
    key_prefix: str | None = None


@attrs.frozen(kw_only=True)
class NewUrl:
    """One URL row to add: the URL, its ZIP entry and what only this URL has.

    Args:
        url: The page URL.
        entry: Its ZIP entry name (fixed before capture), if known.
        options: Its override of the job's capture options (``CaptureOptions.to_json``
            keys, only those that differ); ``None``: the job's own. Cookie and
            header values are sealed like the job's.
        extra_entries: ZIP entries reserved for the page's named intermediate
            screenshots, ``{name: entry}``.
    """

    url: str
    entry: str | None = None
    options: Mapping[str, Any] | None = None
    extra_entries: Mapping[str, str] | None = None


@attrs.frozen(kw_only=True)
class NewJob:
    """What is needed to create a job; ``urls`` are ``(url, entry)`` (or ``NewUrl``)
    in sitemap (or list) order.

    ``options`` are the capture options as ``CaptureOptions.to_json`` gives them:
    their cookie and header values are kept encrypted, and only while the job runs.
    """

    kind: JobKind
    site: str
    urls: Sequence[tuple[str, str | None] | NewUrl]
    account_id: int | None = None
    api_key_id: int | None = None
    sitemap_urls: Sequence[str] = ()
    options: Mapping[str, Any] = attrs.field(factory=dict)
    root: str = ""
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    urls_complete: bool = True
    status: JobStatus = "pending"
    discovery: Mapping[str, Any] | None = None
    #: The connector every URL is captured through (``connector_id``), if any.
    connector_id: str | None = None


@attrs.frozen(kw_only=True)
class JobRow:
    """A job with its URL counts and its credits.

    ``used`` and ``refunded`` are net: a credit used by a URL of a job that then
    failed was given back (a ``reverse`` event) and counts as refunded, so
    ``reserved == used + refunded`` once the job has ended, whatever stage failed.

    ``options`` carry the cookie and header values while the job runs (decrypted);
    once it ended, or when they cannot be decrypted (``secrets_unreadable``: the key
    file changed), only ``***`` stands in their place.
    """

    id: str
    kind: JobKind
    account_id: int | None
    site: str
    sitemap_urls: tuple[str, ...]
    options: Mapping[str, Any]
    root: str
    status: JobStatus
    urls_complete: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: float | None
    error_code: str | None
    error_message: str | None
    zip_path: str | None
    zip_size: int | None
    zip_sha256: str | None
    webhook_url: str | None
    webhook_state: str | None
    total: int = 0
    queued: int = 0
    leased: int = 0
    ok: int = 0
    failed: int = 0
    reserved: int = 0
    used: int = 0
    refunded: int = 0
    replayed: bool = False
    discovery: Mapping[str, Any] | None = None
    secrets_unreadable: bool = False
    connector_id: str | None = None

    @property
    def processed(self) -> int:
        return self.ok + self.failed


@attrs.frozen(kw_only=True)
class UrlRow:
    """A URL row. ``options`` is its override of the job's options (``None``: the
    job's own), with cookie and header values opened while the job runs;
    ``facts`` what its capture reported beyond the columns (see ``UrlResult``)."""

    seq: int
    url: str
    entry: str | None
    state: str
    attempts: int
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    file: str | None = None
    options: Mapping[str, Any] | None = None
    extra_entries: Mapping[str, str] = attrs.field(factory=dict)
    facts: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Claim:
    """A URL leased to one worker until ``lease_until`` (Unix time).

    ``lease`` is the row's lease number, the fencing token ``finish``/``release``
    check: a claim that was released, or whose lease expired and was taken again,
    can no longer touch the row.
    """

    job_id: str
    seq: int
    url: str
    entry: str | None
    attempt: int
    lease_until: float
    lease: int = 0
    #: The URL's override of its job's options (``None``: the job's own).
    options: Mapping[str, Any] | None = None
    extra_entries: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class UrlResult:
    """How a claimed URL ended: ``ok`` with its image facts, or ``failed`` with a code.

    ``facts`` holds what the capture reported beyond the columns, as JSON values
    (``load``, ``pending_hosts``, ``truncated_height``, ``pdf_pages``,
    ``blocked_requests``, ``extras``: the intermediate images).
    """

    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    file: str | None = None
    facts: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Delivery:
    """One webhook callback waiting in the ledger's delivery queue.

    ``attempts`` counts the sends started so far (a send the process died in
    counts: that is what ends a delivery that kills its sender).
    """

    id: int
    job_id: str
    url: str
    event: str
    attempts: int
    due_at: float
    #: What a ``bulk_job.changed`` event adds to the job's status (schedule, run,
    #: change summary); None for the end events.
    payload: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class AuditReport:
    ok: bool
    problems: tuple[str, ...]
    jobs: tuple[Mapping[str, Any], ...]
    accounts: tuple[Mapping[str, Any], ...]
    integrity: str
