"""URL-list input: the items a user sends instead of a site, checked as a whole.

A URL-list job (``POST /bulk-screenshot`` with ``urls``, ``bulk archive --urls``) is
another kind of input to the same pipeline: it becomes ledger rows like a sitemap's
URLs. Each item is a URL string or ``{"url": ..., "options": {...}}`` overriding the
job's capture options for that URL. ``prepare_url_list`` checks every item before
anything is reserved or captured:

* the URL is normalised (WHATWG form, fragment dropped unless it is a ``#!``/``#/``
  route, as for sitemap URLs) and must pass the address policy's static checks;
* per-URL options are validated merged onto the job's (``CaptureOptions``), with
  the field named from the item (``urls[3].options.width``);
* an item whose normalised URL repeats an earlier one is captured and charged once
  (``deduplicated`` counts them); repeating one with other options is an error.

Every bad item is reported (index, code, reason) in one ``VALIDATION_ERROR`` whose
``details.errors`` lists them; a list with any bad item is refused as a whole.

``parse_url_lines`` reads the CLI's file format: one URL per line, or JSON lines
(a JSON string, or the object form); blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs

from ._exceptions import BulkError, InvalidURL, ValidationError
from ._options import OPTION_SPECS, CaptureOptions
from ._policy import EgressPolicy
from ._urls import page_url, parse_http_url

__all__ = [
    "MAX_LIST_ERRORS",
    "MAX_URLS_PER_JOB",
    "RawItem",
    "UrlList",
    "UrlListItem",
    "override_of",
    "parse_url_lines",
    "prepare_url_list",
    "raw_items",
    "screenshot_names",
]

#: Items one URL-list job may hold (the API's documented cap).
MAX_URLS_PER_JOB: Final = 5000
#: Bad items named in one error (the rest are counted).
MAX_LIST_ERRORS: Final = 100

_BY_ALIAS: Final = {alias: spec.name for spec in OPTION_SPECS for alias in spec.api_names}


@final
@attrs.frozen
class RawItem:
    """One item as given: its URL text and its options object (``None``: none)."""

    url: Any
    options: Any = None
    #: A field the item has besides ``url`` and ``options`` (refused as the item's fault).
    unknown: str | None = None
    #: Its line in the CLI's file (errors then name ``<file>:<line>``).
    line: int | None = None


@final
@attrs.frozen
class UrlListItem:
    """One distinct URL of a list, ready for the ledger.

    Attributes:
        index: Its position in the list as given (0-based).
        url: The normalised URL.
        override: Its options where they differ from the job's
            (``CaptureOptions.to_json`` keys), ``None`` when it has the job's.
        options: Its effective options.
    """

    index: int
    url: str
    override: Mapping[str, Any] | None
    options: CaptureOptions


@final
@attrs.frozen
class UrlList:
    """A checked list: its distinct items in order and how many repeats were dropped."""

    items: tuple[UrlListItem, ...]
    given: int
    deduplicated: int

    @property
    def first_url(self) -> str:
        return self.items[0].url

    def signature(self) -> str:
        """SHA-256 of the URLs and their overrides (what ``--resume`` compares)."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(item.url.encode())
            digest.update(json.dumps(item.override, sort_keys=True).encode())
            digest.update(b"\n")
        return digest.hexdigest()


def normalise_list_url(text: str) -> str:
    """A list item's URL in the form it is captured and deduplicated by.

    Raises:
        InvalidURL: Not an absolute http(s) URL.
    """
    parsed = parse_http_url(text.strip())
    normal = page_url(parsed.href, parsed.href)
    if normal is None:  # pragma: no cover - parse_http_url accepted it
        raise InvalidURL(f"not a valid URL: {text[:80]!r}")
    return normal


def override_of(base: CaptureOptions, options: Any, field: str) -> CaptureOptions:
    """``base`` with an item's ``options`` object applied (API spellings accepted).

    Raises:
        ValidationError: Not an object, an unknown option, one given twice (in both
            spellings), or a value the merged options refuse; ``field`` prefixes
            the name of the field at fault.
    """
    if not isinstance(options, Mapping):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    names: dict[str, Any] = {}
    for key, value in options.items():
        name = _BY_ALIAS.get(key) if isinstance(key, str) else None
        if name is None:
            raise ValidationError(f"unknown option {key!r}", field=f"{field}.{key}")
        if name in names:
            raise ValidationError(f"option {name!r} given twice", field=f"{field}.{key}")
        names[name] = value
    merged = {**base.to_json(), **names}
    try:
        return CaptureOptions.from_mapping(merged)
    except ValidationError as exc:
        inner = f"{field}.{exc.field}" if exc.field else field
        raise ValidationError(exc.message, field=inner) from None


def _difference(base: Mapping[str, Any], options: CaptureOptions) -> dict[str, Any] | None:
    effective = options.to_json()
    changed = {k: v for k, v in effective.items() if base.get(k) != v}
    return changed or None


def prepare_url_list(
    raw: Sequence[RawItem],
    base: CaptureOptions,
    policy: EgressPolicy,
    *,
    field: str = "urls",
    limit: int | None = MAX_URLS_PER_JOB,
) -> UrlList:
    """Check a whole list, item by item, and drop repeats.

    Args:
        raw: The items as given.
        base: The job's capture options.
        policy: The address policy every URL must pass (static checks, no I/O).
        field: How the list is named in errors (``urls``; the CLI: the file).
        limit: Most items accepted (``None``: no cap).

    Returns:
        The distinct items in order.

    Raises:
        ValidationError: The list is empty or over ``limit`` (``details.field``), or
            items are bad: ``details.errors`` lists ``{"index", "field", "code",
            "message"}`` of each (at most ``MAX_LIST_ERRORS``) and
            ``details.bad_items`` counts them.
    """
    if not raw:
        raise ValidationError(f"{field} must list at least one URL", field=field)
    if limit is not None and len(raw) > limit:
        raise ValidationError(
            f"{field} lists {len(raw)} items; at most {limit} are accepted", field=field
        )
    base_json = base.to_json()
    errors: list[dict[str, Any]] = []
    bad = 0
    items: list[UrlListItem] = []
    first_of: dict[str, UrlListItem] = {}
    deduplicated = 0

    def refuse(index: int, where: str, exc: BulkError) -> None:
        nonlocal bad
        bad += 1
        if len(errors) < MAX_LIST_ERRORS:
            errors.append(
                {"index": index, "field": where, "code": exc.code, "message": exc.message}
            )

    for index, item in enumerate(raw):
        where = f"{field}:{item.line}" if item.line is not None else f"{field}[{index}]"
        try:
            if item.unknown is not None:
                raise ValidationError(f"unknown field {item.unknown!r}", field=where)
            if not isinstance(item.url, str) or not item.url.strip():
                raise ValidationError("the URL must be a non-empty string", field=where)
            url = normalise_list_url(item.url)
            policy.check_url(url)
        except BulkError as exc:
            refuse(index, f"{where}.url" if item.options is not None else where, exc)
            continue
        options = base
        if item.options is not None:
            try:
                options = override_of(base, item.options, f"{where}.options")
            except ValidationError as exc:
                refuse(index, exc.field or where, exc)
                continue
        earlier = first_of.get(url)
        if earlier is not None:
            if earlier.options != options:
                refuse(
                    index,
                    where,
                    ValidationError(
                        f"repeats item {earlier.index} ({url}) with other options", field=where
                    ),
                )
            else:
                deduplicated += 1
            continue
        entry = UrlListItem(
            index=index,
            url=url,
            override=None if options is base else _difference(base_json, options),
            options=options,
        )
        first_of[url] = entry
        items.append(entry)
    if bad:
        shown = ", ".join(f"{e['field']}: {e['code']}: {e['message']}" for e in errors[:3])
        more = f" (and {bad - 3} more)" if bad > 3 else ""
        raise ValidationError(
            f"{bad} item{'s' if bad > 1 else ''} of {field} refused, nothing was done: "
            f"{shown}{more}",
            details={"field": field, "errors": errors, "bad_items": bad},
        )
    return UrlList(items=tuple(items), given=len(raw), deduplicated=deduplicated)


def raw_items(value: Any, field: str = "urls") -> list[RawItem]:
    """The API's ``urls`` array as items: each a URL string or ``{"url", "options"}``.

    Items of another shape become items ``prepare_url_list`` refuses (with their
    index), so one bad item never hides the others.

    Raises:
        ValidationError: ``value`` is not an array.
    """
    if not isinstance(value, list):
        raise ValidationError(f"{field} must be an array", field=field)
    items: list[RawItem] = []
    for item in value:
        if isinstance(item, Mapping):
            unknown = sorted(str(k) for k in item if k not in ("url", "options"))
            items.append(
                RawItem(item.get("url"), item.get("options"), unknown[0] if unknown else None)
            )
        else:
            items.append(RawItem(item))
    return items


def parse_url_lines(lines: Iterable[str], source: str = "the list") -> list[RawItem]:
    """Read the CLI's ``--urls`` format: a URL per line, or JSON lines.

    A line that starts with ``{`` is an object ``{"url": ..., "options": {...}}``,
    one that starts with ``"`` a JSON string; any other non-blank line not starting
    with ``#`` is a URL as written.

    Items carry their line number; an object with fields other than ``url`` and
    ``options`` is refused with the rest by ``prepare_url_list``.

    Raises:
        ValidationError: A JSON line that does not parse or has no ``url``
            (``field``: ``<source>:<line>``).
    """
    items: list[RawItem] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{source}:{number}"
        if text[0] in '{"':
            try:
                value = json.loads(text)
            except ValueError:
                raise ValidationError(f"{where}: not valid JSON", field=where) from None
            if isinstance(value, str):
                items.append(RawItem(value, line=number))
                continue
            if not isinstance(value, dict) or "url" not in value:
                raise ValidationError(f"{where}: a JSON line needs a url", field=where)
            unknown = sorted(set(value) - {"url", "options"})
            # Checked with the rest of the list: every bad line is named at once.
            items.append(
                RawItem(
                    value["url"], value.get("options"), unknown[0] if unknown else None, number
                )
            )
            continue
        items.append(RawItem(text, line=number))
    return items


def screenshot_names(options: CaptureOptions) -> tuple[str, ...]:
    """The names of the intermediate screenshots a capture script takes, in order.

    Read from the options' JSON form (``actions``: a list of one-key steps, the
    ``screenshot`` step being ``{"screenshot": {"name": ...}}`` or
    ``{"screenshot": "name"}``), so it follows the documented API shape.
    """
    actions = options.to_json().get("actions")
    names: list[str] = []
    if not isinstance(actions, list):
        return ()
    for step in actions:
        if not isinstance(step, Mapping) or "screenshot" not in step:
            continue
        spec = step["screenshot"]
        name = spec.get("name") if isinstance(spec, Mapping) else spec
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return tuple(names)
