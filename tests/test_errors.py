"""One table of error codes: every code bulk can produce has a class in
``bulk/_exceptions.py`` with its HTTP status and description, and the API, the OpenAPI
document and the README are derived from that table.

The source walk (ast) finds codes however they are written: raised classes, ``code =``
class attributes, and bare code strings (``fail_job(id, "NO_PAGES_CAPTURED", ...)``).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk import _exceptions
from bulk._api import status_of
from bulk._exceptions import BulkError, error_table
from bulk._openapi import openapi_document
from bulk._ratelimit import IN_FLIGHT_LIMITS, RATE_LIMITS
from tests.sitekit import ROOT
from tests.test_imports import modules

# A code: upper case words joined by underscores. Bare strings are only taken for codes
# when they have an underscore (one-word codes like INTERRUPTED are found through
# their classes; single upper-case words are too often something else: GET, OK).
CODE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
BARE_CODE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
# Upper-case strings in the package that are not error codes.
NOT_CODES = {
    "PLAYWRIGHT_BROWSERS_PATH",  # an environment variable
    "PROXY_CONNECT_FAILED",  # a Chromium net error, reported in ``details``
    # the launcher's environment for Chromium, and names of libc/os constants
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_DIRS",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "SC_OPEN_MAX",
}

# ../shared/CONTRACT.md: these never change.
CONTRACT = {
    "API_KEY_REQUIRED": 401,
    "INVALID_API_KEY": 401,
    "INSUFFICIENT_CREDITS": 402,
    "VALIDATION_ERROR": 400,
    "INVALID_URL": 400,
    "URL_BLOCKED": 400,
    "JOB_NOT_FOUND": 404,
    "JOB_NOT_READY": 409,
    "DOWNLOAD_EXPIRED": 410,
    "PAYLOAD_TOO_LARGE": 413,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "RATE_LIMIT_EXCEEDED": 429,
    "CAPTURE_ERROR": 500,
}


def _all_subclasses(cls: type[BulkError]) -> Iterator[type[BulkError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _import_all() -> None:
    for name in modules():
        importlib.import_module(name)


# ---- the table itself -------------------------------------------------------------------


def test_contract_codes_keep_their_statuses() -> None:
    table = error_table()
    assert {code: table[code].api_status for code in CONTRACT} == CONTRACT
    assert table["INTERNAL_ERROR"] is BulkError and BulkError.api_status == 500


def test_every_class_defines_its_own_row() -> None:
    _import_all()
    table = error_table()
    classes = [
        BulkError,
        *(c for c in _all_subclasses(BulkError) if c.__module__.startswith("bulk")),
    ]
    for cls in classes:
        for attr in ("code", "api_status", "description"):
            # Inherited values would be the parent's row under another name.
            assert attr in vars(cls), f"{cls.__name__} does not define {attr}"
        assert CODE.match(cls.code), cls.code
        assert isinstance(cls.api_status, int) and 400 <= cls.api_status <= 599, cls
        text = cls.description
        assert text and "\n" not in text and len(text) <= 100 and not text.endswith("."), cls
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), "two classes share a code"
    assert list(table) == codes == [c.code for c in table.values()]


def test_every_error_class_lives_in_the_exceptions_module() -> None:
    _import_all()
    elsewhere = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _all_subclasses(BulkError)
        if cls.__module__.startswith("bulk") and cls.__module__ != _exceptions.__name__
    ]
    assert elsewhere == [], "define error classes in bulk/_exceptions.py (the one table)"


def test_a_new_class_is_a_new_row() -> None:
    # What another module appending a class at the end of _exceptions gets: no other
    # step. (Defined here, it is not this module's: the table must not take it.)
    class Local(BulkError):
        code = "LOCAL_ONLY"
        api_status = 418
        description = "x"

    assert "LOCAL_ONLY" not in error_table()
    Local.__module__ = _exceptions.__name__
    try:
        assert error_table()["LOCAL_ONLY"] is Local
        assert status_of("LOCAL_ONLY") == 418
        spec = openapi_document(RATE_LIMITS, IN_FLIGHT_LIMITS)
        assert "LOCAL_ONLY" in _spec_codes(spec)
    finally:
        Local.__module__ = __name__
    assert "LOCAL_ONLY" not in error_table()


# ---- every code the source can produce is in the table and the spec --------------------


def _raised_names(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                yield exc.id, node.lineno
            elif isinstance(exc, ast.Attribute):
                yield exc.attr, node.lineno


def _dunder_all_strings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                ids |= {id(n) for n in ast.walk(node)}
    return ids


def codes_in_source() -> dict[str, list[str]]:
    """Every error code the package's source mentions -> where (``module:line``)."""
    found: dict[str, list[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        module = importlib.import_module(name)
        for raised, line in _raised_names(tree):
            cls = getattr(module, raised, None) or getattr(_exceptions, raised, None)
            if isinstance(cls, type) and issubclass(cls, BulkError):
                found.setdefault(cls.code, []).append(f"{name}:{line} raise {raised}")
        skip = _dunder_all_strings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and BARE_CODE.match(node.value)
                and id(node) not in skip
                and not node.value.startswith("BULK_")  # environment variables
                and not node.value.startswith("ERR_")  # Chromium's net errors (details)
                and node.value not in NOT_CODES
            ):
                found.setdefault(node.value, []).append(f"{name}:{node.lineno}")
    return found


def _spec_codes(spec: dict[str, object]) -> list[str]:
    error = spec["components"]["schemas"]["Error"]  # type: ignore[index]
    return list(error["properties"]["error"]["properties"]["code"]["enum"])  # type: ignore[index]


def test_every_code_in_the_source_has_a_row_and_is_in_the_spec() -> None:
    found = codes_in_source()
    # The walk finds codes written each way (guards the walk itself).
    assert "raise JobNotFound" in " ".join(found["JOB_NOT_FOUND"])
    assert any(w.startswith("bulk._jobs:") for w in found["NO_PAGES_CAPTURED"])
    table = error_table()
    missing = {code: where for code, where in found.items() if code not in table}
    assert missing == {}, "add a class to bulk/_exceptions.py for each"
    spec_codes = _spec_codes(openapi_document(RATE_LIMITS, IN_FLIGHT_LIMITS))
    assert spec_codes == list(table)
    for code, cls in table.items():
        assert status_of(code) == cls.api_status


def test_no_other_status_table_in_the_api() -> None:
    # The API's statuses come from the classes: no dict of code -> status in _api.
    sources = sorted((ROOT / "bulk" / "_api").glob("*.py"))
    assert sources
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                pairs = [
                    (k.value, v.value)
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                ]
                assert not any(
                    isinstance(k, str) and BARE_CODE.match(k) and isinstance(v, int)
                    for k, v in pairs
                ), f"a code -> status table at {path.name}:{node.lineno}"


@pytest.mark.parametrize("code", sorted(error_table()))
def test_readme_error_table_has_every_code(code: str) -> None:
    # The README's table is generated from error_table() by cog (test_docs checks it
    # is current); this checks the generated table is there at all.
    readme = (ROOT / "README.md").read_text()
    cls = error_table()[code]
    assert f"| `{code}` | {cls.api_status} | {cls.description} |" in readme


def test_error_envelope_uses_the_class_status() -> None:
    from bulk._api import _error
    from bulk._exceptions import RateLimitExceeded

    for cls in error_table().values():
        exc = cls("x", retry_after=1) if cls is RateLimitExceeded else cls("x")  # type: ignore[call-arg]
        response = _error(exc)
        assert response.status_code == cls.api_status
        assert json.loads(bytes(response.body))["error"]["code"] == cls.code


def test_manifest_http_status_is_not_the_api_status() -> None:
    # CaptureError.http_status is the page's status; the class attribute is api_status.
    from bulk._exceptions import HTTPStatusError, URLBlocked
    from bulk._results import failed_result

    assert failed_result(URLBlocked("no")).http_status is None
    assert failed_result(HTTPStatusError("404", http_status=404)).http_status == 404
    assert Path(_exceptions.__file__).name == "_exceptions.py"
