"""``bulk diff``: what changed between two archives of a site."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .._exceptions import BulkError, ValidationError
from ._common import (
    EXIT_CHANGED,
    _Exit,
    _fail,
    _share,
    cli,
)


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
    from .._diff import DEFAULT_MIN_CHANGE, DiffOptions, compare_archives, files_dir_for
    from .._diff import write_report as write_diff_report

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
