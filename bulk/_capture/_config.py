"""How the capture pool runs: ``PoolConfig``, the default concurrency, and the fixed
time limits of cleanup that every part of the engine shares."""

from __future__ import annotations

import os
from typing import Final

import attrs

from .._sandbox import SandboxConfig

__all__ = ["CLEANUP_TIMEOUT", "CLOSE_TIMEOUT", "PoolConfig", "default_concurrency"]

# Closing a browser, Playwright or a whole pool; a cancelled bridge call waits this
# long for the asyncio task's own cleanup.
CLEANUP_TIMEOUT: Final = 15.0
# One page close; a renderer stuck in JS is crashed after this and closed again.
CLOSE_TIMEOUT: Final = 2.0


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
    """

    executable: str
    concurrency: int = attrs.field(factory=default_concurrency)
    page_reuse: int = attrs.field(default=20)
    launch_timeout: float = 30.0
    extra_args: tuple[str, ...] = ()
    nice: int = attrs.field(default=0, validator=attrs.validators.in_(range(20)))
    sandbox: SandboxConfig = attrs.field(factory=SandboxConfig)

    @concurrency.validator
    def _check_concurrency(self, _: object, value: int) -> None:
        if not 1 <= value <= 64:
            raise ValueError("concurrency must be between 1 and 64")

    @page_reuse.validator
    def _check_page_reuse(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("page_reuse must be at least 1")
