"""``GET /api/v1/openapi.json``: the API described from the same sources it runs on.

Capture options come from ``OPTION_SPECS`` (so docs, CLI flags and validation cannot
drift), error codes, statuses and descriptions from ``error_table()`` (the exception
classes), rate limits from the running configuration. Request schemas say exactly
what the handlers accept (every spelling, every bound, the characters refused), and
every response, errors included, has a schema: ``tests/test_openapi.py`` validates
the document and runs Schemathesis against a live ``bulk serve`` with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

from ._actions import ACTIONS_JSON_SCHEMA
from ._exceptions import error_table
from ._options import FORBIDDEN_HEADERS, LIMITS, OPTION_SPECS, TOKEN_PATTERN, OptionSpec
from ._ratelimit import RateLimit
from ._urllist import MAX_URLS_PER_JOB
from ._version import __version__

__all__ = [
    "EMAIL_PATTERN",
    "IDEMPOTENCY_KEY_PATTERN",
    "MAX_BODY",
    "MAX_HTML_BYTES",
    "MAX_LARGE_BODY",
    "MAX_PAGES_API",
    "TEXT_PATTERN",
    "URL_FIELD_LIMIT",
    "openapi_document",
]

#: Request bodies over this many bytes are refused (``PAYLOAD_TOO_LARGE``).
MAX_BODY: Final = 64 * 1024
#: ... except on the endpoints that take a URL list or an HTML document.
MAX_LARGE_BODY: Final = 4 * 1024 * 1024
#: The largest ``html`` document ``POST /screenshot`` renders (bytes of UTF-8).
MAX_HTML_BYTES: Final = 1024 * 1024
#: ``options.maxPages`` of a bulk job: 1 to this.
MAX_PAGES_API: Final = 100
#: URL fields take more than the URL limit so that an over-long URL is judged by the
#: URL rules (``INVALID_URL``), not by the generic string check.
URL_FIELD_LIMIT: Final = 16 * 1024
IDEMPOTENCY_KEY_PATTERN: Final = r"^[A-Za-z0-9_.:\-]{1,255}$"

# The characters Python's str.isspace() calls whitespace, spelled out: JSON Schema
# validators and Python's ``re`` disagree on what ``\s`` means, the API and its
# document must not.
_SPACE: Final = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
    r"\u202f\u205f\u3000"
)
#: A text field: at least one character that is not whitespace (the API strips it).
TEXT_PATTERN: Final = f"[^{_SPACE}]"
_EMAIL_CHAR: Final = rf"[^@{_SPACE}\u0000-\u001f\u007f-\u009f]"
#: What ``POST /register`` accepts as an email (checked as given: nothing is stripped).
EMAIL_PATTERN: Final = rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}{{2,}}$"

_NO_CTL: Final = r"^[^\u0000-\u001f\u007f]*$"
_NO_CTL_BUT_TAB: Final = r"^[^\u0000-\u0008\u000a-\u001f\u007f]*$"
_DIGITS: Final = r"^[0-9]+$"
_JOB_STATUSES: Final = ("pending", "processing", "packaging", "completed", "failed", "expired")


def _any_case(word: str) -> str:
    """A regex matching ``word`` in any letter case (no inline flags: portable)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def _escape(c: str) -> str:
    return "\\" + c if c in r".^$*+?()[]{}|\-/" else c


_FORBIDDEN_HEADER: Final = (
    "^(?:"
    + "|".join(_any_case(h) for h in sorted(FORBIDDEN_HEADERS))
    + ")$|^"
    + _any_case("proxy-")
)


def _text(limit: int, pattern: str = _NO_CTL) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": pattern}


def _option_schema(spec: OptionSpec) -> dict[str, Any]:
    """The JSON (request body) schema of one capture option."""
    schema: dict[str, Any]
    if spec.kind == "int":
        schema = {"type": "integer"}
    elif spec.kind == "float":
        schema = {"type": "number"}
    elif spec.kind == "bool":
        schema = {"type": "boolean"}
    elif spec.kind == "choice":
        schema = {"type": "string", "enum": list(spec.choices)}
    elif spec.kind == "str" and spec.pattern is not None:
        schema = {"type": "string", "maxLength": LIMITS["str"], "pattern": spec.pattern}
    elif spec.kind == "str":
        schema = _text(LIMITS["str"])
    elif spec.kind == "actions":
        schema = dict(ACTIONS_JSON_SCHEMA)
    elif spec.kind == "str_list":
        schema = {"type": "array", "items": _text(LIMITS["str"]), "maxItems": LIMITS["list"]}
    elif spec.kind == "cookies":
        schema = {"type": "array", "maxItems": LIMITS["cookies"], "items": _cookie_schema()}
    else:
        schema = {
            "type": "object",
            "maxProperties": LIMITS["headers"],
            "propertyNames": {
                "pattern": TOKEN_PATTERN,
                "maxLength": 256,
                "not": {"pattern": _FORBIDDEN_HEADER},
            },
            "additionalProperties": {
                "type": "string",
                "maxLength": LIMITS["header_value"],
                "pattern": _NO_CTL_BUT_TAB,
            },
        }
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if spec.default not in (None, ()):
        schema["default"] = spec.default
    schema["description"] = spec.help + (f" Also accepted as `{spec.camel}`." if spec.camel else "")
    return schema


def _cookie_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "value"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 256, "pattern": TOKEN_PATTERN},
            "value": {
                "type": "string",
                "maxLength": LIMITS["cookie_value"],
                "pattern": r"^[^\u0000-\u001f\u007f;]*$",
            },
            "domain": _text(253),
            "path": {
                "type": "string",
                "maxLength": LIMITS["str"],
                "pattern": r"^/[^\u0000-\u001f\u007f;]*$",
            },
        },
    }


def _query_schema(spec: OptionSpec, body: dict[str, Any]) -> dict[str, Any]:
    """The schema of one capture option as a ``GET /screenshot`` query parameter."""
    if spec.kind == "bool":
        # The query string says true/false or 1/0, in any letter case.
        words = "|".join(_any_case(w) for w in ("true", "false")) + "|1|0"
        return {"type": "string", "pattern": f"^(?:{words})$", "description": body["description"]}
    if spec.kind == "str_list":
        return {**body, "description": body["description"] + " Comma-separated."}
    return body


def _one_spelling(*pairs: tuple[str, str]) -> dict[str, Any]:
    """``dependentSchemas`` saying each pair is given in one spelling only (the API
    refuses ``webhook_url`` with ``webhookUrl``): with the first, the second is absent."""
    return {a: {"properties": {b: False}} for a, b in pairs}


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "data"],
        "additionalProperties": False,
        "properties": {"success": {"const": True}, "data": data},
    }


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


_INT: Final = {"type": "integer", "minimum": 0}
_STR: Final = {"type": "string"}
_STR_OR_NULL: Final = {"type": ["string", "null"]}
_INT_OR_NULL: Final = {"type": ["integer", "null"]}


def _job_status_schema(codes: list[str]) -> dict[str, Any]:
    progress = ("totalUrls", "processed", "successful", "failed")
    return _obj(
        [
            "jobId",
            "status",
            "site",
            "sitemapUrl",
            "progress",
            "credits",
            "createdAt",
            "startedAt",
            "finishedAt",
            "download",
        ],
        {
            "jobId": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": list(_JOB_STATUSES)},
            "site": _STR,
            "sitemapUrl": _STR_OR_NULL,
            "progress": _obj(
                [*progress, "percentage"],
                {
                    **{k: _INT for k in progress},
                    "percentage": {"type": "integer", "minimum": 0, "maximum": 100},
                },
            ),
            "credits": _obj(
                ["reserved", "used", "refunded"],
                {k: _INT for k in ("reserved", "used", "refunded")},
            ),
            "createdAt": _STR,
            "startedAt": _STR_OR_NULL,
            "finishedAt": _STR_OR_NULL,
            "download": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        ["expiresAt", "fileSize", "url"],
                        {"expiresAt": _STR_OR_NULL, "fileSize": _INT_OR_NULL, "url": _STR},
                    ),
                ]
            },
            "error": _obj(
                ["code", "message"],
                {"code": {"type": "string", "enum": codes}, "message": _STR_OR_NULL},
            ),
            "discovery": {
                "type": ["object", "null"],
                "description": "What discovery found, cut and skipped (null before it ran)",
            },
        },
    )


def openapi_document(
    rate_limits: Mapping[str, RateLimit], in_flight: Mapping[str, int]
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the running service.

    Args:
        rate_limits: The service's request limits per bucket.
        in_flight: Discoveries and captures one key may run at once.
    """
    table = error_table()
    codes = list(table)
    by_status: dict[int, list[str]] = {}
    for code, cls in table.items():
        by_status.setdefault(cls.api_status, []).append(code)

    # One spelling per option (snake_case; its camelCase twin is named in the
    # description): "this or its twin, not both" for 17 pairs is more than JSON Schema
    # tools can generate from, and a document that tools cannot use describes nothing.
    options = {spec.name: _option_schema(spec) for spec in OPTION_SPECS}
    max_pages = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PAGES_API,
        "default": 100,
        "description": "Pages to capture at most. Also accepted as `max_pages`.",
    }
    bulk_options = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"maxPages": max_pages, **options},
    }
    url_field = {"type": "string", "maxLength": URL_FIELD_LIMIT, "pattern": TEXT_PATTERN}
    connector_field = {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": TEXT_PATTERN,
        "description": "Capture through this connector of the account (`conn_...`) instead "
        "of the service's own browsers: the URL then passes the service's syntax checks "
        "only, the connector's address policy rules its network. CONNECTOR_NOT_FOUND: not "
        "this account's; CONNECTOR_OFFLINE: not connected; CONNECTOR_TIMEOUT: no answer "
        "in time. The response carries `X-Connector-Used`. A bulk job routed so takes "
        "`urls` only.",
    }
    limits = {
        name: {"limit": rule.limit, "window_seconds": rule.window}
        for name, rule in rate_limits.items()
    }
    rate_headers = {
        name: {"schema": {"type": "string", "pattern": _DIGITS}, "description": text}
        for name, text in (
            ("X-RateLimit-Limit", "Requests allowed in the window of this endpoint"),
            ("X-RateLimit-Remaining", "Requests left in the window"),
            ("X-RateLimit-Reset", "Unix time when the window frees a slot"),
        )
    }

    def error_schema(status: int) -> dict[str, Any]:
        return _obj(
            ["success", "error"],
            {
                "success": {"const": False},
                "error": _obj(
                    ["code", "message"],
                    {
                        "code": {"type": "string", "enum": by_status[status]},
                        "message": _STR,
                        "details": {},
                    },
                ),
            },
        )

    def errors(*statuses: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in statuses:
            response: dict[str, Any] = {
                "description": ", ".join(by_status[s]),
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/Error{s}"}}
                },
                "headers": dict(rate_headers),
            }
            if s == 429:
                response["headers"]["Retry-After"] = {
                    "required": True,
                    "schema": {"type": "string", "pattern": _DIGITS},
                    "description": "Seconds to wait before retrying",
                }
            out[str(s)] = response
        return out

    def ok(description: str, schema: dict[str, Any], **headers: Any) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": schema}},
            "headers": {**rate_headers, **headers},
        }

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    auth: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"Bearer": []}, {"ApiKeyQuery": []}]
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    created = _envelope(
        _obj(
            [
                "job_id",
                "status",
                "sitemap_url",
                "total_urls",
                "credits_reserved",
                "credits_remaining",
                "status_url",
                "deduplicated",
            ],
            {
                "job_id": {"type": "string", "format": "uuid"},
                "status": {"type": "string", "enum": list(_JOB_STATUSES)},
                "sitemap_url": _STR_OR_NULL,
                "total_urls": _INT,
                "credits_reserved": _INT,
                "credits_remaining": _INT,
                "status_url": _STR,
                "deduplicated": {
                    **_INT,
                    "description": "URL-list items that repeated an earlier URL after "
                    "normalisation: captured and charged once (0 for site/sitemap jobs).",
                },
            },
        )
    )
    bulk_body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": url_field,
            "sitemap_url": url_field,
            "sitemapUrl": url_field,
            "urls": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_URLS_PER_JOB,
                "description": (
                    "A URL-list job instead of a site or sitemap: each item a URL, or "
                    "`{url, options}` whose options override the job's for that URL. "
                    f"At most {MAX_URLS_PER_JOB} items; repeats (after normalisation) are "
                    "captured and charged once. A list with any blocked or invalid item "
                    "is refused whole (VALIDATION_ERROR, `details.errors`: index, field, "
                    "code, message of each), nothing reserved. `maxPages` does not apply."
                ),
                "items": {
                    "anyOf": [
                        url_field,
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["url"],
                            "properties": {
                                "url": url_field,
                                "options": {"$ref": "#/components/schemas/CaptureOptions"},
                            },
                        },
                    ]
                },
            },
            "options": {"$ref": "#/components/schemas/BulkOptions"},
            "webhook_url": url_field,
            "webhookUrl": url_field,
            "connector_id": connector_field,
            "connectorId": connector_field,
        },
        "oneOf": [
            {"required": [name]} for name in ("url", "sitemap_url", "sitemapUrl", "urls")
        ],
        "dependentSchemas": {
            **_one_spelling(("webhook_url", "webhookUrl")),
            # A routed job names its pages (discovery would run on the service).
            "connector_id": {"required": ["urls"], "properties": {"connectorId": False}},
            "connectorId": {"required": ["urls"]},
        },
    }
    ignored = {"description": "Accepted and ignored (Pixcap compatibility)."}
    shot_body = {
        "type": "object",
        "additionalProperties": False,
        "oneOf": [{"required": ["url"]}, {"required": ["html"]}],
        "properties": {
            "url": url_field,
            "html": {
                "type": "string",
                "minLength": 1,
                # Any string this long is under the byte cap (UTF-8: at most 4 bytes
                # a character); the server counts bytes.
                "maxLength": MAX_HTML_BYTES // 4,
                "description": (
                    "An HTML document to render instead of loading `url` (at most "
                    f"{MAX_HTML_BYTES // 1024} KiB of UTF-8); its sub-resources pass the "
                    "same address policy as any page's. `metadata.url` is then null."
                ),
            },
            "response_type": ignored,
            "responseType": ignored,
            "connector_id": connector_field,
            "connectorId": connector_field,
            **options,
        },
        "dependentSchemas": _one_spelling(("connector_id", "connectorId")),
    }
    image_headers = {
        "X-Screenshot-Width": {"schema": {"type": "string", "pattern": _DIGITS}},
        "X-Screenshot-Height": {"schema": {"type": "string", "pattern": _DIGITS}},
        "X-Credits-Remaining": {"schema": {"type": "string", "pattern": _DIGITS}},
        "X-Connector-Used": {
            "schema": {"type": "string"},
            "description": "The connector that captured it (only when routed to one)",
        },
    }
    shot_data = _envelope(
        _obj(
            ["image", "metadata", "credits_remaining"],
            {
                "image": {"type": "string", "contentEncoding": "base64"},
                "metadata": _obj(
                    [
                        "url",
                        "finalUrl",
                        "width",
                        "height",
                        "format",
                        "httpStatus",
                        "responseTimeMs",
                        "timestamp",
                    ],
                    {
                        "url": _STR_OR_NULL,
                        "finalUrl": _STR,
                        "width": _INT,
                        "height": _INT,
                        "format": {"type": "string", "enum": list(OPTION_SPECS[2].choices)},
                        "httpStatus": _INT_OR_NULL,
                        "responseTimeMs": _INT,
                        "timestamp": _STR,
                    },
                ),
                "credits_remaining": _INT,
            },
        )
    )
    query_options = [
        {"name": "url", "in": "query", "required": True, "schema": url_field},
        {"name": "response_type", "in": "query", "required": False, "schema": {**ignored, **_STR}},
        {"name": "connector_id", "in": "query", "required": False, "schema": connector_field},
    ]
    # The query string documents one spelling per option (Pixcap's snake_case; the
    # camelCase twin is also accepted, but a parameter list cannot say "not both").
    for spec in OPTION_SPECS:
        param: dict[str, Any] = {"name": spec.name, "in": "query", "required": False}
        if spec.kind in ("cookies", "headers", "actions"):
            # JSON in the query string.
            param["content"] = {"application/json": {"schema": options[spec.name]}}
        else:
            param["schema"] = _query_schema(spec, options[spec.name])
            if spec.kind == "str_list":
                param["style"] = "form"
                param["explode"] = False
        query_options.append(param)
    schedule_id = {
        "name": "schedule_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    run_number = {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}
    connector_id = {
        "name": "connector_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    connector_name = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TEXT_PATTERN}
    connector = _obj(
        ["id", "name", "status", "last_seen", "created_at"],
        {
            "id": _STR,
            "name": _STR,
            "status": {"type": "string", "enum": ["online", "offline"]},
            "last_seen": {**_STR_OR_NULL, "description": "When its tunnel was last up"},
            "created_at": _STR,
        },
    )
    connector_created = _obj(
        [*connector["required"], "token"],
        {
            **connector["properties"],
            "token": {"type": "string", "description": "`pxc_...`: shown this once only"},
        },
    )
    paging = [
        {
            "name": "page",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
    ]
    pagination = _obj(
        ["page", "limit", "total", "pages"],
        {"page": _INT, "limit": _INT, "total": _INT, "pages": _INT},
    )
    every = {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "description": "`1h`, `1d`, `7d`, or a 5-field cron expression (UTC). The first "
        "run is at creation; then one run per slot (a slot missed while the service was "
        "down, or while the previous run was still going, runs once, late).",
    }
    notify = {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            "min_change": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": 1,
                "description": "A page counts as changed above this share of its pixels; "
                "`bulk_job.changed` is sent when a page changed, was added or removed.",
            }
        },
    }
    # Schedules are not routed to connectors.
    unrouted = {
        k: v
        for k, v in cast(dict[str, Any], bulk_body["properties"]).items()
        if k not in ("connector_id", "connectorId")
    }
    schedule_create = {
        **bulk_body,
        "required": ["every"],
        "properties": {**unrouted, "every": every, "notify": notify},
        "dependentSchemas": _one_spelling(("webhook_url", "webhookUrl")),
        "description": "A bulk-job body (`url` | `sitemap_url` | `urls`, `options`) run "
        "at every slot; `webhook_url` receives `bulk_job.changed`.",
    }
    schedule_patch = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "paused": {"type": "boolean"},
            "every": every,
            "webhook_url": {**url_field, "type": ["string", "null"]},
            "webhookUrl": {**url_field, "type": ["string", "null"]},
            "notify": notify,
        },
        "dependentSchemas": _one_spelling(("webhook_url", "webhookUrl")),
    }
    schedule = _obj(
        [
            "id",
            "status",
            "every",
            "job",
            "webhookUrl",
            "notify",
            "nextRunAt",
            "runs",
            "createdAt",
            "updatedAt",
            "runsUrl",
        ],
        {
            "id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["active", "paused"]},
            "every": _STR,
            "job": {"type": "object", "description": "The bulk-job body, secrets masked"},
            "webhookUrl": _STR_OR_NULL,
            "notify": _obj(["min_change"], {"min_change": {"type": ["number", "null"]}}),
            "nextRunAt": _STR_OR_NULL,
            "runs": _INT,
            "createdAt": _STR,
            "updatedAt": _STR,
            "runsUrl": _STR,
        },
    )
    counts = _obj(
        ["added", "removed", "changed", "unchanged", "failed"],
        {k: _INT for k in ("added", "removed", "changed", "unchanged", "failed")},
    )
    run = _obj(
        [
            "run",
            "slot",
            "status",
            "jobId",
            "statusUrl",
            "reason",
            "comparedWith",
            "changed",
            "counts",
            "changesUrl",
            "createdAt",
            "finishedAt",
        ],
        {
            "run": _INT,
            "slot": _STR,
            "status": {
                "type": "string",
                "enum": ["claimed", "running", "completed", "failed", "skipped"],
            },
            "jobId": _STR_OR_NULL,
            "statusUrl": _STR_OR_NULL,
            "reason": {
                "anyOf": [
                    {"type": "null"},
                    _obj(["code", "message"], {"code": _STR, "message": _STR_OR_NULL}),
                ]
            },
            "comparedWith": _INT_OR_NULL,
            "changed": {"type": ["boolean", "null"]},
            "counts": {"anyOf": [{"type": "null"}, counts]},
            "changesUrl": _STR_OR_NULL,
            "createdAt": _STR,
            "finishedAt": _STR_OR_NULL,
        },
    )
    changes = {
        "type": "object",
        "required": ["scheduleId", "run", "jobId", "added", "removed", "changed", "unchanged"],
        "properties": {
            "scheduleId": _STR,
            "run": _INT,
            "jobId": _STR_OR_NULL,
            "comparedWith": _INT_OR_NULL,
            "added": {"type": "array", "items": _STR},
            "removed": {"type": "array", "items": _STR},
            "failed": {"type": "array", "items": _STR},
            "changed": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["url", "changed_pixels", "share", "boxes"],
                    "properties": {
                        "url": _STR,
                        "changed_pixels": _INT,
                        "share": {"type": "number"},
                        "boxes": {"type": "array"},
                    },
                },
            },
            "unchanged": _INT,
            "counts": counts,
        },
    }
    browser = _obj(
        ["name", "kind", "slots", "in_flight", "up", "captures", "reconnects", "last_error"],
        {
            "name": {**_STR, "description": "local, or ws://HOST:PORT (never the token)"},
            "kind": {"type": "string", "enum": ["local", "node"]},
            "slots": _INT,
            "in_flight": _INT,
            "up": {"type": "boolean"},
            "captures": _INT,
            "reconnects": _INT,
            "last_error": _STR_OR_NULL,
        },
    )
    health = _envelope(
        _obj(
            ["status", "version", "browsers"],
            {
                "status": {"type": "string", "enum": ["ok", "draining"]},
                "version": _STR,
                "browsers": {"type": "array", "items": browser},
            },
        )
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bulk screenshot API",
            "version": __version__,
            "description": "Pixcap-compatible bulk and single screenshot API. "
            f"Rate limits: {limits}. At most at once per API key: {dict(in_flight)} "
            "(over it: 429 RATE_LIMIT_EXCEEDED, Retry-After). A request refused before "
            "any work (auth, validation, URL policy, credits) does not count against a "
            "limit. Error codes: "
            + "; ".join(f"{c} ({k.api_status}): {k.description}" for c, k in table.items()),
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": {
                "Error": _obj(
                    ["success", "error"],
                    {
                        "success": {"const": False},
                        "error": _obj(
                            ["code", "message"],
                            {
                                "code": {"type": "string", "enum": codes},
                                "message": _STR,
                                "details": {},
                            },
                        ),
                    },
                ),
                **{f"Error{status}": error_schema(status) for status in sorted(by_status)},
                "CaptureOptions": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": options,
                },
                "BulkOptions": bulk_options,
                "JobStatus": _job_status_schema(codes),
            },
        },
        "security": auth,
        "paths": {
            "/bulk-screenshot": {
                "post": {
                    "summary": "Create a bulk job from a site (url) or a sitemap (sitemap_url)",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                        }
                    ],
                    "requestBody": body(bulk_body),
                    "responses": {
                        "202": ok(
                            "Job created (credits reserved), or the job of an earlier "
                            "request with the same Idempotency-Key and body",
                            created,
                        ),
                        **errors(400, 401, 402, 404, 413, 422, 429, 503),
                    },
                }
            },
            "/bulk-screenshot/{job_id}/status": {
                "get": {
                    "summary": "Job progress, credits and download info",
                    "parameters": [job_id],
                    "responses": {
                        "200": ok("Status", _envelope({"$ref": "#/components/schemas/JobStatus"})),
                        **errors(401, 404, 429),
                    },
                }
            },
            "/bulk-screenshot/{job_id}/download": {
                "get": {
                    "summary": "The job's ZIP (supports Range requests)",
                    "parameters": [job_id],
                    "responses": {
                        "200": {"description": "ZIP", "content": {"application/zip": {}}},
                        "206": {
                            "description": "Partial content",
                            "content": {"application/zip": {}},
                        },
                        **errors(401, 404, 409, 410, 429),
                    },
                }
            },
            "/screenshot": {
                "get": {
                    "summary": "Capture one URL; the image is the response body",
                    "parameters": query_options,
                    "responses": {
                        "200": {
                            "description": "Image",
                            "content": {
                                "image/png": {},
                                "image/jpeg": {},
                                "image/webp": {},
                                "application/pdf": {},
                            },
                            "headers": {**rate_headers, **image_headers},
                        },
                        **errors(400, 401, 402, 404, 429, 500, 503, 504),
                    },
                },
                "post": {
                    "summary": "Capture one URL; JSON with a base64 image",
                    "requestBody": body(shot_body),
                    "responses": {
                        "200": ok("Image as base64", shot_data, **image_headers),
                        **errors(400, 401, 402, 404, 413, 429, 500, 503, 504),
                    },
                },
            },
            "/register": {
                "post": {
                    "summary": "Create an account; returns its first API key",
                    "security": [],
                    "requestBody": body(
                        _obj(
                            ["email"],
                            {
                                "email": {
                                    "type": "string",
                                    "maxLength": 254,
                                    "pattern": EMAIL_PATTERN,
                                }
                            },
                        )
                    ),
                    "responses": {
                        "201": ok(
                            "Account created",
                            _envelope(
                                _obj(
                                    ["message", "email", "api_key", "credits"],
                                    {
                                        "message": _STR,
                                        "email": _STR,
                                        "api_key": _STR,
                                        "credits": _INT,
                                    },
                                )
                            ),
                        ),
                        **errors(400, 409, 413, 429),
                    },
                }
            },
            "/account": {
                "get": {
                    "summary": "Plan, credits, API keys and jobs in flight",
                    "responses": {
                        "200": ok(
                            "Account",
                            _envelope(
                                _obj(
                                    [
                                        "email",
                                        "plan",
                                        "credits",
                                        "jobs_in_flight",
                                        "api_keys",
                                        "webhook_secret",
                                    ],
                                    {
                                        "email": _STR_OR_NULL,
                                        "plan": _STR,
                                        "credits": _INT,
                                        "jobs_in_flight": {
                                            "type": "array",
                                            "items": _obj(
                                                ["job_id", "status", "total_urls"],
                                                {
                                                    "job_id": _STR,
                                                    "status": {
                                                        "type": "string",
                                                        "enum": list(_JOB_STATUSES),
                                                    },
                                                    "total_urls": _INT,
                                                },
                                            ),
                                        },
                                        "api_keys": {
                                            "type": "array",
                                            "items": _obj(
                                                ["prefix", "active", "created_at", "current"],
                                                {
                                                    "prefix": _STR,
                                                    "active": {"type": "boolean"},
                                                    "created_at": _STR,
                                                    "current": {"type": "boolean"},
                                                },
                                            ),
                                        },
                                        "webhook_secret": _STR,
                                    },
                                )
                            ),
                        ),
                        **errors(401, 429),
                    },
                }
            },
            "/api-keys": {
                "post": {
                    "summary": "Create another API key (max 5 active per account)",
                    "responses": {
                        "201": ok("Key created", _envelope(_obj(["api_key"], {"api_key": _STR}))),
                        **errors(401, 409, 429),
                    },
                }
            },
            "/api-keys/{key}": {
                "delete": {
                    "summary": "Deactivate a key (given whole or by its prefix)",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": ok(
                            "Deactivated", _envelope(_obj(["deactivated"], {"deactivated": _STR}))
                        ),
                        **errors(401, 429),
                    },
                }
            },
            "/schedules": {
                "post": {
                    "summary": "Schedule a bulk job: re-archived at every slot, each run "
                    "compared with the previous one",
                    "requestBody": body(schedule_create),
                    "responses": {
                        "201": ok("Schedule created", _envelope(schedule)),
                        **errors(400, 401, 413, 429),
                    },
                },
                "get": {
                    "summary": "The account's schedules, newest first",
                    "parameters": paging,
                    "responses": {
                        "200": ok(
                            "Schedules",
                            _obj(
                                ["success", "data", "pagination"],
                                {
                                    "success": {"const": True},
                                    "data": {"type": "array", "items": schedule},
                                    "pagination": pagination,
                                },
                            ),
                        ),
                        **errors(400, 401, 429),
                    },
                },
            },
            "/schedules/{schedule_id}": {
                "get": {
                    "summary": "A schedule",
                    "parameters": [schedule_id],
                    "responses": {
                        "200": ok("Schedule", _envelope(schedule)),
                        **errors(401, 404, 429),
                    },
                },
                "patch": {
                    "summary": "Pause, resume, change the interval, webhook or notify",
                    "parameters": [schedule_id],
                    "requestBody": body(schedule_patch),
                    "responses": {
                        "200": ok("Schedule", _envelope(schedule)),
                        **errors(400, 401, 404, 413, 429),
                    },
                },
                "delete": {
                    "summary": "Delete a schedule (its runs' jobs stay)",
                    "parameters": [schedule_id],
                    "responses": {
                        "200": ok(
                            "Deleted",
                            _envelope(
                                _obj(["id", "deleted"], {"id": _STR, "deleted": {"const": True}})
                            ),
                        ),
                        **errors(401, 404, 429),
                    },
                },
            },
            "/schedules/{schedule_id}/runs": {
                "get": {
                    "summary": "A schedule's runs, newest first",
                    "parameters": [schedule_id, *paging],
                    "responses": {
                        "200": ok(
                            "Runs",
                            _obj(
                                ["success", "data", "pagination"],
                                {
                                    "success": {"const": True},
                                    "data": {"type": "array", "items": run},
                                    "pagination": pagination,
                                },
                            ),
                        ),
                        **errors(400, 401, 404, 429),
                    },
                }
            },
            "/schedules/{schedule_id}/runs/{run}/changes": {
                "get": {
                    "summary": "What changed since the previous completed run (JSON; "
                    "format=html: the report, images inline)",
                    "parameters": [
                        schedule_id,
                        run_number,
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["json", "html"]},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The change summary, or the HTML report",
                            "content": {
                                "application/json": {"schema": _envelope(changes)},
                                "text/html": {"schema": {"type": "string"}},
                            },
                            "headers": dict(rate_headers),
                        },
                        **errors(400, 401, 404, 429),
                    },
                }
            },
            "/connectors": {
                "post": {
                    "summary": "Create a connector (a capture node inside a private network "
                    "that dials out: `bulk connector --server URL --token TOKEN`); its token "
                    "is shown once",
                    "requestBody": body(_obj(["name"], {"name": connector_name})),
                    "responses": {
                        "201": ok("Connector created", _envelope(connector_created)),
                        **errors(400, 401, 413, 429),
                    },
                },
                "get": {
                    "summary": "The account's connectors, online or offline",
                    "responses": {
                        "200": ok("Connectors", _envelope({"type": "array", "items": connector})),
                        **errors(401, 429),
                    },
                },
            },
            "/connectors/{connector_id}": {
                "delete": {
                    "summary": "Delete a connector (its tunnel is closed at once)",
                    "parameters": [connector_id],
                    "responses": {
                        "200": ok(
                            "Deleted",
                            _envelope(
                                _obj(["id", "deleted"], {"id": _STR, "deleted": {"const": True}})
                            ),
                        ),
                        **errors(401, 404, 429),
                    },
                }
            },
            "/connectors/{connector_id}/regenerate-token": {
                "post": {
                    "summary": "A new token for a connector: the old one stops working and "
                    "its tunnel is closed at once",
                    "parameters": [connector_id],
                    "responses": {
                        "200": ok(
                            "New token (shown once)",
                            _envelope(_obj(["id", "token"], {"id": _STR, "token": _STR})),
                        ),
                        **errors(401, 404, 429),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": health}},
                        },
                        "503": {
                            "description": "draining",
                            "content": {"application/json": {"schema": health}},
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
