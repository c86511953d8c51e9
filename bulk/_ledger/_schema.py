"""The ledger's schema: every money rule, as constraints and triggers, and its migrations.

The schema itself enforces the rules, so no caller can get them wrong:

- ``credit_events`` is append-only (triggers refuse UPDATE/DELETE) and is the only
  thing that moves ``accounts.balance`` (an AFTER INSERT trigger);
  ``balance >= 0`` is a CHECK, so an overdraft aborts the transaction.
- Inserting a ``job_urls`` row of a charged job inserts its ``reserve`` event.
- A ``job_urls`` row moving to ``ok`` inserts its ``use`` event, to ``failed`` its
  ``refund`` event; a row can never leave ``ok``/``failed`` (trigger), and a partial
  unique index allows one ``use``-or-``refund`` per row: exactly once, whatever
  crashes or retries happen.
- A job that fails gives back every credit it used (m003): its move to ``failed``
  inserts a ``reverse`` event for each ``use``, once, and a URL of a failed job can
  no longer succeed.
- A job with a ``webhook_url`` that ends enqueues exactly one delivery (m004);
  a delivery that finished is final.
- A job that ended holds no secret (m005): its cookie and header values are
  dropped (the encrypted copy) and masked (in ``options``) by a trigger; so are
  the per-URL ones of a URL-list job (m007), whose options columns hold them
  masked only.
- A server secret (m008: the dashboard's session key) is never changed in place.
- A schedule's slot runs at most once (m009: a unique (schedule, slot) run row,
  claimed with the move of ``next_at``); one run per schedule is open at a time; a
  finished run is final; a change webhook (``bulk_job.changed``) is queued only for
  a completed run of a schedule with that webhook URL, once per job.
- A connector keeps only its token's hash; a deleted one has none and stays
  deleted (m010); a job routed to one names it (``jobs.connector_id``).

Migrations already released never change (existing databases must open); a new
rule is a new migration. ``bulk admin audit`` (``_audit.py``) proves each rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sqlite_utils import Database, Migrations

__all__ = ["TRANSITIONS", "holds_secrets_sql", "migrations"]

migrations = Migrations("bulk-ledger")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            email TEXT UNIQUE,
            plan TEXT NOT NULL DEFAULT 'free',
            balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
            webhook_secret TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX api_keys_account ON api_keys(account_id);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('bulk', 'shot', 'offline')),
            account_id INTEGER REFERENCES accounts(id),
            api_key_id INTEGER REFERENCES api_keys(id),
            site TEXT NOT NULL,
            sitemap_urls TEXT NOT NULL DEFAULT '[]',
            options TEXT NOT NULL DEFAULT '{}',
            root TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'processing', 'packaging', 'completed', 'failed', 'expired')),
            urls_complete INTEGER NOT NULL DEFAULT 1 CHECK (urls_complete IN (0, 1)),
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            expires_at REAL,
            idempotency_key TEXT,
            request_hash TEXT,
            error_code TEXT,
            error_message TEXT,
            zip_path TEXT,
            zip_size INTEGER,
            zip_sha256 TEXT,
            webhook_url TEXT,
            webhook_state TEXT,
            UNIQUE (account_id, idempotency_key)
        );
        CREATE INDEX jobs_status ON jobs(status, kind);
        CREATE INDEX jobs_account ON jobs(account_id, status);
        CREATE TABLE job_urls (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            seq INTEGER NOT NULL CHECK (seq >= 1),
            url TEXT NOT NULL,
            entry TEXT,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'leased', 'ok', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until REAL,
            error_code TEXT,
            error_message TEXT,
            http_status INTEGER,
            final_url TEXT,
            width INTEGER,
            height INTEGER,
            bytes INTEGER,
            sha256 TEXT,
            file TEXT,
            finished_at TEXT,
            PRIMARY KEY (job_id, seq),
            CHECK (state != 'ok' OR (file IS NOT NULL AND sha256 IS NOT NULL)),
            CHECK (state != 'failed' OR error_code IS NOT NULL)
        ) WITHOUT ROWID;
        CREATE INDEX job_urls_work ON job_urls(job_id, state, seq);
        CREATE TABLE credit_events (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            job_id TEXT REFERENCES jobs(id),
            seq INTEGER,
            kind TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'use', 'refund')),
            amount INTEGER NOT NULL CHECK (amount > 0),
            created_at TEXT NOT NULL,
            CHECK ((kind = 'grant') = (job_id IS NULL))
        );
        CREATE UNIQUE INDEX credit_events_once ON credit_events(job_id, seq, kind)
            WHERE job_id IS NOT NULL;
        CREATE UNIQUE INDEX credit_events_settle_once ON credit_events(job_id, seq)
            WHERE kind IN ('use', 'refund');
        CREATE INDEX credit_events_account ON credit_events(account_id, kind);

        CREATE TRIGGER credit_events_append_only_u BEFORE UPDATE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;
        CREATE TRIGGER credit_events_append_only_d BEFORE DELETE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;

        -- A use or refund needs the reservation it settles.
        CREATE TRIGGER credit_events_settles_reservation BEFORE INSERT ON credit_events
        WHEN NEW.kind IN ('use', 'refund') AND NOT EXISTS (
            SELECT 1 FROM credit_events r
            WHERE r.job_id = NEW.job_id AND r.seq = NEW.seq AND r.kind = 'reserve')
        BEGIN SELECT RAISE(ABORT, 'settling a credit that was never reserved'); END;

        CREATE TRIGGER credit_events_balance AFTER INSERT ON credit_events
        BEGIN
            UPDATE accounts SET balance = balance + CASE NEW.kind
                WHEN 'grant' THEN NEW.amount
                WHEN 'reserve' THEN -NEW.amount
                WHEN 'refund' THEN NEW.amount
                ELSE 0 END
            WHERE id = NEW.account_id;
        END;

        CREATE TRIGGER job_urls_reserve AFTER INSERT ON job_urls
        WHEN (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'reserve', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_terminal BEFORE UPDATE OF state ON job_urls
        WHEN OLD.state IN ('ok', 'failed') AND NEW.state != OLD.state
        BEGIN SELECT RAISE(ABORT, 'a finished URL cannot change state'); END;

        CREATE TRIGGER job_urls_use AFTER UPDATE OF state ON job_urls
        WHEN NEW.state = 'ok' AND OLD.state != 'ok'
             AND (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'use', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_refund AFTER UPDATE OF state ON job_urls
        WHEN NEW.state = 'failed' AND OLD.state != 'failed'
             AND (SELECT account_id FROM jobs WHERE id = NEW.job_id) IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT account_id, NEW.job_id, NEW.seq, 'refund', 1,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM jobs WHERE id = NEW.job_id;
        END;

        CREATE TRIGGER job_urls_no_delete BEFORE DELETE ON job_urls
        BEGIN SELECT RAISE(ABORT, 'job_urls rows are kept for the audit'); END;
        """
    )


@migrations()
def m002_lease_fencing_and_strict_settlement(db: Database) -> None:
    db.executescript(
        """
        -- Every claim of a row takes the next lease number; finish and release must
        -- present it. ``attempts`` alone cannot fence: a release gives its attempt
        -- back, so the next claim of the row would carry the released claim's number.
        ALTER TABLE job_urls ADD COLUMN lease_no INTEGER NOT NULL DEFAULT 0;

        -- A use or refund settles the very reservation it names: same account, same
        -- amount (a refund of 1000 for a 1-credit reservation, or to another account,
        -- would mint credits).
        DROP TRIGGER credit_events_settles_reservation;
        CREATE TRIGGER credit_events_settles_reservation BEFORE INSERT ON credit_events
        WHEN NEW.kind IN ('use', 'refund') AND NOT EXISTS (
            SELECT 1 FROM credit_events r
            WHERE r.job_id = NEW.job_id AND r.seq = NEW.seq AND r.kind = 'reserve'
              AND r.account_id = NEW.account_id AND r.amount = NEW.amount)
        BEGIN SELECT RAISE(ABORT, 'settling a credit that was never reserved'); END;

        -- A row is born queued: one inserted ok/failed would keep its reservation
        -- forever, since only the state change to ok/failed settles it.
        CREATE TRIGGER job_urls_born_queued BEFORE INSERT ON job_urls
        WHEN NEW.state != 'queued'
        BEGIN SELECT RAISE(ABORT, 'a URL row starts queued'); END;
        """
    )


@migrations()
def m003_failed_jobs_refund_every_credit(db: Database) -> None:
    # The kind CHECK of credit_events cannot be altered in place, so the table is
    # rebuilt (ids kept). Not by RENAME: renaming re-parses every trigger, and the
    # job_urls triggers name credit_events, which does not exist in between. Its own
    # triggers and indexes go with the DROP and are created again below.
    db.executescript(
        """
        CREATE TEMP TABLE credit_events_copy AS SELECT * FROM credit_events;
        DROP TABLE credit_events;
        CREATE TABLE credit_events (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            job_id TEXT REFERENCES jobs(id),
            seq INTEGER,
            kind TEXT NOT NULL CHECK (kind IN ('grant', 'reserve', 'use', 'refund', 'reverse')),
            amount INTEGER NOT NULL CHECK (amount > 0),
            created_at TEXT NOT NULL,
            CHECK ((kind = 'grant') = (job_id IS NULL))
        );
        INSERT INTO credit_events (id, account_id, job_id, seq, kind, amount, created_at)
            SELECT id, account_id, job_id, seq, kind, amount, created_at
            FROM credit_events_copy ORDER BY id;
        DROP TABLE credit_events_copy;

        CREATE UNIQUE INDEX credit_events_once ON credit_events(job_id, seq, kind)
            WHERE job_id IS NOT NULL;
        CREATE UNIQUE INDEX credit_events_settle_once ON credit_events(job_id, seq)
            WHERE kind IN ('use', 'refund');
        CREATE INDEX credit_events_account ON credit_events(account_id, kind);

        CREATE TRIGGER credit_events_append_only_u BEFORE UPDATE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;
        CREATE TRIGGER credit_events_append_only_d BEFORE DELETE ON credit_events
        BEGIN SELECT RAISE(ABORT, 'credit_events is append-only'); END;

        CREATE TRIGGER credit_events_settles_reservation BEFORE INSERT ON credit_events
        WHEN NEW.kind IN ('use', 'refund') AND NOT EXISTS (
            SELECT 1 FROM credit_events r
            WHERE r.job_id = NEW.job_id AND r.seq = NEW.seq AND r.kind = 'reserve'
              AND r.account_id = NEW.account_id AND r.amount = NEW.amount)
        BEGIN SELECT RAISE(ABORT, 'settling a credit that was never reserved'); END;

        -- A reverse gives back the very use it names (same row, account, amount),
        -- and only for a job that failed; credit_events_once makes it once.
        CREATE TRIGGER credit_events_reverses_a_use BEFORE INSERT ON credit_events
        WHEN NEW.kind = 'reverse' AND (NOT EXISTS (
            SELECT 1 FROM credit_events u
            WHERE u.job_id = NEW.job_id AND u.seq = NEW.seq AND u.kind = 'use'
              AND u.account_id = NEW.account_id AND u.amount = NEW.amount)
            OR NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND status = 'failed'))
        BEGIN SELECT RAISE(ABORT, 'reversing a credit that was not used by a failed job'); END;

        CREATE TRIGGER credit_events_balance AFTER INSERT ON credit_events
        BEGIN
            UPDATE accounts SET balance = balance + CASE NEW.kind
                WHEN 'grant' THEN NEW.amount
                WHEN 'reserve' THEN -NEW.amount
                WHEN 'refund' THEN NEW.amount
                WHEN 'reverse' THEN NEW.amount
                ELSE 0 END
            WHERE id = NEW.account_id;
        END;

        -- A job that fails refunds every credit, whatever stage failed: the URLs it
        -- captured were used, and are given back here (the unfinished ones are
        -- refunded as fail_job fails them).
        CREATE TRIGGER jobs_failed_reverse_uses AFTER UPDATE OF status ON jobs
        WHEN NEW.status = 'failed' AND OLD.status != 'failed' AND NEW.account_id IS NOT NULL
        BEGIN
            INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
            SELECT u.account_id, u.job_id, u.seq, 'reverse', u.amount,
                   strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            FROM credit_events u
            WHERE u.job_id = NEW.id AND u.kind = 'use' AND NOT EXISTS (
                SELECT 1 FROM credit_events r
                WHERE r.job_id = u.job_id AND r.seq = u.seq AND r.kind = 'reverse');
        END;

        -- ... so a URL of a failed job cannot succeed afterwards (its use would stay).
        CREATE TRIGGER job_urls_no_success_after_failure BEFORE UPDATE OF state ON job_urls
        WHEN NEW.state = 'ok' AND OLD.state != 'ok'
             AND (SELECT status FROM jobs WHERE id = NEW.job_id) = 'failed'
        BEGIN SELECT RAISE(ABORT, 'a URL of a failed job cannot succeed'); END;

        -- No URL row joins a job that ended: its reservation would never settle.
        CREATE TRIGGER job_urls_only_for_open_jobs BEFORE INSERT ON job_urls
        WHEN (SELECT status FROM jobs WHERE id = NEW.job_id)
             IN ('completed', 'failed', 'expired')
        BEGIN SELECT RAISE(ABORT, 'a job that ended takes no new URL'); END;

        -- Jobs that failed before this rule give back what they kept, too.
        INSERT INTO credit_events (account_id, job_id, seq, kind, amount, created_at)
        SELECT u.account_id, u.job_id, u.seq, 'reverse', u.amount,
               strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        FROM credit_events u JOIN jobs j ON j.id = u.job_id
        WHERE j.status = 'failed' AND u.kind = 'use' ORDER BY u.id;
        """
    )


# last_error of a delivery that had failed before the queue table existed.
_BEFORE_QUEUE: Final = "failed before the delivery queue existed"


@migrations()
def m004_webhook_delivery_queue(db: Database) -> None:
    db.executescript(
        """
        -- One row per ended job that has a webhook_url. The partial index is the
        -- queue: the delivery loop's work grows with pending deliveries only.
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE REFERENCES jobs(id),
            url TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('bulk_job.completed', 'bulk_job.failed')),
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            due_at REAL NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            CHECK ((state = 'pending') = (finished_at IS NULL)),
            CHECK (state != 'failed' OR last_error IS NOT NULL)
        );
        CREATE INDEX deliveries_due ON deliveries(due_at, id) WHERE state = 'pending';
        """
    )
    # Jobs that ended before the queue existed: their state moves over from
    # jobs.webhook_state ("<attempts>:<due unix time>", "delivered" or "failed").
    ended = db.execute(
        "SELECT id, status, webhook_url, webhook_state FROM jobs "
        "WHERE webhook_url IS NOT NULL AND status IN ('completed', 'failed', 'expired')"
    ).fetchall()
    for job_id, status, url, state in ended:
        event = "bulk_job.failed" if status == "failed" else "bulk_job.completed"
        if state in ("delivered", "failed"):
            db.execute(
                "INSERT INTO deliveries (job_id, url, event, state, last_error, created_at, "
                "finished_at) VALUES (?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (job_id, url, event, state, _BEFORE_QUEUE if state == "failed" else None),
            )
            continue
        attempts, due = 0, 0.0
        if state and ":" in state:
            text_attempts, _, text_due = state.partition(":")
            try:
                attempts, due = int(text_attempts), float(text_due)
            except ValueError:
                attempts, due = 0, 0.0
        db.execute(
            "INSERT INTO deliveries (job_id, url, event, attempts, due_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (job_id, url, event, max(0, attempts), due),
        )
    db.executescript(
        """
        -- Every job with a webhook_url that ends is announced, once. (A completed
        -- offline run packaged again ends twice; the UNIQUE job_id keeps one.)
        CREATE TRIGGER jobs_announce_end AFTER UPDATE OF status ON jobs
        WHEN NEW.status IN ('completed', 'failed') AND OLD.status != NEW.status
             AND NEW.webhook_url IS NOT NULL
        BEGIN
            INSERT OR IGNORE INTO deliveries (job_id, url, event, created_at)
            VALUES (NEW.id, NEW.webhook_url,
                    CASE NEW.status WHEN 'completed' THEN 'bulk_job.completed'
                                    ELSE 'bulk_job.failed' END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        END;
        CREATE TRIGGER jobs_announce_born_ended AFTER INSERT ON jobs
        WHEN NEW.status IN ('completed', 'failed') AND NEW.webhook_url IS NOT NULL
        BEGIN
            INSERT OR IGNORE INTO deliveries (job_id, url, event, created_at)
            VALUES (NEW.id, NEW.webhook_url,
                    CASE NEW.status WHEN 'completed' THEN 'bulk_job.completed'
                                    ELSE 'bulk_job.failed' END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        END;

        -- A delivery announces an ended job to that job's webhook_url, born pending.
        CREATE TRIGGER deliveries_for_ended_jobs BEFORE INSERT ON deliveries
        WHEN NEW.state != 'pending' OR NEW.attempts != 0 OR NOT EXISTS (
            SELECT 1 FROM jobs WHERE id = NEW.job_id AND webhook_url = NEW.url
              AND status IN ('completed', 'failed', 'expired'))
        BEGIN SELECT RAISE(ABORT, 'a delivery starts pending, for an ended job''s webhook'); END;

        -- Delivered or failed is final; what is announced, and to whom, never changes;
        -- attempts only count up; rows are kept.
        CREATE TRIGGER deliveries_final BEFORE UPDATE ON deliveries
        WHEN OLD.state != 'pending'
        BEGIN SELECT RAISE(ABORT, 'a finished delivery is final'); END;
        CREATE TRIGGER deliveries_fixed BEFORE UPDATE OF job_id, url, event ON deliveries
        WHEN NEW.job_id IS NOT OLD.job_id OR NEW.url IS NOT OLD.url
             OR NEW.event IS NOT OLD.event
        BEGIN SELECT RAISE(ABORT, 'a delivery''s job, url and event are fixed'); END;
        CREATE TRIGGER deliveries_attempts_count_up BEFORE UPDATE OF attempts ON deliveries
        WHEN NEW.attempts < OLD.attempts
        BEGIN SELECT RAISE(ABORT, 'delivery attempts only count up'); END;
        CREATE TRIGGER deliveries_no_delete BEFORE DELETE ON deliveries
        BEGIN SELECT RAISE(ABORT, 'deliveries are kept for the audit'); END;
        """
    )


# The masked form of an options JSON column: every cookie value and header value
# becomes "***" (what CaptureOptions.public_json shows).
def _masked_sql(col: str) -> str:
    return (
        f"json_set({col}, "
        f"'$.cookies', (SELECT json_group_array(json_set(c.value, '$.value', '***')) "
        f"FROM json_each({col}, '$.cookies') c), "
        f"'$.headers', (SELECT json_group_object(h.key, '***') "
        f"FROM json_each({col}, '$.headers') h))"
    )


def holds_secrets_sql(options: str, secrets: str) -> str:
    """SQL that is true when a job row still holds a secret.

    Args:
        options: The options column (or ``NEW.options``).
        secrets: The encrypted secrets column (or ``NEW.secrets``).
    """
    return (
        f"({secrets} IS NOT NULL OR (json_valid({options}) AND ("
        f"EXISTS (SELECT 1 FROM json_each({options}, '$.cookies') c "
        f"WHERE json_extract(c.value, '$.value') IS NOT '***') OR "
        f"EXISTS (SELECT 1 FROM json_each({options}, '$.headers') h "
        f"WHERE h.value IS NOT '***'))))"
    )


@migrations()
def m005_job_secrets_kept_only_while_running(db: Database) -> None:
    # ``secrets``: the cookie and header values, encrypted with a key kept outside
    # this file (_secrets.py); ``options`` holds them masked. When a job ends both
    # are cleared by trigger, so no ended job holds a secret, whoever wrote the row.
    ended = "('completed', 'failed', 'expired')"
    clear = f"""
            UPDATE jobs SET secrets = NULL,
                options = CASE WHEN json_valid(options) THEN {_masked_sql("options")}
                               ELSE '{{}}' END
            WHERE id = NEW.id;
    """
    db.executescript(
        f"""
        ALTER TABLE jobs ADD COLUMN secrets TEXT;

        UPDATE jobs SET options = {_masked_sql("options")}
        WHERE status IN {ended} AND json_valid(options)
          AND {holds_secrets_sql("options", "secrets")};

        CREATE TRIGGER jobs_end_drops_secrets AFTER UPDATE ON jobs
        WHEN NEW.status IN {ended} AND {holds_secrets_sql("NEW.options", "NEW.secrets")}
        BEGIN {clear} END;
        CREATE TRIGGER jobs_born_ended_hold_no_secrets AFTER INSERT ON jobs
        WHEN NEW.status IN {ended} AND {holds_secrets_sql("NEW.options", "NEW.secrets")}
        BEGIN {clear} END;
        """
    )


@migrations()
def m006_job_discovery_report(db: Database) -> None:
    # What discovery found and cut (``Discovery.to_json``), as JSON; NULL before.
    db.execute("ALTER TABLE jobs ADD COLUMN discovery TEXT")


@migrations()
def m007_url_options_and_capture_facts(db: Database) -> None:
    # A URL-list job carries options per URL: ``options`` is the URL's override of
    # its job's options (``CaptureOptions.to_json`` keys; NULL: the job's own), with
    # cookie and header values masked; ``secrets`` holds them sealed (AES-GCM, bound
    # to "<job id>#<seq>"), dropped when the job ends, like the job's own (m005).
    # ``extra_entries``: the ZIP entries reserved for the page's named intermediate
    # screenshots ({name: entry}); ``facts``: what the capture reported beyond the
    # columns (load "partial" and its pending hosts, truncated_height, PDF pages,
    # blocked requests, the intermediate images), as JSON.
    ended = "('completed', 'failed', 'expired')"
    db.executescript(
        f"""
        ALTER TABLE job_urls ADD COLUMN options TEXT;
        ALTER TABLE job_urls ADD COLUMN secrets TEXT;
        ALTER TABLE job_urls ADD COLUMN extra_entries TEXT;
        ALTER TABLE job_urls ADD COLUMN facts TEXT;

        -- A URL's options hold cookie and header values only masked; the values
        -- themselves are sealed in ``secrets``.
        CREATE TRIGGER job_urls_options_masked BEFORE INSERT ON job_urls
        WHEN NEW.options IS NOT NULL AND (NOT json_valid(NEW.options)
             OR {holds_secrets_sql("NEW.options", "NULL")})
        BEGIN SELECT RAISE(ABORT, 'URL options hold cookie and header values masked only'); END;
        CREATE TRIGGER job_urls_options_fixed BEFORE UPDATE OF options ON job_urls
        WHEN NEW.options IS NOT OLD.options
        BEGIN SELECT RAISE(ABORT, 'a URL''s options are fixed when it is added'); END;

        -- A job that ended holds no secret, in its URL rows either.
        CREATE TRIGGER jobs_end_drops_url_secrets AFTER UPDATE OF status ON jobs
        WHEN NEW.status IN {ended}
        BEGIN
            UPDATE job_urls SET secrets = NULL WHERE job_id = NEW.id AND secrets IS NOT NULL;
        END;
        """
    )


@migrations()
def m008_server_secrets_and_job_list(db: Database) -> None:
    # Secrets of the server itself, by name (the dashboard's session-signing key):
    # made once, by the first process that needs one, and never changed in place (a
    # trigger); deleting the row is how a secret is rotated (every dashboard session
    # signed with it ends).
    db.executescript(
        """
        CREATE TABLE server_secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL CHECK (length(value) >= 64),
            created_at TEXT NOT NULL
        );
        CREATE TRIGGER server_secrets_never_change BEFORE UPDATE ON server_secrets
        BEGIN SELECT RAISE(ABORT, 'a server secret is never changed, only deleted'); END;

        -- The dashboard's job list: an account's jobs of a kind, newest first.
        CREATE INDEX jobs_account_newest ON jobs(account_id, kind, created_at);
        """
    )


@migrations()
def m009_schedules_and_change_deliveries(db: Database) -> None:
    # Schedules (issue 17): a bulk-job body run again at every slot. ``body`` is the
    # request as given, cookie and header values masked; ``secrets`` holds the whole
    # body sealed (AES-GCM, bound to "schedule:<id>") when it has any. ``next_at``
    # is the next slot (Unix time), set exactly while the schedule is active.
    # ``anchor``: where interval slots count from (creation, or a change of every).
    # ``baseline_run``: the last completed run, what the next one is compared with.
    #
    # A run is one slot: the UNIQUE (schedule_id, slot) row is claimed in the same
    # transaction that moves ``next_at`` on, so a slot is never run twice, whatever
    # crashes; one run at most is open (claimed or running) per schedule. A run's
    # job is made with the idempotency key "schedule:<id>:<run>": a crash between the
    # claim and the job leaves a claimed run whose job, made again, is the same one.
    db.executescript(
        """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            api_key_id INTEGER NOT NULL REFERENCES api_keys(id),
            body TEXT NOT NULL CHECK (json_valid(body)),
            secrets TEXT,
            every TEXT NOT NULL CHECK (length(every) BETWEEN 1 AND 200),
            webhook_url TEXT,
            min_change REAL CHECK (min_change IS NULL OR min_change BETWEEN 0 AND 1),
            state TEXT NOT NULL CHECK (state IN ('active', 'paused', 'deleted')),
            next_at REAL,
            anchor REAL NOT NULL,
            baseline_run INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            CHECK ((state = 'active') = (next_at IS NOT NULL))
        );
        CREATE INDEX schedules_due ON schedules(next_at) WHERE state = 'active';
        CREATE INDEX schedules_account ON schedules(account_id, created_at);
        CREATE TRIGGER schedules_deleted_final BEFORE UPDATE ON schedules
        WHEN OLD.state = 'deleted' AND (NEW.state != 'deleted' OR NEW.secrets IS NOT NULL)
        BEGIN SELECT RAISE(ABORT, 'a deleted schedule stays deleted'); END;
        CREATE TRIGGER schedules_no_delete BEFORE DELETE ON schedules
        BEGIN SELECT RAISE(ABORT, 'schedules are kept (state deleted)'); END;

        CREATE TABLE schedule_runs (
            schedule_id TEXT NOT NULL REFERENCES schedules(id),
            run INTEGER NOT NULL CHECK (run >= 1),
            slot REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN
                ('claimed', 'running', 'completed', 'failed', 'skipped')),
            job_id TEXT UNIQUE REFERENCES jobs(id),
            reason_code TEXT,
            reason TEXT,
            compared_with INTEGER,
            changes TEXT CHECK (changes IS NULL OR json_valid(changes)),
            changed INTEGER CHECK (changed IN (0, 1)),
            report TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            PRIMARY KEY (schedule_id, run),
            UNIQUE (schedule_id, slot),
            CHECK (state != 'skipped' OR (job_id IS NULL AND reason_code IS NOT NULL)),
            CHECK (state NOT IN ('running', 'completed') OR job_id IS NOT NULL),
            CHECK ((state IN ('claimed', 'running')) = (finished_at IS NULL))
        );
        CREATE UNIQUE INDEX schedule_runs_one_open ON schedule_runs(schedule_id)
            WHERE state IN ('claimed', 'running');
        CREATE TRIGGER schedule_runs_final BEFORE UPDATE ON schedule_runs
        WHEN OLD.state IN ('completed', 'failed', 'skipped')
        BEGIN SELECT RAISE(ABORT, 'a finished run is final'); END;
        CREATE TRIGGER schedule_runs_fixed BEFORE UPDATE OF schedule_id, run, slot ON schedule_runs
        WHEN NEW.schedule_id IS NOT OLD.schedule_id OR NEW.run IS NOT OLD.run
             OR NEW.slot IS NOT OLD.slot
        BEGIN SELECT RAISE(ABORT, 'a run''s schedule, number and slot are fixed'); END;
        CREATE TRIGGER schedule_runs_job_fixed BEFORE UPDATE OF job_id ON schedule_runs
        WHEN OLD.job_id IS NOT NULL AND NEW.job_id IS NOT OLD.job_id
        BEGIN SELECT RAISE(ABORT, 'a run''s job is fixed once made'); END;
        CREATE TRIGGER schedule_runs_no_delete BEFORE DELETE ON schedule_runs
        BEGIN SELECT RAISE(ABORT, 'runs are kept'); END;
        """
    )
    # The delivery queue learns a third event, ``bulk_job.changed`` (a schedule run
    # that changed: its ``payload`` is the change summary, sent to the schedule's
    # webhook_url). One end event and one change event per job at most. SQLite
    # cannot change a CHECK in place: the table is rebuilt (the jobs triggers that
    # insert into it are dropped first and made again, unchanged).
    db.executescript(
        """
        DROP TRIGGER jobs_announce_end;
        DROP TRIGGER jobs_announce_born_ended;
        CREATE TABLE deliveries_m009 (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES jobs(id),
            url TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN
                ('bulk_job.completed', 'bulk_job.failed', 'bulk_job.changed')),
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            due_at REAL NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            payload TEXT CHECK (payload IS NULL OR json_valid(payload)),
            CHECK ((state = 'pending') = (finished_at IS NULL)),
            CHECK (state != 'failed' OR last_error IS NOT NULL),
            CHECK ((event = 'bulk_job.changed') = (payload IS NOT NULL))
        );
        INSERT INTO deliveries_m009 (id, job_id, url, event, state, attempts, due_at,
                                     last_error, created_at, finished_at)
            SELECT id, job_id, url, event, state, attempts, due_at, last_error,
                   created_at, finished_at FROM deliveries;
        DROP TABLE deliveries;
        ALTER TABLE deliveries_m009 RENAME TO deliveries;
        CREATE UNIQUE INDEX deliveries_end_once ON deliveries(job_id)
            WHERE event != 'bulk_job.changed';
        CREATE UNIQUE INDEX deliveries_change_once ON deliveries(job_id)
            WHERE event = 'bulk_job.changed';
        CREATE INDEX deliveries_due ON deliveries(due_at, id) WHERE state = 'pending';

        CREATE TRIGGER jobs_announce_end AFTER UPDATE OF status ON jobs
        WHEN NEW.status IN ('completed', 'failed') AND OLD.status != NEW.status
             AND NEW.webhook_url IS NOT NULL
        BEGIN
            INSERT OR IGNORE INTO deliveries (job_id, url, event, created_at)
            VALUES (NEW.id, NEW.webhook_url,
                    CASE NEW.status WHEN 'completed' THEN 'bulk_job.completed'
                                    ELSE 'bulk_job.failed' END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        END;
        CREATE TRIGGER jobs_announce_born_ended AFTER INSERT ON jobs
        WHEN NEW.status IN ('completed', 'failed') AND NEW.webhook_url IS NOT NULL
        BEGIN
            INSERT OR IGNORE INTO deliveries (job_id, url, event, created_at)
            VALUES (NEW.id, NEW.webhook_url,
                    CASE NEW.status WHEN 'completed' THEN 'bulk_job.completed'
                                    ELSE 'bulk_job.failed' END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        END;

        -- An end event announces an ended job to that job's webhook_url; a change
        -- event, a completed schedule run to its schedule's. Both are born pending.
        CREATE TRIGGER deliveries_for_ended_jobs BEFORE INSERT ON deliveries
        WHEN NEW.state != 'pending' OR NEW.attempts != 0
          OR (NEW.event != 'bulk_job.changed' AND NOT EXISTS (
                SELECT 1 FROM jobs WHERE id = NEW.job_id AND webhook_url = NEW.url
                  AND status IN ('completed', 'failed', 'expired')))
          OR (NEW.event = 'bulk_job.changed' AND NOT EXISTS (
                SELECT 1 FROM schedule_runs r
                JOIN schedules s ON s.id = r.schedule_id
                JOIN jobs j ON j.id = r.job_id
                WHERE r.job_id = NEW.job_id AND s.webhook_url = NEW.url
                  AND j.status IN ('completed', 'expired')))
        BEGIN SELECT RAISE(ABORT, 'a delivery starts pending, for an ended job''s webhook'); END;
        CREATE TRIGGER deliveries_final BEFORE UPDATE ON deliveries
        WHEN OLD.state != 'pending'
        BEGIN SELECT RAISE(ABORT, 'a finished delivery is final'); END;
        CREATE TRIGGER deliveries_fixed BEFORE UPDATE OF job_id, url, event, payload
            ON deliveries
        WHEN NEW.job_id IS NOT OLD.job_id OR NEW.url IS NOT OLD.url
             OR NEW.event IS NOT OLD.event OR NEW.payload IS NOT OLD.payload
        BEGIN SELECT RAISE(ABORT, 'a delivery''s job, url, event and payload are fixed'); END;
        CREATE TRIGGER deliveries_attempts_count_up BEFORE UPDATE OF attempts ON deliveries
        WHEN NEW.attempts < OLD.attempts
        BEGIN SELECT RAISE(ABORT, 'delivery attempts only count up'); END;
        CREATE TRIGGER deliveries_no_delete BEFORE DELETE ON deliveries
        BEGIN SELECT RAISE(ABORT, 'deliveries are kept for the audit'); END;
        """
    )



@migrations()
def m010_connectors(db: Database) -> None:
    # Connectors (Pixcap's "VPN connectors"): a capture node inside a private network
    # that dials out to the service. Only the SHA-256 of its token is kept (the token
    # is shown once); a new token replaces the hash (the old one stops working at
    # once). A deleted connector is kept (its id stays unique and may label old
    # jobs) with no token at all. A job routed to a connector names it.
    db.executescript(
        """
        CREATE TABLE connectors (
            id TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            token_hash TEXT UNIQUE,
            created_at TEXT NOT NULL,
            last_seen TEXT,
            deleted_at TEXT,
            CHECK ((deleted_at IS NULL) = (token_hash IS NOT NULL))
        );
        CREATE INDEX connectors_account ON connectors(account_id, created_at);
        CREATE TRIGGER connectors_deleted_final BEFORE UPDATE ON connectors
        WHEN OLD.deleted_at IS NOT NULL AND NEW.token_hash IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'a deleted connector stays deleted'); END;
        CREATE TRIGGER connectors_owner_fixed BEFORE UPDATE OF id, account_id ON connectors
        WHEN NEW.id IS NOT OLD.id OR NEW.account_id IS NOT OLD.account_id
        BEGIN SELECT RAISE(ABORT, 'a connector''s id and account are fixed'); END;
        CREATE TRIGGER connectors_no_delete BEFORE DELETE ON connectors
        BEGIN SELECT RAISE(ABORT, 'connectors are kept (deleted_at)'); END;

        ALTER TABLE jobs ADD COLUMN connector_id TEXT REFERENCES connectors(id);
        """
    )

# Which status a job may move to from each status (``fail_job`` is the other way to
# ``failed``). Terminal states are terminal, except that a completed job expires, and
# an offline run whose ZIP vanished before cleanup may be packaged again.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "pending": frozenset({"processing", "failed"}),
    "processing": frozenset({"packaging", "completed", "failed"}),
    "packaging": frozenset({"completed", "failed"}),
    "completed": frozenset({"expired", "packaging"}),
    "failed": frozenset(),
    "expired": frozenset(),
}
