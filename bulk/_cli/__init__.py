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

import signal
import threading
from typing import Final

import click

from .._exceptions import InvalidURL, ResumeMismatch
from ._common import (
    COMMANDS,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    _Exit,
    cli,
)

__all__ = ["COMMANDS", "EXIT_CODES", "cli", "main"]

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
