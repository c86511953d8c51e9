"""What bulk imports is what its package declares.

An undeclared import works by accident (another package pulled it in) until that
package changes its own requirements; then ``pip install bulk`` gives an ImportError.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import httpcore

from bulk._policy import EgressPolicy, PolicyNetworkBackend

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere under bulk/, with the files importing them."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "bulk").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(_canonical(match.group()))
    return names


def test_every_third_party_import_is_declared() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = _declared()
    third_party = {
        module: files
        for module, files in _imports().items()
        if module not in sys.stdlib_module_names and module != "bulk"
    }
    # The walk sees what it should (a broken walk would make the test pass vacuously).
    assert {"httpx", "httpcore", "h11", "trio", "ada_url"} <= third_party.keys()
    undeclared = {}
    for module, files in sorted(third_party.items()):
        distributions = {_canonical(d) for d in providers.get(module, [])}
        assert distributions, f"no installed distribution provides {module} ({sorted(files)})"
        if not distributions & declared:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_no_private_httpcore_modules() -> None:
    # httpcore's private modules change without notice; its public names do not.
    for path in sorted((ROOT / "bulk").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("httpcore._"), (path.name, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("httpcore._"), (path.name, alias.name)


def test_policy_backend_wraps_httpcores_public_trio_backend() -> None:
    # The seam the policy's network backend relies on: a public, trio-native backend.
    backend = PolicyNetworkBackend(EgressPolicy())
    assert isinstance(backend, httpcore.AsyncNetworkBackend)
    assert type(backend._backend) is httpcore.TrioBackend
    assert "TrioBackend" in httpcore.__all__
