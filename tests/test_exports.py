"""The public face of the library: pinned, sorted, every name resolves, and type
checkers see each name's real type (not ``Any``) in an installed copy."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bulk
from tests.sitekit import ROOT

EXPECTED = [
    "APIKeyRequired",
    "ApiConfig",
    "ArchiveInfo",
    "BrowserCrashed",
    "BrowserPool",
    "BrowserUnavailable",
    "BulkError",
    "CaptureError",
    "CaptureOptions",
    "CaptureSession",
    "CaptureTimeout",
    "Cookie",
    "DiscoverLimits",
    "Discovery",
    "DiscoveryError",
    "DownloadExpired",
    "DownloadRefused",
    "EgressPolicy",
    "EmailTaken",
    "EndpointNotFound",
    "FetchError",
    "FetchLimits",
    "HTTPStatusError",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "Interrupted",
    "InvalidAPIKey",
    "InvalidSitemap",
    "InvalidURL",
    "JobNotFound",
    "JobNotReady",
    "JobRunner",
    "KeyLimitReached",
    "Layout",
    "Ledger",
    "MethodNotAllowed",
    "NavigationError",
    "NoPagesCaptured",
    "NoSitemapFound",
    "NoURLsFound",
    "PageRecord",
    "PageTooLarge",
    "PayloadTooLarge",
    "PoolConfig",
    "RateLimitExceeded",
    "ResponseTooLarge",
    "ResumeMismatch",
    "RunnerConfig",
    "Screenshot",
    "SelectorNotFound",
    "ServiceConfig",
    "Settings",
    "SitemapParser",
    "URLBlocked",
    "ValidationError",
    "__version__",
    "archive_site",
    "build_zip",
    "create_app",
    "discover",
    "discover_all",
    "entry_name",
    "find_chromium",
    "is_public_address",
    "open_egress_proxy",
    "open_fetcher",
    "parse_robots",
    "root_folder",
    "serve",
    "write_zip",
]


def test_all_is_pinned_and_sorted() -> None:
    assert bulk.__all__ == sorted(EXPECTED)


def test_every_name_resolves() -> None:
    for name in bulk.__all__:
        assert getattr(bulk, name) is not None, name


def test_every_error_has_a_unique_code() -> None:
    errors = [getattr(bulk, n) for n in bulk.__all__ if isinstance(getattr(bulk, n), type)]
    codes = [e.code for e in errors if issubclass(e, bulk.BulkError)]
    assert len(codes) == len(set(codes))
    assert all(c.isupper() and " " not in c for c in codes)


def test_import_is_cheap() -> None:
    # `import bulk` must not pull Playwright, lxml or Starlette (the bootstrap imports it).
    code = (
        "import sys, bulk; "
        "print(sorted(m for m in ('playwright', 'lxml', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the ``if TYPE_CHECKING:`` imports in bulk/__init__.py."""
    tree = ast.parse((ROOT / "bulk" / "__init__.py").read_text())
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1 and imp.module
                for alias in imp.names:
                    assert alias.asname is None
                    out[alias.name] = imp.module
    return out


def test_type_checkers_see_the_same_names_as_the_lazy_loader() -> None:
    assert _type_checking_imports() == bulk._EXPORTS
    assert sorted([*bulk._EXPORTS, "__version__"]) == bulk.__all__


@pytest.mark.slow
def test_installed_package_is_typed(tmp_path: Path) -> None:
    # A real (non-editable) install: build the wheel from a copy of the project, unpack
    # it as site-packages, and type-check a user's script against it.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "bulk", src / "bulk", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("bulk-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        assert "bulk/py.typed" in zf.namelist()
        zf.extractall(site)
    user = tmp_path / "user"
    user.mkdir()
    names = [n for n in bulk.__all__ if n != "__version__"]
    script = user / "script.py"
    script.write_text(
        "from bulk import __version__, "
        + ", ".join(names)
        + "\n"
        + "reveal_type(__version__)\n"
        + "".join(f"reveal_type({n})\n" for n in names)
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MYPYPATH", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--python-executable",
            sys.executable,
            "--config-file",
            os.devnull,
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=user,
        env=env,
    )
    revealed = [line for line in result.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == len(names) + 1, result.stdout
    assert result.returncode == 0, result.stdout
    anys = [line for line in revealed if '"Any"' in line]
    assert anys == [], result.stdout
    assert revealed[0].endswith('Revealed type is "str"')
    # The class itself (wherever in the package it lives), not Any.
    ledger_type = re.compile(r"bulk\._ledger\.(\w+\.)*Ledger\b")
    assert any(ledger_type.search(line) for line in revealed), result.stdout
