"""The dashboard's forms: reading a posted form, and the new-archive form, whose
capture-option fields are generated from ``OPTION_SPECS`` (so the form cannot drift
from what the API validates).

Pure functions over values (no I/O), except ``read_form``, which reads the request
body through the API's own size-limited reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import attrs
from starlette.requests import Request

from .._api import BulkOrder
from .._api._bulk import _request_hash
from .._api._core import _raw_body
from .._exceptions import (
    BulkError,
    DiscoveryError,
    FetchError,
    InvalidURL,
    URLBlocked,
    ValidationError,
)
from .._openapi import MAX_PAGES_API, URL_FIELD_LIMIT
from .._options import OPTION_SPECS, CaptureOptions, OptionSpec, parse_cookie_arg, parse_header_arg
from .._policy import EgressPolicy
from .._urllist import MAX_URLS_PER_JOB, parse_url_lines, prepare_url_list

__all__ = [
    "ACCEPTS_URL_LISTS",
    "ArchiveForm",
    "Estimate",
    "FormField",
    "archive_fields",
    "estimate",
    "field_of_error",
    "order_from_form",
    "read_form",
]

#: Whether the new-archive form offers a pasted URL list (``urls``): the API's
#: ``POST /bulk-screenshot`` takes one, and ``BulkOrder`` carries it.
ACCEPTS_URL_LISTS: Final = True

_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_MAX_FIELDS: Final = 200
_INT: Final = re.compile(r"-?[0-9]{1,9}")
_NUMBER: Final = re.compile(r"-?[0-9]{1,9}(?:\.[0-9]{1,6})?")
# Shown first; every other option (and any option added later) goes under "More options".
_BASIC: Final = frozenset({"width", "height", "format", "quality", "full_page"})
_SITE_FIELDS: Final = frozenset({"url", "sitemap_url", "sitemapUrl"})


async def read_form(request: Request) -> dict[str, str]:
    """The posted form's fields (the last value of a repeated name).

    Raises:
        PayloadTooLarge: The body is over the API's limit (64 KiB).
        ValidationError: Not an urlencoded form, not UTF-8, or too many fields.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await _raw_body(request)
    if ctype != _FORM_TYPE:
        raise ValidationError("the form must be sent as " + _FORM_TYPE, field="body")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=_MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise ValidationError("the form could not be read", field="body") from None
    return dict(pairs)


@attrs.frozen(kw_only=True)
class FormField:
    """One capture-option field of the new-archive form, from its ``OptionSpec``."""

    name: str
    label: str
    control: Literal["number", "select", "checkbox", "text", "lines"]
    help: str
    default: str
    minimum: str | None = None
    maximum: str | None = None
    step: str | None = None
    choices: tuple[str, ...] = ()
    maxlength: int | None = None
    advanced: bool = False


def _num(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def _field(spec: OptionSpec) -> FormField:
    label = spec.name.replace("_", " ").capitalize()
    advanced = spec.name not in _BASIC
    if spec.kind in ("int", "float"):
        return FormField(
            name=spec.name,
            label=label,
            control="number",
            help=spec.help,
            default=_num(spec.default) or "",
            minimum=_num(spec.minimum),
            maximum=_num(spec.maximum),
            step="1" if spec.kind == "int" else "any",
            advanced=advanced,
        )
    if spec.kind == "choice":
        return FormField(
            name=spec.name,
            label=label,
            control="select",
            help=spec.help,
            default=str(spec.default),
            choices=spec.choices,
            advanced=advanced,
        )
    if spec.kind == "bool":
        return FormField(
            name=spec.name,
            label=label,
            control="checkbox",
            help=spec.help,
            default="on" if spec.default else "",
            advanced=advanced,
        )
    if spec.kind == "str":
        return FormField(
            name=spec.name,
            label=label,
            control="text",
            help=spec.help,
            default="",
            maxlength=2048,
            advanced=advanced,
        )
    one_per_line = {
        "str_list": " One per line.",
        "cookies": " One NAME=VALUE per line.",
        "headers": " One 'Name: value' per line.",
        "actions": " A JSON array of steps, as the API takes it.",
    }[spec.kind]
    return FormField(
        name=spec.name,
        label=label,
        control="lines",
        help=spec.help.replace(" (repeatable).", ".") + one_per_line,
        default="",
        advanced=advanced,
    )


def archive_fields() -> tuple[FormField, ...]:
    """The capture-option fields of the new-archive form, in ``OPTION_SPECS`` order."""
    return tuple(_field(spec) for spec in OPTION_SPECS)


@attrs.frozen(kw_only=True)
class ArchiveForm:
    """What the new-archive template shows: values as typed, errors by field."""

    values: Mapping[str, str]
    errors: Mapping[str, str] = attrs.field(factory=dict)
    fields: tuple[FormField, ...] = attrs.field(factory=archive_fields)
    max_pages_limit: int = MAX_PAGES_API
    url_lists: bool = ACCEPTS_URL_LISTS

    @classmethod
    def blank(cls, idempotency_key: str) -> ArchiveForm:
        values = {f.name: f.default for f in archive_fields()}
        values.update(site="", max_pages=str(MAX_PAGES_API), idem=idempotency_key)
        return cls(values=values)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _option_value(spec: OptionSpec, raw: str) -> Any:
    """A form field's text as the JSON value the API would get, or None (not given)."""
    text = raw.strip()
    if spec.kind == "bool":
        return True if text else None
    if not text:
        return None
    if spec.kind == "int":
        if not _INT.fullmatch(text):
            raise ValidationError(f"{spec.name} must be a whole number", field=spec.name)
        return int(text)
    if spec.kind == "float":
        if not _NUMBER.fullmatch(text):
            raise ValidationError(f"{spec.name} must be a number", field=spec.name)
        return float(text)
    if spec.kind in ("str", "choice"):
        return text
    if spec.kind == "str_list":
        return _lines(text)
    if spec.kind == "cookies":
        return [
            {"name": c.name, "value": c.value} for c in (parse_cookie_arg(v) for v in _lines(text))
        ]
    if spec.kind == "headers":
        return dict(parse_header_arg(v) for v in _lines(text))
    if spec.kind == "actions":
        # The API's own JSON shape; its steps are checked by ``CaptureOptions``.
        try:
            return json.loads(text)
        except ValueError:
            raise ValidationError(f"{spec.name} must be a JSON array", field=spec.name) from None
    raise AssertionError(spec.kind)  # pragma: no cover


def order_from_form(form: Mapping[str, str], policy: EgressPolicy) -> BulkOrder:
    """The bulk job a posted new-archive form asks for.

    The capture options go through ``CaptureOptions.from_mapping``, the API's own
    validation, as the JSON values the API would get. ``idem`` (a token the form was
    rendered with) is the order's idempotency key, so submitting the same form twice
    makes one job. A pasted URL list (``urls``, the CLI's ``--urls`` format: a URL
    per line) is checked whole as the API checks its ``urls`` (``prepare_url_list``);
    it is captured as given, so max pages does not apply to it.

    Args:
        form: The posted fields.
        policy: The address policy every listed URL must pass (static checks, no I/O).

    Raises:
        ValidationError: A field is missing or out of range; ``field`` names the form
            field (``site``, ``urls``, ``max_pages``, or an option's name).
    """
    site = form.get("site", "").strip()
    listed = form.get("urls", "").strip()
    if site and listed:
        raise ValidationError("give a site or a list of URLs, not both", field="urls")
    if not site and not listed:
        raise ValidationError("give the site or sitemap URL to archive", field="site")
    if len(site) > URL_FIELD_LIMIT:
        raise ValidationError(f"the URL is over {URL_FIELD_LIMIT} characters", field="site")
    text = form.get("max_pages", "").strip()
    if not _INT.fullmatch(text) or not 1 <= int(text) <= MAX_PAGES_API:
        raise ValidationError(
            f"max pages must be a whole number from 1 to {MAX_PAGES_API}", field="max_pages"
        )
    mapping: dict[str, Any] = {}
    for spec in OPTION_SPECS:
        try:
            value = _option_value(spec, form.get(spec.name, ""))
        except ValidationError as exc:
            raise ValidationError(exc.message, field=spec.name) from None
        if value is not None:
            mapping[spec.name] = value
    try:
        options = CaptureOptions.from_mapping(mapping)
    except ValidationError as exc:
        # ``options.width``, ``actions[0].click``: the form's field is the option's.
        field = re.split(r"[.\[]", exc.field or "")[0] or None
        raise ValidationError(exc.message, field=field) from None
    url_list = None
    if listed:
        try:
            raw = parse_url_lines(listed.splitlines(), "urls")
            url_list = prepare_url_list(raw, options, policy, limit=MAX_URLS_PER_JOB)
        except ValidationError as exc:
            # Each bad line is named in the message (``urls:<line>``); the field is the list's.
            raise ValidationError(exc.message, field="urls") from None
    idem = form.get("idem", "").strip()
    request = {
        **({"urls": [i.url for i in url_list.items]} if url_list else {"url": site}),
        "options": {"maxPages": int(text), **options.to_json()},
    }
    return BulkOrder(
        target=site,
        field="urls" if url_list else "url",
        max_pages=int(text),
        options=options,
        url_list=url_list,
        idempotency_key=idem if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", idem) else None,
        request_hash=_request_hash(request),
    )


def field_of_error(exc: BulkError, names: Sequence[str]) -> str | None:
    """The form field an error belongs next to (None: the form as a whole).

    The API's ``details.field`` names it (``url``, ``options.width``, ``maxPages``);
    a URL the policy refuses or a site where discovery found nothing is the site's.
    """
    details = exc.details if isinstance(exc.details, dict) else {}
    field = details.get("field")
    if isinstance(field, str) and field:
        field = re.split(r"[.\[]", field.removeprefix("options."))[0]
        if field in _SITE_FIELDS:
            return "site"
        if field.startswith("urls"):
            return "urls" if "urls" in names else "site"
        if field in ("maxPages", "max_pages"):
            return "max_pages"
        by_alias = {alias: s.name for s in OPTION_SPECS for alias in s.api_names}
        field = by_alias.get(field, field)
        return field if field in names else None
    if isinstance(exc, DiscoveryError | FetchError | InvalidURL | URLBlocked):
        return "site"
    return None


@attrs.frozen
class Estimate:
    """The credits a job may reserve, told before it is submitted."""

    max_pages: int
    balance: int

    @property
    def upto(self) -> int:
        return self.max_pages

    @property
    def enough(self) -> bool:
        return self.balance >= self.max_pages


def estimate(form: Mapping[str, str], balance: int) -> Estimate:
    """The estimate for the form as typed: a pasted list's lines, else its max pages
    (the API's default if unreadable)."""
    listed = [line for line in _lines(form.get("urls", "")) if not line.startswith("#")]
    if listed:
        return Estimate(len(listed), balance)
    text = form.get("max_pages", "").strip()
    pages = int(text) if _INT.fullmatch(text) and 1 <= int(text) <= MAX_PAGES_API else MAX_PAGES_API
    return Estimate(pages, balance)
