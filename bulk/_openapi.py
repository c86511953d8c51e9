"""``GET /api/v1/openapi.json``: the API described from the same schema it validates with.

Capture options come from ``OPTION_SPECS`` (so docs, CLI flags and validation cannot
drift), error codes, statuses and descriptions from ``error_table()`` (the exception
classes), rate limits from the running configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._exceptions import error_table
from ._options import OPTION_SPECS, OptionSpec
from ._ratelimit import RateLimit
from ._version import __version__

__all__ = ["openapi_document"]


def _option_schema(spec: OptionSpec) -> dict[str, Any]:
    schema: dict[str, Any]
    if spec.kind == "int":
        schema = {"type": "integer"}
    elif spec.kind == "float":
        schema = {"type": "number"}
    elif spec.kind == "bool":
        schema = {"type": "boolean"}
    elif spec.kind == "choice":
        schema = {"type": "string", "enum": list(spec.choices)}
    elif spec.kind == "str":
        schema = {"type": "string", "minLength": 1, "maxLength": 2048}
    elif spec.kind == "str_list":
        schema = {"type": "array", "items": {"type": "string"}, "maxItems": 50}
    elif spec.kind == "cookies":
        schema = {
            "type": "array",
            "maxItems": 50,
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("name", "value", "domain", "path")},
            },
        }
    else:
        schema = {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 32}
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if spec.default not in (None, ()):
        schema["default"] = spec.default
    schema["description"] = spec.help + (f" Also accepted as `{spec.camel}`." if spec.camel else "")
    return schema


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(
    rate_limits: Mapping[str, RateLimit], in_flight: Mapping[str, int]
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the running service.

    Args:
        rate_limits: The service's request limits per bucket.
        in_flight: Discoveries and captures one key may run at once.
    """
    table = error_table()
    options = {spec.name: _option_schema(spec) for spec in OPTION_SPECS}
    bulk_options = {
        "maxPages": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
        **options,
    }
    errors_by_status: dict[int, list[str]] = {}
    for code, cls in table.items():
        errors_by_status.setdefault(cls.api_status, []).append(code)
    limits = {
        name: {"limit": rule.limit, "window_seconds": rule.window}
        for name, rule in rate_limits.items()
    }

    def errors(*statuses: int) -> dict[str, Any]:
        return {
            str(s): _error_response(", ".join(errors_by_status.get(s, ["error"]))) for s in statuses
        }

    auth: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"Bearer": []}, {"ApiKeyQuery": []}]
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bulk screenshot API",
            "version": __version__,
            "description": "Pixcap-compatible bulk and single screenshot API. "
            f"Rate limits: {limits}. At once per key: {dict(in_flight)}. Error codes: "
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
                "Error": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {
                        "success": {"const": False},
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": list(table)},
                                "message": {"type": "string"},
                                "details": {},
                            },
                        },
                    },
                },
                "CaptureOptions": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": options,
                },
                "BulkOptions": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": bulk_options,
                },
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
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-]{1,255}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "url": {"type": "string"},
                                        "sitemap_url": {"type": "string"},
                                        "options": {"$ref": "#/components/schemas/BulkOptions"},
                                        "webhook_url": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {"description": "Job created (credits reserved)"},
                        **errors(400, 401, 402, 413, 422, 429),
                    },
                }
            },
            "/bulk-screenshot/{job_id}/status": {
                "get": {
                    "summary": "Job progress, credits and download info",
                    "parameters": [job_id],
                    "responses": {"200": {"description": "Status"}, **errors(401, 404, 429)},
                }
            },
            "/bulk-screenshot/{job_id}/download": {
                "get": {
                    "summary": "The job's ZIP (supports Range requests)",
                    "parameters": [job_id],
                    "responses": {
                        "200": {
                            "description": "ZIP",
                            "content": {"application/zip": {}},
                        },
                        "206": {"description": "Partial content"},
                        **errors(401, 404, 409, 410, 429),
                    },
                }
            },
            "/screenshot": {
                "get": {
                    "summary": "Capture one URL; the image is the response body",
                    "parameters": [
                        {
                            "name": "url",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        *[
                            {
                                "name": spec.name,
                                "in": "query",
                                "required": False,
                                "schema": options[spec.name],
                            }
                            for spec in OPTION_SPECS
                        ],
                    ],
                    "responses": {
                        "200": {
                            "description": "Image",
                            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                        },
                        **errors(400, 401, 402, 429, 500),
                    },
                },
                "post": {
                    "summary": "Capture one URL; JSON with a base64 image",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "allOf": [
                                        {"$ref": "#/components/schemas/CaptureOptions"},
                                        {
                                            "required": ["url"],
                                            "properties": {"url": {"type": "string"}},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "Image as base64"},
                        **errors(400, 401, 402, 413, 429, 500),
                    },
                },
            },
            "/register": {
                "post": {
                    "summary": "Create an account; returns its first API key",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["email"],
                                    "properties": {"email": {"type": "string", "format": "email"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {"description": "Account created"},
                        **errors(400, 409, 429),
                    },
                }
            },
            "/account": {
                "get": {
                    "summary": "Plan, credits, API keys and jobs in flight",
                    "responses": {"200": {"description": "Account"}, **errors(401, 429)},
                }
            },
            "/api-keys": {
                "post": {
                    "summary": "Create another API key (max 5 active per account)",
                    "responses": {"201": {"description": "Key created"}, **errors(401, 409, 429)},
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
                    "responses": {"200": {"description": "Deactivated"}, **errors(401, 429)},
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "ok"}, "503": {"description": "draining"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
        },
    }
