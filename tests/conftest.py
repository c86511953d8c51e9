"""Shared fixtures: loopback sites, the real CLI, the Chromium the suite drives."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from bulk._config import find_chromium
from tests.sitekit import ROOT, SiteServer, serve_site

# CI runs the same examples every time (a fresh clone has no example database): a
# property that fails there fails on every run, never now and then. Locally,
# hypothesis explores new examples on each run and keeps the failures it finds.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

BULK = [sys.executable, "-m", "bulk._cli"]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run the real ``bulk`` entry point in this process and capture its output."""
    from bulk._cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def run_bulk(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> CliResult:
    """Run ``bulk`` as a separate process (what users' scripts do)."""
    proc = subprocess.run(
        [*BULK, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium the suite drives. Never skipped: CI installs one (scripts/test)."""
    return find_chromium(os.environ.get("BULK_CHROMIUM"))


@pytest.fixture
def basic_site() -> Iterator[SiteServer]:
    with serve_site("basic") as site:
        yield site


@pytest.fixture
def canary() -> Iterator[SiteServer]:
    """A server on 127.0.0.2 that nothing may ever reach (tests allow only 127.0.0.1)."""
    with SiteServer(host="127.0.0.2") as server:
        yield server


def chromium_pids_of(pid: int) -> set[int]:
    """Chromium processes descending from ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
        names[int(entry)] = cmd
    out = set()
    for p, name in names.items():
        if "chrom" not in os.path.basename(name):
            continue
        q = parents.get(p)
        while q and q > 1:
            if q == pid:
                out.add(p)
                break
            q = parents.get(q)
    return out


def all_chromium_pids() -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if "chrom" in os.path.basename(cmd):
                out.add(int(entry))
    return out
