"""Schemathesis hooks for tests/test_openapi.py's run against a live ``bulk serve``.

Loaded by Schemathesis itself (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``), with
the loopback test site's origin in ``BULK_TEST_SITE``. They keep every request on
this machine and every capture one that can succeed:

- URL fields (``url``, ``sitemap_url``, ``webhook_url``, their camelCase twins and the
  items of ``urls``) may
  only be URLs of the loopback site: the schema is narrowed to them, a generated
  value outside them becomes ``""`` (refused before any I/O), and ``before_call``
  refuses to send a request that would still carry any other URL. No request ever
  makes the service resolve a name or leave 127.0.0.1.
- In cases that are valid by the schema, the options that decide whether a page can
  be captured at all are set to what the site has (selectors that exist, capture
  scripts that work on it and stay on it), and waits are bounded (a long
  ``timeout``, a short ``delay``), so that a 5xx is a bug, not a selector that
  matches nothing on a slow machine.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

SITE = os.environ.get("BULK_TEST_SITE", "http://127.0.0.1:9")
PAGES = [f"{SITE}/", f"{SITE}/about/"]
SAFE: dict[str, list[str]] = {
    "url": [SITE, *PAGES],
    "sitemap_url": [f"{SITE}/sitemap.xml"],
    "sitemapUrl": [f"{SITE}/sitemap.xml"],
    "webhook_url": [f"{SITE}/hook"],
    "webhookUrl": [f"{SITE}/hook"],
}
ALLOWED = {u for urls in SAFE.values() for u in urls} | {""}
SELECTORS = ["h1", "#main", "body", "p.lead"]
EVERY = ["1h", "1d", "7d", "0 3 * * 1"]
BLOCK = [".banner", "#nothing-here", "footer"]
# Capture scripts that work on the site (a generated one would click what is not
# there, or go to a URL off this machine).
SCRIPTS: list[list[dict[str, Any]]] = [
    [],
    [{"wait": 0}],
    [{"hover": "h1"}, {"css": "h1 { color: red }"}, {"screenshot": "styled"}],
    [{"scroll": 100}, {"evaluate": "document.title"}, {"wait_for_selector": "#main"}],
]


def _narrow(properties: dict[str, Any], capture: bool) -> None:
    for name, urls in SAFE.items():
        if name in properties:
            pages = PAGES if capture and name == "url" else urls
            properties[name] = {"type": "string", "enum": pages}


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    paths = raw_schema["paths"]
    bulk = paths["/bulk-screenshot"]["post"]["requestBody"]["content"]["application/json"]
    _narrow(bulk["schema"]["properties"], capture=False)
    # URL lists: items of the loopback site only (the shape is the document's).
    urls = bulk["schema"]["properties"]["urls"]
    urls["items"]["anyOf"][0] = {"type": "string", "enum": PAGES}
    urls["items"]["anyOf"][1]["properties"]["url"] = {"type": "string", "enum": PAGES}
    # Schedules: the same body (their first run is a capture of the loopback site),
    # and intervals that are valid (a generated cron string mostly is not).
    for method in ("post", "patch"):
        operation = paths["/schedules" if method == "post" else "/schedules/{schedule_id}"]
        schema = operation[method]["requestBody"]["content"]["application/json"]["schema"]
        _narrow(schema["properties"], capture=False)
        schema["properties"]["every"] = {"type": "string", "enum": EVERY}
        if method == "patch":  # null removes the webhook
            for name in ("webhook_url", "webhookUrl"):
                schema["properties"][name] = {"enum": [*SAFE[name], None]}
        if "urls" in schema["properties"]:
            items = schema["properties"]["urls"]["items"]["anyOf"]
            items[0] = {"type": "string", "enum": PAGES}
            items[1]["properties"]["url"] = {"type": "string", "enum": PAGES}
    shot = paths["/screenshot"]["post"]["requestBody"]["content"]["application/json"]
    _narrow(shot["schema"]["properties"], capture=True)
    # HTML input is rendered by the capture engine (its own tests); here every
    # screenshot loads a page of the loopback site.
    shot["schema"]["properties"].pop("html", None)
    shot["schema"].pop("oneOf", None)
    shot["schema"]["required"] = ["url"]
    for param in paths["/screenshot"]["get"]["parameters"]:
        if param["name"] == "url":
            param["schema"] = {"type": "string", "enum": PAGES}


def _urls_of(case: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every URL field of a case (body and query), the items of a
    URL list included."""
    out: list[tuple[Any, Any]] = []
    for container in (case.body, case.query):
        if isinstance(container, dict):
            out += [(container, k) for k in SAFE if k in container]
            items = container.get("urls")
            if isinstance(items, list):
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        if "url" in item:
                            out.append((item, "url"))
                    else:
                        out.append((items, index))
    return out


def _is_positive(case: Any, location: ParameterLocation) -> bool:
    """Whether this part of the case is valid by the schema (as generated)."""
    return case.meta is None or not case.meta.is_negative_at(location)


def _own_site(cookies: list[Any]) -> None:
    for cookie in cookies:
        if isinstance(cookie, dict):
            if "domain" in cookie:
                cookie["domain"] = "127.0.0.1"
            if "path" in cookie:
                cookie["path"] = "/"


def _bound_capture(options: dict[str, Any]) -> None:
    """Make a valid case's capture one the site can satisfy, without long waits."""
    for key in ("selector", "wait_for_selector", "waitForSelector"):
        if key in options:
            options[key] = SELECTORS[len(str(options[key])) % len(SELECTORS)]
    for key in ("block_selectors", "blockSelectors"):
        value = options.get(key)
        if isinstance(value, list):
            options[key] = BLOCK[: len(value) % (len(BLOCK) + 1)]
        elif isinstance(value, str):  # a query string, already serialized
            options[key] = ",".join(BLOCK[: len(value.split(",")) % len(BLOCK) + 1])
    if "actions" in options:
        value = options["actions"]
        script = SCRIPTS[len(str(value)) % len(SCRIPTS)]
        # A query string's JSON is already serialized.
        options["actions"] = json.dumps(script) if isinstance(value, str) else script
    if "timeout" in options:
        options["timeout"] = 60000
    if "delay" in options:
        options["delay"] = 0
    # Small images: a 3840 x 2160 page at scale 3 takes seconds to encode on 2 cores,
    # and the run must stay within minutes (sizes are tested in test_browser.py).
    for key, most in (("width", 800), ("height", 600), ("scale", 1)):
        if isinstance(options.get(key), int | float) and not isinstance(options[key], bool):
            options[key] = min(options[key], most)
    # Cookie domains and paths are judged by Chromium alone (a refusal is a 400 naming
    # the field): in a valid case, the site's own.
    cookies = options.get("cookies")
    if isinstance(cookies, str):  # JSON in a query string, already serialized
        try:
            cookies = json.loads(cookies)
        except ValueError:
            cookies = None
        if isinstance(cookies, list):
            _own_site(cookies)
            options["cookies"] = json.dumps(cookies)
    elif isinstance(cookies, list):
        _own_site(cookies)
    for key in ("maxPages", "max_pages"):
        if key in options:
            options[key] = 1


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    for container, key in _urls_of(case):
        value = container[key]
        if isinstance(value, str) and value not in ALLOWED:
            container[key] = ""
    for options, location in (
        (case.body, ParameterLocation.BODY),
        (case.query, ParameterLocation.QUERY),
    ):
        if isinstance(options, dict) and _is_positive(case, location):
            _bound_capture(options)
            if isinstance(options.get("options"), dict):
                _bound_capture(options["options"])
            # A valid list may repeat a URL only with the same options: per-item
            # options (tests/test_api_urls.py) are left out of generated lists.
            for item in options.get("urls") or ():
                if isinstance(item, dict):
                    item.pop("options", None)
    return case


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # The last word before a request leaves: nothing but the loopback site's URLs.
    for container, key in _urls_of(case):
        value = container[key]
        if isinstance(value, str) and value not in ALLOWED:
            raise AssertionError(f"refusing to send {key}={value!r}: not a loopback site URL")
