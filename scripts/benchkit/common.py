"""Small things every bench script needs: paths, the venv, load, bulk's Chromium."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import urllib.request
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
BULK = VENV / "bin" / "bulk"


def reexec_in_venv(script: str) -> None:
    """Run ``script`` again under the project's .venv (Playwright and bulk live there)."""
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PYTHON.exists():
        raise SystemExit("no .venv yet; run ./scripts/bulk --help once first")
    argv = [str(VENV_PYTHON), str(pathlib.Path(script).resolve()), *sys.argv[1:]]
    os.execv(str(VENV_PYTHON), argv)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line() -> str:
    """Python version, CPUs and load: the first line of every bench's output."""
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
        f" load average {load_average()} (1, 5, 15 min)"
    )


def last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object ({} if none)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def sitemap_urls(sitemap: str, limit: int) -> list[str]:
    """The first ``limit`` ``<loc>`` URLs of one (non-index) sitemap."""
    with urllib.request.urlopen(sitemap, timeout=30) as r:
        text = r.read().decode()
    return re.findall(r"<loc>([^<]+)</loc>", text)[:limit]


def bulk_chromium() -> tuple[str, list[str]]:
    """The Chromium executable bulk drives and bulk's own Chromium switches.

    Read from bulk itself, so the reference loops launch exactly what bulk launches.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bulk._capture._source import CHROMIUM_ARGS as _CHROMIUM_ARGS
    from bulk._config import find_chromium

    return find_chromium(os.environ.get("BULK_CHROMIUM")), list(_CHROMIUM_ARGS)


def bulk_default_concurrency() -> int:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bulk._capture import default_concurrency

    return default_concurrency()
