"""The hostile-input suite's summary: the worst memory and time of its measured runs."""

from __future__ import annotations

import pytest

from tests.security.kit import MEASURED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED:
        return
    by_memory = max(MEASURED, key=lambda m: m[1].peak_rss_mb)
    by_time = max(MEASURED, key=lambda m: m[1].seconds)
    write = terminalreporter.write_line
    write(f"security: {len(MEASURED)} measured bulk runs")
    write(f"  worst peak RSS {by_memory[1].peak_rss_mb:.0f} MB: bulk {by_memory[0]}")
    write(f"  worst time {by_time[1].seconds:.1f} s: bulk {by_time[0]}")
