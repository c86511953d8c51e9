"""The ledger: jobs, per-URL rows with leases, credits and webhook deliveries, in one
SQLite file whose schema enforces the money rules.

    _schema       the rules as constraints and triggers, and the migrations
    _connection   WAL, busy handling, the one writer task, read-only readers
    _accounts     accounts, API keys, grants                        (writes)
    _jobs         create, grow, move and fail jobs                   (writes)
    _leases       claim, finish, release, recover: settlement        (writes)
    _deliveries   the webhook delivery queue
    _schedules    schedules, their slots and runs                   (writes, reads)
    _reads        jobs with their counts, URL rows, accounts          (reads)
    _audit        proves every rule on the whole file
    _secrets      cookie and header values sealed while a job runs
    _server       secrets of the server itself (the dashboard's session key)
    _connectors   an account's connectors and their token hashes     (writes, reads)
    _records      the frozen records the rest of bulk sees

One credit is reserved per URL when a job is created, used when the URL succeeds,
refunded when it fails, each exactly once whatever crashes; a job that fails gives
back every credit, whatever stage failed. Writes go through one writer task; claims
are atomic lease updates; after a crash, ``recover`` returns dead leases to the queue.
"""

from __future__ import annotations

from ._connection import connect as _connect
from ._connectors import CONNECTOR_TOKEN_PREFIX, ConnectorRow
from ._ledger import Ledger
from ._records import (
    KEY_PREFIX,
    MAX_KEYS_PER_ACCOUNT,
    TERMINAL_JOB,
    Account,
    AuditReport,
    Claim,
    Delivery,
    JobKind,
    JobRow,
    JobStatus,
    NewJob,
    NewUrl,
    UrlResult,
    UrlRow,
    iso,
    parse_iso,
)
from ._schedules import NewSchedule, RunRow, ScheduleRow
from ._schema import migrations
from ._secrets import SecretBox

__all__ = [
    "CONNECTOR_TOKEN_PREFIX",
    "KEY_PREFIX",
    "MAX_KEYS_PER_ACCOUNT",
    "TERMINAL_JOB",
    "Account",
    "AuditReport",
    "Claim",
    "ConnectorRow",
    "Delivery",
    "JobKind",
    "JobRow",
    "JobStatus",
    "Ledger",
    "NewJob",
    "NewSchedule",
    "NewUrl",
    "RunRow",
    "ScheduleRow",
    "SecretBox",
    "UrlResult",
    "UrlRow",
    "_connect",
    "iso",
    "migrations",
    "parse_iso",
]
