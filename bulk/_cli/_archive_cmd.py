"""``bulk archive`` (and ``--compare-with``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from .._exceptions import BulkError, Interrupted, ValidationError
from .._options import capture_option_decorators

if TYPE_CHECKING:
    from .._discover import Discovery
    from .._offline import ArchiveResult
from ._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    MAX_PAGES_CLI,
    _apply,
    _Bar,
    _browser_options,
    _capture_options,
    _discover_limits,
    _discovery_warnings,
    _Exit,
    _fail,
    _host_warning,
    _human,
    _max_sitemaps_option,
    _network_options,
    _policy,
    _pool_config,
    _run,
    _settings,
    _share,
    cli,
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
@_browser_options
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
    browsers: tuple[str, ...],
    browser_slots: int | None,
    no_local_browser: bool,
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
    # Imported here, not at the top: `bulk --help` must not load Playwright.
    from .._capture import BrowserPool
    from .._fetch import open_fetcher
    from .._offline import archive_site, archive_urls, check_root_name
    from .._urllist import parse_url_lines, prepare_url_list

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
    config = _pool_config(
        concurrency,
        settings,
        browsers=browsers,
        browser_slots=browser_slots,
        no_local_browser=no_local_browser,
    )
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
    from .._diff import open_snapshot

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
    from .._diff import compare_archives, files_dir_for, write_report

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
