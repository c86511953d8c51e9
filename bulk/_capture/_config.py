"""How the capture pool runs: ``PoolConfig``, the default concurrency, and the fixed
time limits of cleanup that every part of the engine shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

import attrs

from .._exceptions import ValidationError
from .._sandbox import SandboxConfig

__all__ = [
    "CLEANUP_TIMEOUT",
    "CLOSE_TIMEOUT",
    "DEFAULT_REMOTE_SLOTS",
    "PoolConfig",
    "RemoteEndpoint",
    "default_concurrency",
]

# Closing a browser, Playwright or a whole pool; a cancelled bridge call waits this
# long for the asyncio task's own cleanup.
CLEANUP_TIMEOUT: Final = 15.0
# One page close; a renderer stuck in JS is crashed after this and closed again.
CLOSE_TIMEOUT: Final = 2.0


# Pages a remote browser captures at once when neither --browser-slots nor #slots= says.
DEFAULT_REMOTE_SLOTS: Final = 4


@attrs.frozen
class RemoteEndpoint:
    """A remote Playwright browser server (``bulk node``): ``ws://HOST:PORT/TOKEN``.

    Args:
        url: The endpoint as Playwright's ``connect`` takes it (without ``#slots=``).
        slots: Pages captured there at the same time.
    """

    url: str
    slots: int = DEFAULT_REMOTE_SLOTS

    @property
    def name(self) -> str:
        """``ws://HOST:PORT``: the endpoint without its path, which is its secret."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def parse(cls, text: str, default_slots: int | None = None) -> RemoteEndpoint:
        """``ws://HOST:PORT/PATH`` or ``wss://...``, optionally ``#slots=N`` (1-64).

        Raises:
            ValidationError: Not a ws(s) URL with a host, or a bad ``slots``.
        """
        parts = urlsplit(text.strip())
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValidationError(
                f"--browser must be a ws://HOST:PORT/PATH URL, not {text!r}", field="browser"
            )
        slots = default_slots or DEFAULT_REMOTE_SLOTS
        if parts.fragment:
            given = parse_qs(parts.fragment).get("slots", [""])[-1]
            if not given.isdigit():
                raise ValidationError(
                    "a --browser URL's fragment must be #slots=N", field="browser"
                )
            slots = int(given)
        if not 1 <= slots <= 64:
            raise ValidationError("browser slots must be between 1 and 64", field="browser")
        return cls(parts._replace(fragment="").geturl(), slots)


def default_concurrency() -> int:
    """Pages captured at once by default: measured best on 2-8 cores (see scripts/bench)."""
    return max(2, min(8, (os.cpu_count() or 2) * 2))


@attrs.frozen(kw_only=True)
class PoolConfig:
    """How the pool runs Chromium.

    Args:
        executable: The Chromium binary (``_config.find_chromium``).
        concurrency: Pages capturing at the same time, across all sessions.
        page_reuse: Captures a page serves before it is replaced by a fresh one.
        launch_timeout: Seconds Chromium gets to start.
        extra_args: More Chromium switches (appended after bulk's own).
        nice: CPU niceness (0-19) of the capture side: Playwright's thread in this
            process, its driver and Chromium. ``bulk serve`` raises it so the API
            answers at once while captures use the rest of the CPU.
        sandbox: How Chromium is isolated: its user, sandbox, network namespace and
            memory bounds (``_sandbox.py``).
        local: Whether Chromium is launched on this machine (``--no-local-browser``).
        remotes: Remote browser servers (``bulk node``) captures also go to.
        status_file: Where the pool keeps its sources' state as JSON for
            ``bulk admin browsers`` (None: nowhere).
    """

    executable: str
    concurrency: int = attrs.field(factory=default_concurrency)
    page_reuse: int = attrs.field(default=20)
    launch_timeout: float = 30.0
    extra_args: tuple[str, ...] = ()
    nice: int = attrs.field(default=0, validator=attrs.validators.in_(range(20)))
    sandbox: SandboxConfig = attrs.field(factory=SandboxConfig)
    local: bool = True
    remotes: tuple[RemoteEndpoint, ...] = ()
    status_file: Path | None = None

    def __attrs_post_init__(self) -> None:
        if not self.local and not self.remotes:
            raise ValueError("without the local browser, at least one remote browser is needed")

    @property
    def slots(self) -> int:
        """Pages captured at once across every source."""
        return (self.concurrency if self.local else 0) + sum(r.slots for r in self.remotes)

    @concurrency.validator
    def _check_concurrency(self, _: object, value: int) -> None:
        if not 1 <= value <= 64:
            raise ValueError("concurrency must be between 1 and 64")

    @page_reuse.validator
    def _check_page_reuse(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("page_reuse must be at least 1")
