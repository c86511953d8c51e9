"""``/openapi.json`` is a valid OpenAPI document and the live API matches it.

The document is checked by ``openapi-spec-validator``; then Schemathesis (property-based
API testing) runs every operation against a real ``bulk serve`` process (real Chromium,
a loopback site, only 127.0.0.1 allowed): no 5xx, every status code documented, every
response (error envelopes included) valid against its schema, schema-invalid input
refused. The run is bounded (examples per operation, a fixed seed, deterministic
generation) and its hooks (tests/schemathesis_hooks.py) keep every request on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from bulk._api._core import _EMAIL
from bulk._exceptions import error_table
from bulk._openapi import EMAIL_PATTERN, TEXT_PATTERN, openapi_document
from bulk._options import OPTION_SPECS
from bulk._ratelimit import IN_FLIGHT_LIMITS, RATE_LIMITS
from tests.conftest import BULK, run_bulk
from tests.sitekit import ROOT, Route, SiteServer

DOC = openapi_document(RATE_LIMITS, IN_FLIGHT_LIMITS)


def _schema(pointer: dict[str, Any]) -> dict[str, Any]:
    """A request schema with the document's components, for jsonschema."""
    return {**pointer, "components": DOC["components"]}


def _body_schema(path: str, method: str) -> dict[str, Any]:
    content = DOC["paths"][path][method]["requestBody"]["content"]["application/json"]
    return _schema(content["schema"])


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_document_is_valid_openapi() -> None:
    validate(DOC)


def test_screenshot_body_can_be_satisfied() -> None:
    # It once required `url` while forbidding every property but the options.
    schema = _body_schema("/screenshot", "post")
    assert _valid(schema, {"url": "https://example.com/", "full_page": True, "width": 1440})
    assert not _valid(schema, {})
    assert not _valid(schema, {"url": "https://example.com/", "nope": 1})


def test_bulk_body_has_every_spelling() -> None:
    schema = _body_schema("/bulk-screenshot", "post")
    for body in (
        {"url": "example.com"},
        {"sitemap_url": "https://example.com/sitemap.xml"},
        {"sitemapUrl": "https://example.com/sitemap.xml", "webhookUrl": "https://h.example/"},
        {"url": "example.com", "webhook_url": "https://h.example/", "options": {"maxPages": 5}},
    ):
        assert _valid(schema, body), body
    for body in (
        {},
        {"url": "a.com", "sitemap_url": "https://a.com/s.xml"},
        {"url": "a.com", "webhook_url": "https://h/", "webhookUrl": "https://h/"},
        {"url": "a.com", "options": {"maxPages": 101}},
        {"url": "   "},
    ):
        assert not _valid(schema, body), body


def test_every_option_is_documented() -> None:
    # One spelling each; the camelCase twin is named in the description.
    props = DOC["components"]["schemas"]["CaptureOptions"]["properties"]
    assert set(props) == {spec.name for spec in OPTION_SPECS}
    for spec in OPTION_SPECS:
        assert spec.camel is None or f"`{spec.camel}`" in props[spec.name]["description"]
    query = {p["name"] for p in DOC["paths"]["/screenshot"]["get"]["parameters"]}
    assert {s.name for s in OPTION_SPECS} | {"url", "response_type", "connector_id"} == query


def test_every_error_code_is_documented_with_its_status() -> None:
    assert DOC["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
        "enum"
    ] == list(error_table())
    for code, cls in error_table().items():
        per_status = DOC["components"]["schemas"][f"Error{cls.api_status}"]
        assert code in per_status["properties"]["error"]["properties"]["code"]["enum"]


# The API checks with Python's ``re`` and str methods; Schemathesis (and other tools)
# with a JSON Schema validator's regex engine. They must agree on every character:
# whitespace and control characters are where engines differ.
_SPACES = st.sampled_from(
    list(" \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u1680\u2000\u2028\u3000\ufeff\x00\x7f")
)
# Lone surrogates cannot be validated by jsonschema_rs (they are not UTF-8).
_CHARS = st.one_of(_SPACES, st.characters(codec="utf-8"), st.sampled_from(list("@.a")))
_PIECE = st.text(_CHARS, min_size=0, max_size=6)


@given(
    st.one_of(st.text(_CHARS, max_size=30), st.builds("{}@{}.{}".format, _PIECE, _PIECE, _PIECE))
)
def test_email_rule_is_the_documented_pattern(text: str) -> None:
    schema = {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN}
    api = len(text) <= 254 and _EMAIL.match(text) is not None
    assert jsonschema_rs.validator_for(schema).is_valid(text) == api


@given(st.text(_CHARS, max_size=12))
def test_text_rule_is_the_documented_pattern(text: str) -> None:
    # URL fields: refused when nothing but whitespace (the API strips them).
    schema = {"type": "string", "pattern": TEXT_PATTERN}
    assert jsonschema_rs.validator_for(schema).is_valid(text) == bool(text.strip())


# ---- Schemathesis against a live `bulk serve` ------------------------------------------

PAGE = """<!doctype html><html><head><title>{title}</title>
<style>body{{font:16px sans-serif;margin:0}} footer{{height:40px}}</style></head>
<body><div class="banner">banner</div><h1>{title}</h1>
<main id="main"><p class="lead">A page of the loopback site.</p></main>
<footer>footer</footer></body></html>"""


@dataclass
class Serve:
    url: str
    key: str
    process: subprocess.Popen[str]
    log: Path


def _hook(h: Any) -> None:
    SiteServer._send(h, 204, b"", "text/plain", {})


@pytest.fixture
def loopback_site() -> Iterator[SiteServer]:
    routes = {
        "/": Route(body=PAGE.format(title="Home")),
        "/about/": Route(body=PAGE.format(title="About")),
        "/robots.txt": Route(
            body="User-agent: *\nSitemap: {origin}/sitemap.xml\n", content_type="text/plain"
        ),
        "/sitemap.xml": Route(
            body="<urlset><url><loc>{origin}/</loc></url>"
            "<url><loc>{origin}/about/</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/hook": Route(handler=_hook),
    }
    with SiteServer(routes=routes) as site:
        yield site


@pytest.fixture
def live_serve(tmp_path: Path, chromium: str) -> Iterator[Serve]:
    db, data = tmp_path / "ledger.db", tmp_path / "data"
    made = run_bulk("admin", "create-key", "--db", db, "--credits", "1000000", "--json")
    assert made.code == 0, made.stderr
    key = json.loads(made.stdout)["api_key"]
    env = {
        **os.environ,
        "BULK_CHROMIUM": chromium,
        # Schemathesis sends hundreds of requests a minute with one key.
        "BULK_RATE_LIMITS": "general=1000000/60,screenshot=1000000/60,"
        "bulk=1000000/3600,register=1000000/900",
    }
    env.pop("BULK_ALLOW_PRIVATE", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [
                *BULK,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--db",
                str(db),
                "--data-dir",
                str(data),
                "--allow",
                "127.0.0.1/32",
                "--concurrency",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        url = _wait_listening(process, log)
        yield Serve(url=url, key=key, process=process, log=log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(process: subprocess.Popen[str], log: Path) -> str:
    # `bulk serve` says where it listens on stderr once it accepts requests.
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("bulk: listening on "):
                return line.removeprefix("bulk: listening on ").split(",")[0].strip()
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"bulk serve did not start:\n{log.read_text()}")


ST = Path(sys.executable).with_name("st")
# Everything but timing (no timing-sensitive asserts in the suite) and the checks that
# need links between operations (the document has none).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
)
CONFIG = """
# The coverage phase walks every boundary of every parameter: hundreds of cases per
# operation. Its invalid ones are refused before any work; its valid ones would each
# be a capture. It runs the invalid ones; the fuzzing phase runs both, bounded.
[phases.coverage.generation]
mode = "negative"

[checks.positive_data_acceptance]
# A valid request may still meet a documented conflict: an Idempotency-Key reused with
# another body (422), a key limit or a taken email (409), an unknown job (404).
expected-statuses = ["2xx", "401", "404", "409", "422", "429"]
"""
EXAMPLES = 8
SEED = 20240611


@pytest.mark.slow
@pytest.mark.browser
def test_schemathesis_finds_nothing(
    live_serve: Serve, loopback_site: SiteServer, tmp_path: Path
) -> None:
    spec_url = f"{live_serve.url}/api/v1/openapi.json"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "BULK_TEST_SITE": loopback_site.origin,
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "*",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            str(ST),
            "--config-file",
            str(config),
            "run",
            spec_url,
            "--header",
            f"X-API-Key: {live_serve.key}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-deterministic",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--request-timeout",
            "120",
            "--no-color",
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # Schemathesis keeps a cache in its working directory
        env=env,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, (
        out + "\n--- bulk serve ---\n" + live_serve.log.read_text()[-5000:]
    )
    # bulk serve survived the run and still answers.
    assert live_serve.process.poll() is None, live_serve.log.read_text()
    r = httpx.get(f"{live_serve.url}/api/v1/health", timeout=10, trust_env=False)
    assert r.status_code == 200 and r.json()["data"]["status"] == "ok"
    # The only destination any capture or discovery reached is the loopback site.
    assert loopback_site.requests, "no request reached the site: the run tested nothing"


def test_url_lists_and_html_input_are_described() -> None:
    bulk = _body_schema("/bulk-screenshot", "post")
    for body in (
        {"urls": ["https://example.com/"]},
        {"urls": ["https://a.example/", {"url": "https://b.example/", "options": {"width": 800}}]},
    ):
        assert _valid(bulk, body), body
    for body in (
        {"urls": []},
        {"urls": ["https://a.example/"] * 5001},
        {"urls": [{"url": "https://a.example/", "extra": 1}]},
        {"urls": [{"url": "https://a.example/", "options": {"maxPages": 5}}]},
        {"urls": ["https://a.example/"], "url": "a.example"},
    ):
        assert not _valid(bulk, body), str(body)[:80]
    shot = _body_schema("/screenshot", "post")
    assert _valid(shot, {"html": "<h1>hi</h1>", "width": 800})
    assert not _valid(shot, {"html": "<h1>hi</h1>", "url": "https://example.com/"})
    assert not _valid(shot, {"html": ""})
    created = DOC["paths"]["/bulk-screenshot"]["post"]["responses"]["202"]
    data = created["content"]["application/json"]["schema"]["properties"]["data"]
    assert "deduplicated" in data["required"]
