"""What the commands share: exit codes, errors as one line, option groups, the progress bar."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from .._exceptions import BulkError, Interrupted, ValidationError
from .._version import __version__

if TYPE_CHECKING:
    from .._capture import PoolConfig
    from .._config import Settings
    from .._discover import DiscoverLimits, Discovery
    from .._jobs import Progress
    from .._options import CaptureOptions
    from .._policy import EgressPolicy

# The heavy modules (Playwright, the ledger, the policy's URL parser) are imported
# where a command uses them, so that `bulk --help` and `bulk --version` start fast.

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_INTERRUPTED: Final = 4
EXIT_CHANGED: Final = 5
EXIT_CODES: Final = {
    EXIT_OK: "OK",
    EXIT_ERROR: "ERROR",
    EXIT_USAGE: "USAGE",
    EXIT_PARTIAL: "PARTIAL",
    EXIT_INTERRUPTED: "INTERRUPTED",
    EXIT_CHANGED: "CHANGED",
}
_USAGE_CODES: Final = {
    "VALIDATION_ERROR",
    "INVALID_URL",
    "RESUME_MISMATCH",
    "INVALID_ARCHIVE",
    "OUTPUT_EXISTS",
}
MAX_PAGES_CLI: Final = 10_000_000
MAX_SITEMAPS_CLI: Final = 1_000_000
# URLs `bulk discover` lets discovery run ahead of printing.
_DISCOVER_BUFFER: Final = 4096

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _next_step(code: str | None, details: Mapping[str, Any] | None = None) -> str:
    """What to do about an error, where the CLI has a flag for it."""
    if code == "URL_BLOCKED":
        if details and details.get("this_machine"):
            return (
                " (this machine: only --allow HOST|CIDR lets bulk reach it, e.g. --allow 127.0.0.1)"
            )
        return " (--allow-private or --allow HOST|CIDR lets bulk reach it)"
    return ""


def _fail(exc: BulkError) -> NoReturn:
    click.echo(f"{exc.code}: {exc.message}{_next_step(exc.code, exc.details)}", err=True)
    raise _Exit(EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_ERROR)


def _run_or_exit(fn: Callable[[], Awaitable[T]]) -> T:
    """``_run``, with a signal or a BulkError ending the command (one line, exit code)."""
    try:
        return _run(fn)
    except Interrupted as exc:
        click.echo(f"{exc.code}: {exc.message}", err=True)
        raise _Exit(EXIT_INTERRUPTED) from None
    except BulkError as exc:
        _fail(exc)


def _settings() -> Settings:
    from .._config import Settings

    try:
        return Settings.from_env()
    except BulkError as exc:
        _fail(exc)


def _policy(allow_private: bool, allow: tuple[str, ...], settings: Settings) -> EgressPolicy:
    from .._policy import EgressPolicy

    try:
        return EgressPolicy(
            allow_private=allow_private or settings.allow_private,
            allow=tuple(allow) + settings.allow,
        )
    except BulkError as exc:
        _fail(exc)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` with SIGTERM/SIGHUP treated like Ctrl-C: unwind cleanly, exit 4."""
    import trio

    from .._util import single_error

    async def main() -> T:
        interrupted = False
        result: list[T] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal interrupted
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

            async def body() -> None:
                result.append(await fn())
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(body)
        if interrupted or not result:
            raise Interrupted("stopped by a signal")
        return result[0]

    try:
        return trio.run(main)
    except BaseException as exc:
        leaf = single_error(exc)
        if isinstance(leaf, KeyboardInterrupt):
            raise Interrupted("stopped by Ctrl-C") from None
        if leaf is exc:
            raise
        raise leaf from None


# Niceness of the capture side under `bulk serve` (scripts/bench-api measures it).
_SERVE_NICE: Final = 10


def _pool_config(
    concurrency: int | None,
    settings: Settings,
    nice: int = 0,
    *,
    browsers: tuple[str, ...] = (),
    browser_slots: int | None = None,
    no_local_browser: bool = False,
    status_file: Path | None = None,
) -> PoolConfig:
    from .._capture import PoolConfig, RemoteEndpoint, default_concurrency
    from .._config import find_chromium

    local = not (no_local_browser or settings.no_local_browser)
    try:
        slots = browser_slots or settings.browser_slots
        remotes = tuple(
            RemoteEndpoint.parse(url, slots) for url in (*browsers, *settings.browsers)
        )
        if not local and not remotes:
            raise ValidationError(
                "--no-local-browser needs at least one --browser ws://HOST:PORT/TOKEN",
                field="browser",
            )
        # Without the local browser this machine needs no Chromium at all.
        executable = find_chromium(settings.chromium) if local else (settings.chromium or "")
    except BulkError as exc:
        _fail(exc)
    return PoolConfig(
        executable=executable,
        concurrency=concurrency or default_concurrency(),
        nice=nice,
        sandbox=settings.sandbox,
        local=local,
        remotes=remotes,
        status_file=status_file,
    )


def _browser_options(fn: F) -> F:
    fn = click.option(
        "--no-local-browser",
        is_flag=True,
        help="Capture only on the --browser endpoints (no Chromium on this machine). "
        "Same as BULK_NO_LOCAL_BROWSER=1.",
    )(fn)
    fn = click.option(
        "--browser-slots",
        type=click.IntRange(1, 64),
        default=None,
        help="Pages each --browser endpoint captures at once (or ws://...#slots=N) "
        "[default: 4].",
    )(fn)
    fn = click.option(
        "--browser",
        "browsers",
        multiple=True,
        metavar="ENDPOINT",
        help="A remote browser to capture on too: the ws://HOST:PORT/TOKEN a 'bulk node' "
        "printed (repeatable; also BULK_BROWSERS).",
    )(fn)
    return fn


def _apply(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn

    return wrap


def _network_options(fn: F) -> F:
    fn = click.option(
        "--allow",
        multiple=True,
        metavar="HOST|CIDR",
        help="Allow this host name or address range even if private or this machine's "
        "own, e.g. 127.0.0.1 (repeatable; bulk's own ports stay refused).",
    )(fn)
    fn = click.option(
        "--allow-private",
        is_flag=True,
        help="Allow private/link-local targets (intranets); this machine itself "
        "(loopback) only through --allow. Same as BULK_ALLOW_PRIVATE=1.",
    )(fn)
    return fn


def _max_sitemaps_option(fn: F) -> F:
    return click.option(
        "--max-sitemaps",
        type=click.IntRange(1, MAX_SITEMAPS_CLI),
        default=None,
        show_default="one per 10 pages of --max-pages, 100 to 50000",
        help="Fetch at most this many sitemap documents.",
    )(fn)


def _discover_limits(max_pages: int, same_host: bool, max_sitemaps: int | None) -> DiscoverLimits:
    from .._discover import DiscoverLimits, max_sitemaps_for

    return DiscoverLimits(
        max_pages=max_pages,
        same_host=same_host,
        max_sitemaps=max_sitemaps or max_sitemaps_for(max_pages),
    )


def _discovery_warnings(result: Discovery, limits: DiscoverLimits) -> list[str]:
    """What cut or thinned the list, in the CLI's words (its flags named)."""
    lines = list(result.warnings)
    if "max_pages" in result.reasons:
        total = str(result.found) if result.found is not None else f"more than {result.pages}"
        lines.append(
            f"--max-pages {limits.max_pages} cut the list: the sitemaps list {total} URLs, "
            f"only the first {result.pages} are taken (raise --max-pages for more)"
        )
    if "max_sitemaps" in result.reasons:
        lines.append(f"--max-sitemaps {limits.max_sitemaps} was reached: raise it to read more")
    return lines


def _host_warning(site: str, hosts: dict[str, int]) -> str | None:
    """The warning when most URLs are on other hosts than ``site``'s (a sitemap made
    for production while a staging copy is archived), with the hosts and counts."""
    from .._discover import same_host_key
    from .._urls import parse_http_url

    total = sum(hosts.values())
    try:
        own = same_host_key(parse_http_url(site).hostname)
    except BulkError:
        return None

    def key(authority: str) -> str:
        try:
            return same_host_key(parse_http_url(f"http://{authority}/").hostname)
        except BulkError:
            return authority

    others = {h: n for h, n in hosts.items() if key(h) != own}
    count = sum(others.values())
    if not total or count * 2 <= total:
        return None
    ranked = sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{h} ({n})" for h, n in ranked[:5])
    if len(ranked) > 5:
        listed += f" and {len(ranked) - 5} more hosts"
    return (
        f"{count} of {total} URLs are on other hosts than {parse_http_url(site).authority}: "
        f"{listed}; --same-host keeps only the site's own pages"
    )


def _capture_options(values: dict[str, Any], out: Path | None = None) -> CaptureOptions:
    # Imported here: the option schema is not needed by 'bulk --help' (start-up time).
    from .._options import OPTION_SPECS, options_from_cli

    names = {spec.name for spec in OPTION_SPECS}  # every option, the engine's new ones too
    picked = {k: values.pop(k) for k in list(values) if k in names}
    if out is not None and picked.get("format") is None:
        suffix = out.suffix.lower().lstrip(".")
        picked["format"] = {"jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "pdf": "pdf"}.get(suffix)
    try:
        return options_from_cli(picked)
    except BulkError as exc:
        _fail(exc)


_page_log = logging.getLogger("bulk.pages")


class _Bar:
    """A progress bar on stderr: redrawn in place on a terminal, a line per 10% elsewhere.

    Counts are the job's (after ``--resume`` they include the earlier run's pages,
    so the bar ends at the total); the rate counts this run's pages only. Every page
    is logged (``-v``): URL, status, milliseconds, bytes.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.ok = self.failed = 0
        self.total = 0
        self.this_run = 0
        self.start = time.monotonic()
        self._last_decile = -1

    def __call__(self, p: Progress) -> None:
        self.this_run += 1
        if p.done:
            # The job's counts (settled by now; reports may arrive out of order).
            self.ok = max(self.ok, p.ok_count)
            self.failed = max(self.failed, p.done - p.ok_count)
        elif p.ok:
            self.ok += 1
        else:
            self.failed += 1
        done = self.ok + self.failed
        self.total = max(self.total, p.total)
        status = f"HTTP {p.http_status}" if p.http_status is not None else "no response"
        _page_log.info(
            "%s %s %s %s ms %s bytes",
            "ok" if p.ok else p.error_code,
            p.url,
            status,
            p.elapsed_ms if p.elapsed_ms is not None else "?",
            p.bytes if p.bytes is not None else 0,
        )
        if not self.enabled:
            return
        if not p.ok:
            # Which page and why, on a line of its own (cleared bar first on a tty).
            clear = "\r\x1b[K" if self.tty else ""
            why = " ".join((p.error_message or "").split())
            hint = _next_step(p.error_code)
            sys.stderr.write(f"{clear}failed: {p.url} {p.error_code}: {why}{hint}\n")
        rate = self.this_run / max(1e-6, time.monotonic() - self.start)
        frac = done / max(1, self.total)
        if self.tty:
            width = 30
            fill = int(frac * width)
            line = (
                f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} "
                f"ok {self.ok} failed {self.failed} {rate:.1f} pages/s "
            )
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                click.echo(
                    f"progress: {done}/{self.total} ok {self.ok} failed {self.failed} "
                    f"{rate:.1f} pages/s",
                    err=True,
                )

    def close(self) -> None:
        if self.enabled and self.tty and self.this_run:
            sys.stderr.write("\n")


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


# Each command: the module that defines it and the first paragraph of its help, so
# that 'bulk --help' and 'bulk --version' list them without importing any (a command's
# module, with what it imports, is most of the CLI's start-up time). A test renders
# 'bulk --help' both ways and checks this table against the commands' own help.
COMMANDS: Final[Mapping[str, tuple[str, str]]] = {
    "admin": (
        "_serve_cmds",
        "Accounts, API keys, credits and the ledger audit (works on the service's --db).",
    ),
    "archive": (
        "_archive_cmd",
        "Archive SITE (a domain, an origin or a sitemap URL), or the URLs of --urls FILE, "
        "as a ZIP of screenshots.",
    ),
    "connector": (
        "_node_cmd",
        "Run a connector: capture a private network's pages for the service's requests that "
        "name this connector (connector_id), through one outbound WebSocket (reconnected "
        "with backoff). Its pages pass its own address policy. Runs in the foreground "
        "(SIGTERM: stop).",
    ),
    "diff": (
        "_diff_cmd",
        "Compare two archives of a site (OLD.zip, NEW.zip): pages added, removed, changed.",
    ),
    "discover": (
        "_capture_cmds",
        "Print the page URLs the sitemaps of SITE list, in sitemap order (what archive "
        "captures).",
    ),
    "node": (
        "_node_cmd",
        "Run a browser node: Playwright's browser server with this machine's Chromium, "
        "every page behind bulk's egress proxy and address policy (--allow-private, --allow).",
    ),
    "serve": (
        "_serve_cmds",
        "Run the HTTP API and its job runner in the foreground (SIGTERM: graceful stop).",
    ),
    "shot": (
        "_capture_cmds",
        "Capture one URL into an image file (the same engine as archive).",
    ),
}


class _LazyGroup(click.Group):
    """The top-level group: a command's module is imported when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            load_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own layout, with the table's help for the commands not loaded.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # A stand-in with the table's help is shortened as the command's own is.
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load_command(name: str) -> None:
    """Import the module that defines the top-level command ``name`` (it registers it)."""
    import importlib

    importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="bulk")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
def cli(verbose: bool) -> None:
    """bulk: screenshot every page a site's sitemaps list, into one ZIP.

    Exit codes: 0 ok, 1 error (nothing could be done), 2 usage, 3 partial
    (some pages failed), 4 interrupted (``bulk archive ... --resume`` continues).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _share(share: float) -> str:
    return f"{share * 100:.2f}%" if share >= 0.0001 else f"{share * 100:.4f}%"
