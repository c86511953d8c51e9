"""``bulk serve`` and ``bulk admin``."""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._exceptions import BulkError, ValidationError

if TYPE_CHECKING:
    from .._ledger import Ledger
from ._common import (
    _SERVE_NICE,
    EXIT_ERROR,
    EXIT_OK,
    F,
    T,
    _browser_options,
    _Exit,
    _fail,
    _network_options,
    _policy,
    _pool_config,
    _run_or_exit,
    _settings,
    cli,
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--db",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ledger database (created if missing).",
)
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where job images and ZIPs are kept.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Pages captured at once, all jobs together [default: 2 per core, 2 to 8].",
)
@_browser_options
@_network_options
def serve(
    host: str,
    port: int,
    db: Path,
    data_dir: Path,
    concurrency: int | None,
    allow_private: bool,
    allow: tuple[str, ...],
    browsers: tuple[str, ...],
    browser_slots: int | None,
    no_local_browser: bool,
) -> None:
    """Run the HTTP API and its job runner in the foreground (SIGTERM: graceful stop)."""
    import trio

    from .._api import RATE_LIMITS, ApiConfig, RateLimit
    from .._service import ServiceConfig
    from .._service import serve as run_service
    from .._util import single_error

    settings = _settings()
    policy = _policy(allow_private, allow, settings)
    limits = dict(RATE_LIMITS)
    for bucket, count, window in settings.rate_limits:
        limits[bucket] = RateLimit(count, window)
    config = ServiceConfig(
        host=host,
        port=port,
        db=db.resolve(),
        data_dir=data_dir.resolve(),
        # Captures yield the CPU to the API: status answers stay fast under load.
        pool=_pool_config(
            concurrency,
            settings,
            nice=_SERVE_NICE,
            browsers=browsers,
            browser_slots=browser_slots,
            no_local_browser=no_local_browser,
            status_file=browsers_file(db.resolve()),
        ),
        policy=policy,
        download_ttl=settings.download_ttl_seconds,
        api=ApiConfig(rate_limits=limits),
        schedule_seconds=settings.schedule_seconds,
    )

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                with trio.open_signal_receiver(*signals) as received:
                    async for _ in received:
                        if shutdown.is_set():
                            nursery.cancel_scope.cancel()  # a second signal: stop now
                            return
                        click.echo(
                            "bulk: stopping (finishing requests, releasing leases)", err=True
                        )
                        shutdown.set()

            async def service(*, task_status: trio.TaskStatus[list[str]]) -> None:
                await run_service(config, shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped gracefully: end the watcher too

            nursery.start_soon(watch)
            binds = await nursery.start(service)
            click.echo(f"bulk: listening on {', '.join(binds)}", err=True)

    try:
        trio.run(main)
    except BaseException as exc:  # unwrapped below
        leaf = single_error(exc)
        if isinstance(leaf, BulkError):  # LOCKED: another bulk serve uses the --db
            _fail(leaf)
        if isinstance(leaf, KeyboardInterrupt):
            raise _Exit(EXIT_OK) from None
        raise
    click.echo("bulk: stopped", err=True)


# ---- admin ----------------------------------------------------------------------------


def browsers_file(db: Path) -> Path:
    """Where ``bulk serve --db DB`` keeps its browser sources' state (``DB.browsers.json``)."""
    return db.with_name(db.name + ".browsers.json")


@cli.group()
def admin() -> None:
    """Accounts, API keys, credits and the ledger audit (works on the service's --db)."""


def _db_option(fn: F) -> F:
    return click.option(
        "--db",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The service's ledger database.",
    )(fn)


def _ledger_call(db: Path, fn: Callable[[Ledger], Awaitable[T]]) -> T:
    from .._ledger import Ledger

    async def go() -> T:
        async with Ledger.open(db) as ledger:
            return await fn(ledger)

    return _run_or_exit(go)


@admin.command(name="create-key")
@_db_option
@click.option(
    "--credits",
    type=click.IntRange(0, 10**9),
    required=True,
    help="Credits granted to the new account.",
)
@click.option("--email", default=None, help="The account's email.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create_key(db: Path, credits: int, email: str | None, as_json: bool) -> None:
    """Create an account with CREDITS and print its API key (shown only this once)."""
    account, key = _ledger_call(
        db, lambda ledger: ledger.create_account(credits=credits, email=email)
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "api_key": key,
                    "account_id": account.id,
                    "email": account.email,
                    "credits": account.balance,
                    "key_prefix": account.key_prefix,
                }
            )
        )
    else:
        click.echo(key)


@admin.command(name="revoke-key")
@_db_option
@click.option("--key", required=True, help="The API key to deactivate.")
def revoke_key(db: Path, key: str) -> None:
    """Deactivate an API key."""
    done = _ledger_call(db, lambda ledger: ledger.revoke_key(key))
    if not done:
        click.echo("INVALID_API_KEY: no active key like that", err=True)
        raise _Exit(EXIT_ERROR)
    click.echo("revoked")


@admin.command()
@_db_option
@click.option("--key", required=True, help="An API key of the account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def credits(db: Path, key: str, as_json: bool) -> None:
    """Show the credit balance of the account a key belongs to."""
    account = _ledger_call(db, lambda ledger: ledger.account_by_key(key))
    if as_json:
        click.echo(
            json.dumps(
                {"balance": account.balance, "account_id": account.id, "email": account.email}
            )
        )
    else:
        click.echo(str(account.balance))


@admin.command()
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit(db: Path, as_json: bool) -> None:
    """Check every ledger invariant; exit 0 only when all hold."""
    if not db.exists():
        _fail(ValidationError(f"no database at {db}", field="db"))
    report = _ledger_call(db, lambda ledger: ledger.audit())
    if as_json:
        click.echo(json.dumps(list(report.jobs)))
    else:
        for job in report.jobs:
            click.echo(
                f"{job['job_id']} {job['status']:<10} reserved {job['reserved']} "
                f"used {job['used']} refunded {job['refunded']}"
            )
    for problem in report.problems:
        click.echo(f"AUDIT_FAILED: {problem}", err=True)
    if not report.ok:
        raise _Exit(EXIT_ERROR)


@admin.command()
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(db: Path, as_json: bool) -> None:
    """List jobs with their status and counts."""
    rows = _ledger_call(db, lambda ledger: ledger.jobs())
    data = [
        {
            "job_id": j.id,
            "kind": j.kind,
            "status": j.status,
            "site": j.site,
            "total": j.total,
            "ok": j.ok,
            "failed": j.failed,
            "created_at": j.created_at,
        }
        for j in rows
    ]
    if as_json:
        click.echo(json.dumps(data))
    else:
        for d in data:
            click.echo(
                f"{d['job_id']} {d['kind']:<7} {d['status']:<10} {d['ok']}/{d['total']} ok "
                f"{d['site']}"
            )


@admin.command(name="browsers")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def admin_browsers(db: Path, as_json: bool) -> None:
    """Show the browser sources of the bulk serve running on --db: slots, in-flight
    captures, whether each is up and its last error."""
    path = browsers_file(db.resolve())
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        sources = state["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        _fail(ValidationError(f"no bulk serve has run on {db} (no {path.name})", field="db"))
    running = _alive(state.get("pid"))
    if as_json:
        click.echo(json.dumps({"running": running, "sources": sources}))
        return
    if not running:
        click.echo("(bulk serve is not running: its last known state)", err=True)
    for s in sources:
        click.echo(
            f"{s['name']} {s['kind']:<5} {'up' if s['up'] else 'DOWN':<4} "
            f"{s['in_flight']}/{s['slots']} busy, {s['captures']} captured"
            + (f", last error: {s['last_error']}" if s.get("last_error") else "")
        )


def _alive(pid: object) -> bool:
    import os

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
