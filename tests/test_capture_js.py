"""The in-page scripts (``bulk/_capture/js/*.js``): linted, one expression each, all used.

ESLint (pinned in ``tests/js/package-lock.json``, installed there by ``./scripts/test``)
checks every file with ``tests/js/eslint.config.mjs``: it must parse, use only browser
globals, and be one expression (a function, or a function called at once), which is
what Playwright evaluates. The same checker is fed broken snippets to prove it fails.
Never skipped: without node or ESLint these tests fail and say how to install them.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bulk._capture import _scripts

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bulk" / "_capture"
JS_DIR = PACKAGE / "js"
TOOLS = ROOT / "tests" / "js"
ESLINT = TOOLS / "node_modules" / "eslint" / "bin" / "eslint.js"
CONFIG = TOOLS / "eslint.config.mjs"


def eslint(*args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    """Run the pinned ESLint from the repository root; its JSON report, one entry a file."""
    node = shutil.which("node")
    assert node, "node is not installed: run ./scripts/test (it installs nodejs and npm)"
    assert ESLINT.is_file(), "ESLint is not installed: run ./scripts/test (npm ci in tests/js)"
    proc = subprocess.run(
        [node, str(ESLINT), "--config", str(CONFIG), "--format", "json", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # 0: clean, 1: problems found; anything else is ESLint itself failing.
    assert proc.returncode in (0, 1), proc.stderr
    report: list[dict[str, Any]] = json.loads(proc.stdout)
    return report


def problems(entry: dict[str, Any]) -> list[str]:
    return [
        f"{entry['filePath']}:{m.get('line')}:{m.get('column')}: {m['message']} ({m.get('ruleId')})"
        for m in entry["messages"]
    ]


def lint_snippet(text: str) -> list[str]:
    """Lint ``text`` as if it were a file in ``bulk/_capture/js``."""
    [entry] = eslint("--stdin", "--stdin-filename", str(JS_DIR / "snippet.js"), stdin=text)
    return problems(entry)


def js_files() -> set[str]:
    return {p.name for p in JS_DIR.glob("*.js")}


def loaded_constants() -> dict[str, str]:
    """``_scripts``' constants made by ``_load("file.js")``: constant name -> file name."""
    tree = ast.parse((PACKAGE / "_scripts.py").read_text())
    out: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "_load"
        ):
            arg = node.value.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            out[node.target.id] = arg.value
    return out


def test_every_script_lints_clean() -> None:
    files = sorted(JS_DIR.glob("*.js"))
    assert files
    report = eslint(*map(str, files))
    # Every file was really linted (none ignored by a pattern).
    assert sorted(Path(e["filePath"]) for e in report) == files
    found = [p for entry in report for p in problems(entry)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        pytest.param("async (x) => {\n  return x +;\n}\n", "Parsing error", id="syntax-error"),
        pytest.param("(() => {\n", "Parsing error", id="unclosed"),
        pytest.param("const x = 1;\n", "one expression", id="a-statement"),
        pytest.param("(a) => a\n;(b) => b\n", "one expression", id="two-expressions"),
        pytest.param("[1, 2]\n", "one expression", id="not-a-function"),
        pytest.param("alert('x')\n", "one expression", id="a-call-of-a-name"),
        pytest.param("() => documnt.title\n", "'documnt' is not defined", id="typo-global"),
        pytest.param("import x from 'y';\n", "Parsing error", id="a-module"),
    ],
)
def test_the_checker_fails_on_broken_scripts(snippet: str, expected: str) -> None:
    found = lint_snippet(snippet)
    assert any(expected in p for p in found), found


def test_the_checker_passes_a_good_snippet() -> None:
    # The control for the cases above: the same route, a valid script, no complaint.
    assert lint_snippet("async (ms) => {\n  await new Promise(r => setTimeout(r, ms));\n}\n") == []
    assert lint_snippet("(() => {\n  window.x = 1;\n})();\n") == []


def test_every_file_is_loaded_and_every_loaded_one_exists() -> None:
    by_source = set(loaded_constants().values())
    assert by_source == js_files()
    assert set(_scripts.LOADED) == js_files()
    for name, text in _scripts.LOADED.items():
        assert text == (JS_DIR / name).read_text(encoding="utf-8")


def test_every_loaded_script_is_used() -> None:
    # The engine and the steps refer to the scripts as ``js.NAME`` (``_scripts as js``).
    used: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        if path.name == "_scripts.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "js"
            ):
                used.add(node.attr)
    constants = set(loaded_constants())
    assert constants - used == set(), "loaded but never used"
    assert used - constants == set(), "used but not loaded"
