"""The ``bulk`` command line: a thin click skin over the library.

stdout is machine-readable (JSON or one URL per line); progress and the one-line
summary go to stderr. Errors are one stderr line that starts with the stable code.

Exit codes:
    0  OK           everything asked for was done
    1  ERROR        nothing could be done (no sitemap, blocked, every page failed, ...)
    2  USAGE        bad arguments or options (VALIDATION_ERROR, INVALID_URL, RESUME_MISMATCH,
                    OUTPUT_EXISTS: --force or --resume says what to do with earlier work)
    3  PARTIAL      the archive was written but some pages failed (see _manifest.json)
    4  INTERRUPTED  Ctrl-C or SIGTERM; ``bulk archive ... --resume`` continues the run
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click
import trio
from click.core import ParameterSource

from ._capture import BrowserPool, PoolConfig, default_concurrency
from ._config import Settings, find_chromium
from ._discover import DiscoverLimits, Discovery, discover, max_sitemaps_for, same_host_key
from ._exceptions import BulkError, Interrupted, InvalidURL, ResumeMismatch, ValidationError
from ._fetch import open_fetcher
from ._jobs import ArchiveResult, Progress, archive_site, archive_urls, check_root_name
from ._ledger import Ledger
from ._options import OPTION_SPECS, CaptureOptions, capture_option_decorators, options_from_cli
from ._policy import EgressPolicy
from ._urllist import parse_url_lines, prepare_url_list
from ._urls import parse_http_url
from ._util import single_error
from ._version import __version__

__all__ = ["EXIT_CODES", "cli", "main"]

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
                " (this machine: only --allow HOST|CIDR lets bulk reach it,"
                " e.g. --allow 127.0.0.1)"
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
    try:
        return Settings.from_env()
    except BulkError as exc:
        _fail(exc)


def _policy(allow_private: bool, allow: tuple[str, ...], settings: Settings) -> EgressPolicy:
    try:
        return EgressPolicy(
            allow_private=allow_private or settings.allow_private,
            allow=tuple(allow) + settings.allow,
        )
    except BulkError as exc:
        _fail(exc)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` with SIGTERM/SIGHUP treated like Ctrl-C: unwind cleanly, exit 4."""

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


def _pool_config(concurrency: int | None, settings: Settings, nice: int = 0) -> PoolConfig:
    try:
        executable = find_chromium(settings.chromium)
    except BulkError as exc:
        _fail(exc)
    return PoolConfig(
        executable=executable,
        concurrency=concurrency or default_concurrency(),
        nice=nice,
        sandbox=settings.sandbox,
    )


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
    picked = {k: values.pop(k) for k in list(values) if k in _OPTION_NAMES}
    if out is not None and picked.get("format") is None:
        suffix = out.suffix.lower().lstrip(".")
        picked["format"] = {"jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "pdf": "pdf"}.get(
            suffix
        )
    try:
        return options_from_cli(picked)
    except BulkError as exc:
        _fail(exc)


# Every capture option the schema defines (the engine's new ones included).
_OPTION_NAMES: Final = frozenset(spec.name for spec in OPTION_SPECS)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


@cli.command()
@click.argument("site", required=False)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ZIP to write.",
)
@click.option(
    "--urls",
    "urls_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    metavar="FILE",
    help="Archive the URLs listed in FILE ('-': stdin) instead of a site: one URL a "
    'line, or JSON lines {"url": ..., "options": {...}} with per-URL options.',
)
@click.option(
    "--max-pages",
    type=click.IntRange(1, MAX_PAGES_CLI),
    default=100,
    show_default="100; a --urls list: all of it",
    help="Capture at most this many pages; a cut list is reported on stderr, in the "
    "JSON summary, the manifest and the gallery.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Pages captured at once [default: 2 per core, 2 to 8].",
)
@_max_sitemaps_option
@click.option("--same-host", is_flag=True, help="Only pages on the site's own host.")
@click.option(
    "--name",
    default=None,
    help="The ZIP's root folder [default: screenshots-<host>-<date>].",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing OUT and discard an unfinished run of it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--compare-with",
    "previous",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An earlier archive of the site: once OUT is written, say what changed (stderr) "
    "and write the report beside OUT (site.zip -> site.changes.html).",
)
@_network_options
@_apply(capture_option_decorators())
@click.pass_context
def archive(
    ctx: click.Context,
    /,
    site: str | None,
    out: Path,
    urls_file: Any,
    max_pages: int,
    concurrency: int | None,
    max_sitemaps: int | None,
    same_host: bool,
    name: str | None,
    resume: bool,
    force: bool,
    quiet: bool,
    previous: Path | None,
    allow_private: bool,
    allow: tuple[str, ...],
    **values: Any,
) -> None:
    """Archive SITE (a domain, an origin or a sitemap URL), or the URLs of --urls FILE,
    as a ZIP of screenshots.

    Writes OUT.partial and renames it to OUT only when complete; a summary goes to
    stderr and a JSON summary to stdout (also after an interruption, exit 4). An
    existing OUT is replaced only with --force; an unfinished run of OUT is continued
    with --resume or discarded with --force. With --compare-with, the changes since that
    archive follow (as 'bulk diff' finds them; "changes" in the JSON).
    """
    if (site is None) == (urls_file is None):
        _fail(ValidationError("give SITE or --urls FILE (one of the two)", field="site"))
    settings = _settings()
    if previous is not None:
        _check_archive(previous, out)
    options = _capture_options(values)
    policy = _policy(allow_private, allow, settings)
    if name is not None:
        try:
            check_root_name(name)
        except BulkError as exc:
            _fail(exc)
    limits = _discover_limits(max_pages, same_host, max_sitemaps)
    url_list = None
    label = site or ""
    if urls_file is not None:
        source = "stdin" if urls_file.name == "<stdin>" else str(urls_file.name)
        try:
            url_list = prepare_url_list(
                parse_url_lines(urls_file, source), options, policy, field=source, limit=None
            )
        except BulkError as exc:
            _fail(exc)
        label = url_list.first_url
    explicit_limit = ctx.get_parameter_source("max_pages") is not ParameterSource.DEFAULT
    config = _pool_config(concurrency, settings)
    bar = _Bar(not quiet)
    out = out.resolve()

    def warn(message: str) -> None:
        # Discovery ends while pages are captured: clear the bar's line first.
        clear = "\r\x1b[K" if bar.tty and bar.enabled and bar.this_run else ""
        click.echo(f"{clear}warning: {message}", err=True)

    def note(message: str) -> None:
        click.echo(f"note: {message}", err=True)

    def discovered(result: Discovery, hosts: Any) -> None:
        for line in _discovery_warnings(result, limits):
            warn(line)
        if not same_host and site is not None:
            hosts_line = _host_warning(result.site or site, dict(hosts))
            if hosts_line is not None:
                warn(hosts_line)

    async def go() -> ArchiveResult:
        async with BrowserPool.open(config, policy) as pool:
            if url_list is not None:
                return await archive_urls(
                    url_list,
                    out,
                    options=options,
                    pool=pool,
                    policy=policy,
                    limit=max_pages if explicit_limit else None,
                    resume=resume,
                    force=force,
                    name=name,
                    on_progress=bar,
                    on_note=note,
                )
            assert site is not None
            async with open_fetcher(policy) as fetcher:
                return await archive_site(
                    site,
                    out,
                    options=options,
                    limits=limits,
                    pool=pool,
                    fetcher=fetcher,
                    resume=resume,
                    force=force,
                    name=name,
                    on_progress=bar,
                    on_note=note,
                    on_discovered=discovered,
                )

    try:
        result = _run(go)
    except Interrupted as exc:
        bar.close()
        # Scripts read stdout: what was done so far, even after an interruption.
        click.echo(
            json.dumps(
                {
                    "site": label,
                    "output": None,
                    "interrupted": True,
                    "pages": bar.total,
                    "ok": bar.ok,
                    "failed": bar.failed,
                    "seconds": round(time.monotonic() - bar.start, 2),
                    "resumed": resume,
                    "work": str(out.with_name(out.name + ".work")),
                }
            )
        )
        click.echo(
            f"{exc.code}: {exc.message}; run the same command with --resume to continue",
            err=True,
        )
        raise _Exit(EXIT_INTERRUPTED) from None
    except BulkError as exc:
        bar.close()
        _fail(exc)
    bar.close()
    job = result.job
    seconds = result.elapsed
    rate = result.captured / seconds if seconds > 0 else 0.0
    found = job.discovery or {}
    truncated = bool(found.get("truncated"))
    summary = {
        "site": label,
        "output": str(result.out) if result.out else None,
        "size": job.zip_size if result.out else None,
        "pages": job.total,
        "ok": job.ok,
        "failed": job.failed,
        "truncated": truncated,
        "found": found.get("found") if truncated else None,
        "seconds": round(seconds, 2),
        "pages_per_second": round(rate, 2),
        "resumed": result.resumed,
    }
    if url_list is not None:
        summary["deduplicated"] = url_list.deduplicated
    changes: list[str] = []
    if previous is not None and result.out is not None:
        summary["changes"], changes = _compare_after_archive(previous, result.out)
    click.echo(json.dumps(summary))
    if url_list is not None and truncated:
        warn(
            f"--max-pages {max_pages} cut the list: it has {len(url_list.items)} distinct "
            f"URLs, only the first {job.total} are taken"
        )
    if result.out is None:
        click.echo(f"{job.error_code}: {job.error_message}", err=True)
        raise _Exit(EXIT_ERROR)
    cut = (
        f" (not all: {found.get('found') or 'more'} URLs listed, see the warning)"
        if truncated
        else ""
    )
    click.echo(
        f"bulk: {job.ok} ok, {job.failed} failed{cut} in {seconds:.1f} s ({rate:.1f} pages/s) "
        f"-> {result.out} ({_human(job.zip_size or 0)})",
        err=True,
    )
    for line in changes:
        click.echo(line, err=True)
    raise _Exit(EXIT_PARTIAL if job.failed else EXIT_OK)


def _check_archive(path: Path, out: Path) -> None:
    """Fail now (before any capture) when ``path`` is not a readable bulk ZIP, or is
    OUT itself (the new archive would replace it before the comparison)."""
    from ._diff import open_snapshot

    if path.resolve() == out.resolve():
        _fail(ValidationError("--compare-with must name another file than -o OUT"))
    try:
        with open_snapshot(path):
            pass
    except BulkError as exc:
        _fail(exc)


def changes_report_for(out: Path) -> Path:
    """Where ``bulk archive --compare-with`` writes its report: beside OUT."""
    return out.with_name(f"{out.name.removesuffix('.zip')}.changes.html")


def _compare_after_archive(previous: Path, out: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The change summary (for the JSON) and its stderr lines; a failure to compare
    is a warning: the archive itself was written."""
    from ._diff import compare_archives, files_dir_for, write_report

    report = changes_report_for(out)
    try:
        diff = compare_archives(previous, out, files=files_dir_for(report))
        write_report(diff, report)
    except (BulkError, OSError) as exc:
        what = f"{exc.code}: {exc.message}" if isinstance(exc, BulkError) else str(exc)
        return None, [f"warning: the comparison with {previous} failed: {what}"]
    lines = [f"changes since {previous.name}: {diff.summary_line()} -> {report}"]
    lines += [f"changed: {_share(c.share)} {c.url}" for c in diff.changed[:20]]
    if len(diff.changed) > 20:
        lines.append(f"... and {len(diff.changed) - 20} more changed pages (see the report)")
    return {**diff.counts(), "report": str(report)}, lines


def _share(share: float) -> str:
    return f"{share * 100:.2f}%" if share >= 0.0001 else f"{share * 100:.4f}%"


@cli.command(name="diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the HTML report here (its images go in <name>_files/ beside it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--exit-code",
    "exit_code",
    is_flag=True,
    help=f"Exit {EXIT_CHANGED} when a page was added, removed or changed (0 when none was).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Per pixel: how different a colour must be to count (YIQ distance, as pixelmatch; "
    "anti-aliasing never counts).",
)
@click.option(
    "--min-change",
    type=click.FloatRange(0, 1),
    default=None,
    help="Per page: the share of pixels (0..1) that must change for the page to count  "
    "[default: 0.00001].",
)
def diff_cmd(
    old: Path,
    new: Path,
    out: Path | None,
    as_json: bool,
    exit_code: bool,
    threshold: float,
    min_change: float | None,
) -> None:
    """Compare two archives of a site (OLD.zip, NEW.zip): pages added, removed, changed.

    Pages are matched by URL through the manifests; identical images (same sha256) are
    never decoded. stdout: one line per changed/added/removed page, or with --json one
    object {"added", "removed", "changed": [{"url", "changed_pixels", "share", "boxes",
    "diff_entry"}...], "unchanged", "failed", ...}; a summary line goes to stderr.
    Exit 0 when compared, 5 with --exit-code when something changed, 2 when a file is
    not a bulk archive (INVALID_ARCHIVE) or the report cannot be written.
    """
    from ._diff import DEFAULT_MIN_CHANGE, DiffOptions, compare_archives, files_dir_for
    from ._diff import write_report as write_diff_report

    options = DiffOptions(
        threshold=threshold,
        min_change=DEFAULT_MIN_CHANGE if min_change is None else min_change,
    )
    try:
        result = compare_archives(
            old, new, options=options, files=files_dir_for(out) if out else None
        )
        if out is not None:
            write_diff_report(result, out)
    except BulkError as exc:
        _fail(exc)
    except OSError as exc:
        # Where the report goes is the one thing here that can be unwritable: -o.
        _fail(ValidationError(f"the report cannot be written: {exc}", field="output"))
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        for change in result.changed:
            click.echo(f"changed {_share(change.share)} {change.url}")
        for url in result.added:
            click.echo(f"added {url}")
        for url in result.removed:
            click.echo(f"removed {url}")
        for url in result.failed:
            click.echo(f"failed {url}")
    target = f" -> {out}" if out else ""
    click.echo(
        f"bulk diff: {result.summary_line()} in {result.seconds:.1f} s "
        f"({result.decoded} pairs decoded){target}",
        err=True,
    )
    if exit_code and (result.added or result.removed or result.changed):
        raise _Exit(EXIT_CHANGED)


@cli.command(name="discover")
@click.argument("site")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of lines.")
@click.option(
    "--max-pages",
    type=click.IntRange(1, MAX_PAGES_CLI),
    default=100,
    show_default=True,
    help="Stop after this many unique URLs.",
)
@_max_sitemaps_option
@click.option("--same-host", is_flag=True, help="Only URLs on the site's own host.")
@_network_options
def discover_cmd(
    site: str,
    as_json: bool,
    max_pages: int,
    max_sitemaps: int | None,
    same_host: bool,
    allow_private: bool,
    allow: tuple[str, ...],
) -> None:
    """Print the page URLs the sitemaps of SITE list, in sitemap order (what archive captures).

    When a limit cut the list short (saying how many URLs the sitemaps list, when
    known), or a document was broken or skipped, it is said on stderr as
    ``warning:`` lines (the URLs read are still printed).
    """
    settings = _settings()
    policy = _policy(allow_private, allow, settings)
    limits = _discover_limits(max_pages, same_host, max_sitemaps)

    async def go() -> list[str]:
        urls: list[str] = []
        async with open_fetcher(policy) as fetcher:
            send, recv = trio.open_memory_channel[str](_DISCOVER_BUFFER)
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    result = await discover(site, fetcher, send, limits)
                    for line in _discovery_warnings(result, limits):
                        click.echo(f"warning: {line}", err=True)

                nursery.start_soon(run)
                async with recv:
                    # Whatever has arrived, at once: a checkpoint and a write per URL
                    # cost more than reading the URL (1,000,000 URLs: ~30 s of it).
                    ended = False
                    while not ended:
                        try:
                            batch = [await recv.receive()]
                        except trio.EndOfChannel:
                            break
                        while len(batch) < _DISCOVER_BUFFER:
                            try:
                                batch.append(recv.receive_nowait())
                            except trio.WouldBlock:
                                break
                            except trio.EndOfChannel:
                                ended = True
                                break
                        if as_json:
                            urls.extend(batch)
                        else:
                            batch.append("")
                            sys.stdout.write("\n".join(batch))
        return urls

    urls = _run_or_exit(go)
    if as_json:
        click.echo(json.dumps(urls, ensure_ascii=False))


@cli.command()
@click.argument("url")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The image file to write (its extension picks the format unless --format is given).",
)
@_network_options
@_apply(capture_option_decorators())
def shot(url: str, out: Path, allow_private: bool, allow: tuple[str, ...], **values: Any) -> None:
    """Capture one URL into an image file (the same engine as archive)."""
    settings = _settings()
    options = _capture_options(values, out)
    policy = _policy(allow_private, allow, settings)
    config = _pool_config(1, settings)
    try:
        target = policy.check_url(url).href
        for goto in options.goto_urls:
            policy.check_url(goto)
    except BulkError as exc:
        _fail(exc)

    def named(name: str) -> Path:
        # The capture script's extra pictures: next to the image, OUT.NAME.EXT.
        return out.with_name(f"{out.stem}.{name}{out.suffix}")

    async def go() -> Any:
        async with BrowserPool.open(config, policy) as pool:
            shot = await pool.capture(target, options)
        for path, data in [(named(s.name), s.data) for s in shot.shots] + [(out, shot.data)]:
            tmp = path.with_name(path.name + ".partial")
            await trio.Path(tmp).write_bytes(data)
            os.replace(tmp, path)
        return shot

    shot = _run_or_exit(go)
    click.echo(
        json.dumps(
            {
                "url": target,
                "final_url": shot.final_url,
                "output": str(out),
                "format": shot.format,
                "width": shot.width,
                "height": shot.height,
                "bytes": len(shot.data),
                "http_status": shot.http_status,
                "elapsed_ms": round(shot.elapsed * 1000),
                "load": shot.load,
                "pending_hosts": list(shot.pending_hosts),
                "truncated_height": shot.truncated_height,
                "blocked_requests": shot.blocked_requests,
                "pdf_pages": shot.pdf_pages,
                "shots": [
                    {"name": s.name, "output": str(named(s.name)), "bytes": len(s.data)}
                    for s in shot.shots
                ],
            }
        )
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
@_network_options
def serve(
    host: str,
    port: int,
    db: Path,
    data_dir: Path,
    concurrency: int | None,
    allow_private: bool,
    allow: tuple[str, ...],
) -> None:
    """Run the HTTP API and its job runner in the foreground (SIGTERM: graceful stop)."""
    from ._api import RATE_LIMITS, ApiConfig, RateLimit
    from ._service import ServiceConfig
    from ._service import serve as run_service

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
        pool=_pool_config(concurrency, settings, nice=_SERVE_NICE),
        policy=policy,
        download_ttl=settings.download_ttl_seconds,
        api=ApiConfig(rate_limits=limits),
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


# click >= 8.2 raises this for a group called without arguments; older click exits.
_NO_ARGS: Final[type[BaseException]] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (Exception,), {})
)


def _restore_sigint() -> None:
    """Ctrl-C works even when bulk was started with SIGINT ignored.

    A shell starts background jobs of a script (``bulk archive ... &``) with SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: the run could
    not be interrupted and resumed. SIGINT is bulk's documented way to stop a run.
    """
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bulk`` console script; returns the exit code."""
    _restore_sigint()
    try:
        cli.main(args=argv, prog_name="bulk", standalone_mode=False)
    except _Exit as done:
        return done.code
    except _NO_ARGS as exc:
        ctx = getattr(exc, "ctx", None)
        click.echo(ctx.get_help() if ctx is not None else "bulk --help", err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        message = " ".join(exc.format_message().split())
        click.echo(f"VALIDATION_ERROR: {message} (see 'bulk --help')", err=True)
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("INTERRUPTED: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"VALIDATION_ERROR: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except InvalidURL as exc:  # pragma: no cover - commands catch their own
        click.echo(f"{exc.code}: {exc.message}", err=True)
        return EXIT_USAGE
    except ResumeMismatch as exc:  # pragma: no cover
        click.echo(f"{exc.code}: {exc.message}", err=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
