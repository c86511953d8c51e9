"""``bulk node``: a browser machine that coordinators capture on; ``bulk connector``:
one inside a private network, that dials out to the service."""

from __future__ import annotations

import functools

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


@cli.command()
@click.option(
    "--server",
    required=True,
    metavar="URL",
    help="The service's URL, e.g. https://bulk.example.com (the tunnel is dialled out "
    "to it; nothing listens here).",
)
@click.option(
    "--token",
    envvar="BULK_CONNECTOR_TOKEN",
    required=True,
    metavar="pxc_...",
    help="The connector's token (POST /api/v1/connectors shows it once). Also "
    "BULK_CONNECTOR_TOKEN.",
)
@click.option(
    "--allow-private/--private-networks-only",
    default=False,
    help="Allow every private and link-local target; by default only the private "
    "networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), not link-local "
    "(cloud metadata) nor this machine.",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="HOST|CIDR",
    help="Also allow this host name or address range, e.g. 127.0.0.1 (repeatable; "
    "bulk's own ports stay refused).",
)
def connector(server: str, token: str, allow_private: bool, allow: tuple[str, ...]) -> None:
    """Run a connector: capture a private network's pages for the service's
    requests that name this connector (connector_id), through one outbound
    WebSocket (reconnected with backoff). Its pages pass its own address policy.
    Runs in the foreground (SIGTERM: stop).
    """
    import trio

    from .._config import find_chromium
    from .._connector import PRIVATE_NETWORKS, ConnectorConfig, run_connector, tunnel_url

    settings = _settings()
    policy = _policy(allow_private, (*PRIVATE_NETWORKS, *allow), settings)
    try:
        tunnel_url(server)
        config = ConnectorConfig(
            server=server,
            token=token.strip(),
            executable=find_chromium(settings.chromium),
            policy=policy,
        )
    except BulkError as exc:
        _fail(exc)

    def status(line: str) -> None:
        click.echo(f"bulk: connector {line}", err=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(run_connector, config, on_status=status))
            status(f"started; dialling {tunnel_url(server)}")

    try:
        _run(main)
    except Interrupted:
        click.echo("bulk: connector stopped", err=True)
        raise _Exit(EXIT_OK) from None
    except BulkError as exc:
        _fail(exc)
