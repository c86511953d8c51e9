"""``bulk discover`` and ``bulk shot``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .._exceptions import BulkError
from .._options import capture_option_decorators
from ._common import (
    _DISCOVER_BUFFER,
    MAX_PAGES_CLI,
    _apply,
    _browser_options,
    _capture_options,
    _discover_limits,
    _discovery_warnings,
    _fail,
    _max_sitemaps_option,
    _network_options,
    _policy,
    _pool_config,
    _run_or_exit,
    _settings,
    cli,
)


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
    import trio

    from .._discover import discover
    from .._fetch import open_fetcher
    from .._util import receive_batch

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
                    while batch := await receive_batch(recv, _DISCOVER_BUFFER):
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
@_browser_options
@_network_options
@_apply(capture_option_decorators())
def shot(
    url: str,
    out: Path,
    allow_private: bool,
    allow: tuple[str, ...],
    browsers: tuple[str, ...],
    browser_slots: int | None,
    no_local_browser: bool,
    **values: Any,
) -> None:
    """Capture one URL into an image file (the same engine as archive)."""
    import trio

    from .._capture import BrowserPool

    settings = _settings()
    options = _capture_options(values, out)
    policy = _policy(allow_private, allow, settings)
    config = _pool_config(
        1,
        settings,
        browsers=browsers,
        browser_slots=browser_slots or 1,
        no_local_browser=no_local_browser,
    )
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
