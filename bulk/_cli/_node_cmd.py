"""``bulk node``: a browser machine that coordinators capture on."""

from __future__ import annotations

import click

from .._exceptions import BulkError, Interrupted
from ._common import (
    EXIT_OK,
    _Exit,
    _fail,
    _network_options,
    _policy,
    _run,
    _settings,
    cli,
)


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the browser server listens on (coordinators connect there).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=3000,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--token",
    default=None,
    help="The endpoint's secret path, 16-128 of A-Z a-z 0-9 _ - [default: random, "
    "printed once].",
)
@_network_options
def node(
    host: str, port: int, token: str | None, allow_private: bool, allow: tuple[str, ...]
) -> None:
    """Run a browser node: Playwright's browser server with this machine's Chromium,
    every page behind bulk's egress proxy and address policy (--allow-private, --allow).

    Prints its endpoint, ws://HOST:PORT/TOKEN, once on stdout: give it to
    'bulk serve|archive --browser'. Runs in the foreground (SIGTERM: stop).
    """
    import trio

    from .._config import find_chromium
    from .._node import NodeConfig, new_token, run_node

    settings = _settings()
    policy = _policy(allow_private, allow, settings)
    try:
        executable = find_chromium(settings.chromium)
    except BulkError as exc:
        _fail(exc)
    try:
        config = NodeConfig(
            host=host, port=port, token=token or new_token(), executable=executable, policy=policy
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--token") from None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            endpoint: str = await nursery.start(run_node, config)
            # The only time the token is shown (unless it was given).
            click.echo(endpoint)
            click.echo(f"bulk: node serving on {endpoint.rsplit('/', 1)[0]}", err=True)

    try:
        _run(main)
    except Interrupted:
        click.echo("bulk: node stopped", err=True)
        raise _Exit(EXIT_OK) from None
    except BulkError as exc:
        _fail(exc)
