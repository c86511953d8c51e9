"""Capture options: one frozen, validated type, and the schema CLI flags and API fields come from.

The schema (``OPTION_SPECS``) is the single description of every capture option:
its type, bounds, default and spellings. ``CaptureOptions.from_mapping`` validates an
API body against it (strict JSON types: ``"50"``, ``true`` and ``1.5`` are not
integers), ``capture_option_decorators`` turns it into click options, and the
OpenAPI document is generated from it, so the three cannot drift apart.

Capture scripts (the ``actions`` option) have their own module, ``_actions``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import attrs

from ._actions import Action, parse_actions, validate_actions
from ._exceptions import ValidationError
from ._urls import HTTP_TOKEN_PATTERN

__all__ = [
    "FORBIDDEN_HEADERS",
    "LIMITS",
    "MARGIN_PATTERN",
    "MAX_HTML_BYTES",
    "OPTION_SPECS",
    "PDF_FORMATS",
    "PNG_COMPRESSION",
    "TOKEN_PATTERN",
    "WAIT_UNTIL",
    "CaptureOptions",
    "Cookie",
    "OptionSpec",
    "lease_seconds",
    "parse_actions_arg",
    "parse_cookie_arg",
    "parse_header_arg",
]

ImageFormat = Literal["png", "jpeg", "webp", "pdf"]
FORMATS: Final = ("png", "jpeg", "webp", "pdf")
PdfFormat = Literal["A4", "Letter", "Legal", "A3", "Tabloid"]
PDF_FORMATS: Final = ("A4", "Letter", "Legal", "A3", "Tabloid")
PngCompression = Literal["fast", "small"]
PNG_COMPRESSION: Final = ("fast", "small")
WaitUntil = Literal["load", "domcontentloaded", "networkidle", "mostly_idle"]
WAIT_UNTIL: Final = ("load", "domcontentloaded", "networkidle", "mostly_idle")

#: Largest HTML document ``capture_html`` renders (bytes of UTF-8).
MAX_HTML_BYTES: Final = 1024 * 1024

#: Full-page captures are cut at this many CSS pixels (an infinite page stays finite).
FULL_PAGE_MAX_HEIGHT: Final = 16384

_TOKEN = re.compile(HTTP_TOKEN_PATTERN)
_COOKIE_NAME = _TOKEN  # a cookie name is a token (RFC 6265 4.1.1)
_CTL = re.compile(r"[\x00-\x1f\x7f]")
# Headers a caller may not set: they belong to the transport or to the egress proxy.
_FORBIDDEN_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "proxy-authenticate",
    }
)
_MAX_HEADERS: Final = 32
_MAX_COOKIES: Final = 50
_MAX_SELECTORS: Final = 50
_MAX_STR: Final = 2048
_MAX_VALUE: Final = 4096
# CSS margin shorthand: one to four lengths (a bare 0, or a number with px/in/cm/mm).
_LENGTH: Final = r"(?:0|[0-9]{1,4}(?:\.[0-9]{1,3})?(?:px|in|cm|mm))"
_MARGIN: Final = re.compile(rf"^{_LENGTH}(?: {_LENGTH}){{0,3}}$")

# The same bounds, for the OpenAPI document (which describes what is validated here).
TOKEN_PATTERN: Final = _TOKEN.pattern
FORBIDDEN_HEADERS: Final = _FORBIDDEN_HEADERS
LIMITS: Final = {
    "str": _MAX_STR,
    "list": _MAX_SELECTORS,
    "cookies": _MAX_COOKIES,
    "headers": _MAX_HEADERS,
    "cookie_value": _MAX_VALUE,
    "header_value": _MAX_VALUE,
}
#: The pattern of ``pdf_margin`` (for the OpenAPI document).
MARGIN_PATTERN: Final = _MARGIN.pattern


@attrs.frozen
class Cookie:
    """A cookie set before the page loads; ``domain`` defaults to the page's host."""

    name: str
    value: str
    domain: str | None = None
    path: str | None = None


@attrs.frozen
class OptionSpec:
    """One capture option as the CLI, the API and the docs see it."""

    name: str
    kind: Literal[
        "int", "float", "bool", "str", "choice", "str_list", "cookies", "headers", "actions"
    ]
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    camel: str | None = None
    cli_flag: str | None = None
    cli_metavar: str | None = None
    #: A ``str`` option's values must match this (whole string; Python ``re``).
    pattern: str | None = None

    @property
    def api_names(self) -> tuple[str, ...]:
        return (self.name,) if self.camel is None else (self.name, self.camel)

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")


def lease_seconds(timeout_ms: float) -> float:
    """How long a claim on one URL lasts, for a capture deadline of ``timeout_ms``.

    Three deadlines (a retry inside the claim, a browser relaunch) plus a minute:
    a lease that ran out would let another worker capture (and charge) the URL twice.
    """
    return timeout_ms / 1000 * 3 + 60


def _camel(name: str) -> str | None:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest) if rest else None


def _spec(name: str, kind: Any, default: Any, help: str, **kw: Any) -> OptionSpec:
    return OptionSpec(name=name, kind=kind, default=default, help=help, camel=_camel(name), **kw)


OPTION_SPECS: Final[tuple[OptionSpec, ...]] = (
    _spec("width", "int", 1280, "Viewport width in CSS pixels.", minimum=320, maximum=3840),
    _spec("height", "int", 800, "Viewport height in CSS pixels.", minimum=200, maximum=2160),
    _spec(
        "format",
        "choice",
        "png",
        "Image format, or pdf for a printed PDF of the page (see the pdf_ options).",
        choices=FORMATS,
    ),
    _spec("quality", "int", 80, "JPEG/WebP quality.", minimum=1, maximum=100),
    _spec(
        "png_compression",
        "choice",
        "fast",
        "How Chromium compresses a PNG: fast (less CPU per capture, bigger files) or "
        "small (about 23% smaller files, more CPU per capture).",
        choices=PNG_COMPRESSION,
    ),
    _spec(
        "full_page",
        "bool",
        False,
        f"Capture the whole scrollable page (cut at {FULL_PAGE_MAX_HEIGHT} px; "
        "lazy content is scrolled into view first).",
    ),
    _spec("delay", "int", 0, "Extra wait after load, in ms.", minimum=0, maximum=10000),
    _spec("wait_for_selector", "str", None, "Wait until this CSS selector appears."),
    _spec("selector", "str", None, "Capture only the element this CSS selector matches."),
    _spec("dark_mode", "bool", False, "Emulate prefers-color-scheme: dark."),
    _spec("scale", "float", 1.0, "Device scale factor.", minimum=1, maximum=3),
    _spec(
        "block_selectors",
        "str_list",
        (),
        "CSS selectors hidden before capture (repeatable).",
        cli_flag="--block-selector",
        cli_metavar="SELECTOR",
    ),
    _spec(
        "cookies",
        "cookies",
        (),
        "Cookie set before loading, NAME=VALUE (repeatable).",
        cli_flag="--cookie",
        cli_metavar="NAME=VALUE",
    ),
    _spec(
        "headers",
        "headers",
        (),
        "Extra request header, 'Name: value' (repeatable).",
        cli_flag="--header",
        cli_metavar="'NAME: VALUE'",
    ),
    _spec("user_agent", "str", None, "User-Agent string."),
    _spec(
        "dismiss_cookie_consent",
        "bool",
        False,
        "Click 'accept' on common cookie consent banners (OneTrust, Cookiebot, ...).",
    ),
    _spec(
        "timeout", "int", 30000, "Wall-clock limit per URL, in ms.", minimum=1000, maximum=120000
    ),
    _spec(
        "wait_until",
        "choice",
        "load",
        "What to wait for before the capture: the load event, DOMContentLoaded, no "
        "request for 500 ms (networkidle), or at most 2 for 500 ms (mostly_idle).",
        choices=WAIT_UNTIL,
    ),
    _spec(
        "load_timeout",
        "int",
        10000,
        "How long wait_until may take, in ms; then the page is captured as it is and "
        "marked load: partial with the hosts still loading (timeout stays the hard limit).",
        minimum=500,
        maximum=120000,
    ),
    _spec(
        "freeze_animations",
        "bool",
        False,
        "Finish CSS animations and transitions, and emulate prefers-reduced-motion: reduce.",
    ),
    _spec("block_media", "bool", False, "Do not load images, video, audio or web fonts."),
    _spec(
        "block_ads",
        "bool",
        False,
        "Do not load ads and trackers (EasyList filters, Brave's adblock engine).",
    ),
    _spec(
        "actions",
        "actions",
        (),
        "Steps run before the capture, a JSON array: click, hover, type, select, check, "
        "uncheck, press, scroll, evaluate, css, goto, wait, wait_for_selector, screenshot "
        "(see Capture scripts).",
        cli_metavar="JSON|@FILE",
    ),
    _spec("pdf_format", "choice", "A4", "Paper size of a PDF.", choices=PDF_FORMATS),
    _spec("pdf_landscape", "bool", False, "Print a PDF in landscape orientation."),
    _spec(
        "pdf_print_background",
        "bool",
        True,
        "Print background colours and images into a PDF.",
    ),
    _spec(
        "pdf_margin",
        "str",
        None,
        "PDF page margins, as in CSS: 1 to 4 lengths (0, or a number with px, in, cm or "
        "mm), e.g. '1cm' or '10mm 15mm'.",
        pattern=_MARGIN.pattern,
    ),
)

_SPECS_BY_NAME: Final = {s.name: s for s in OPTION_SPECS}


def _check_str(value: str, field: str, *, limit: int = _MAX_STR) -> str:
    if not value or len(value) > limit:
        raise ValidationError(f"{field} must be 1 to {limit} characters", field=field)
    if _CTL.search(value):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    return value


def _validate_cookies(cookies: tuple[Cookie, ...]) -> None:
    if len(cookies) > _MAX_COOKIES:
        raise ValidationError(f"at most {_MAX_COOKIES} cookies", field="cookies")
    for c in cookies:
        if not _COOKIE_NAME.match(c.name) or len(c.name) > 256:
            raise ValidationError(f"invalid cookie name {c.name!r}", field="cookies")
        if _CTL.search(c.value) or ";" in c.value or len(c.value) > _MAX_VALUE:
            raise ValidationError(f"invalid value for cookie {c.name!r}", field="cookies")
        if c.domain is not None:
            _check_str(c.domain, "cookies.domain", limit=253)
        if c.path is not None and (
            not c.path.startswith("/") or ";" in c.path or _CTL.search(c.path)
        ):
            raise ValidationError(
                "cookie path must start with '/' (no ';', no control characters)",
                field="cookies.path",
            )
        if c.path is not None:
            _check_str(c.path, "cookies.path")


def _validate_headers(headers: tuple[tuple[str, str], ...]) -> None:
    if len(headers) > _MAX_HEADERS:
        raise ValidationError(f"at most {_MAX_HEADERS} headers", field="headers")
    for name, value in headers:
        if not _TOKEN.match(name) or len(name) > 256:
            raise ValidationError(f"invalid header name {name!r}", field="headers")
        if name.lower() in _FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
            raise ValidationError(f"header {name!r} cannot be set", field="headers")
        if _CTL.search(value.replace("\t", " ")) or len(value) > _MAX_VALUE:
            raise ValidationError(f"invalid value for header {name!r}", field="headers")


def _in_range(spec: OptionSpec, value: float) -> None:
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValidationError(
            f"{spec.name} must be between {_num(lo)} and {_num(hi)}", field=spec.name
        )


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


@attrs.frozen(kw_only=True)
class CaptureOptions:
    """How one page is captured. Frozen and valid by construction.

    Build it with keyword arguments (values already of the right Python type), with
    ``from_mapping`` for an API body, or from CLI values. Every combination that
    constructs is one the capture engine supports.

    Raises:
        ValidationError: A value is out of range or malformed; ``field`` names it.
    """

    width: int = 1280
    height: int = 800
    format: ImageFormat = "png"
    quality: int = 80
    png_compression: PngCompression = "fast"
    full_page: bool = False
    delay: int = 0
    wait_for_selector: str | None = None
    selector: str | None = None
    dark_mode: bool = False
    scale: float = 1.0
    block_selectors: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    cookies: tuple[Cookie, ...] = attrs.field(default=(), converter=tuple)
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    user_agent: str | None = None
    dismiss_cookie_consent: bool = False
    timeout: int = 30000
    wait_until: WaitUntil = "load"
    load_timeout: int = 10000
    freeze_animations: bool = False
    block_media: bool = False
    block_ads: bool = False
    actions: tuple[Action, ...] = attrs.field(default=(), converter=tuple)
    pdf_format: PdfFormat = "A4"
    pdf_landscape: bool = False
    pdf_print_background: bool = True
    pdf_margin: str | None = None

    def __attrs_post_init__(self) -> None:
        for spec in OPTION_SPECS:
            value = getattr(self, spec.name)
            if spec.kind in ("int", "float"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValidationError(f"{spec.name} must be a number", field=spec.name)
                if spec.kind == "int" and not isinstance(value, int):
                    raise ValidationError(f"{spec.name} must be an integer", field=spec.name)
                if not math.isfinite(value):
                    raise ValidationError(f"{spec.name} must be finite", field=spec.name)
                _in_range(spec, value)
            elif spec.kind == "choice" and value not in spec.choices:
                raise ValidationError(
                    f"{spec.name} must be one of {', '.join(spec.choices)}", field=spec.name
                )
            elif spec.kind == "bool" and not isinstance(value, bool):
                raise ValidationError(f"{spec.name} must be true or false", field=spec.name)
            elif spec.kind == "str" and value is not None:
                _check_str(value, spec.name)
                if spec.pattern is not None and not re.match(spec.pattern, value):
                    raise ValidationError(f"{spec.name} is malformed: {spec.help}", field=spec.name)
            elif spec.kind == "str_list":
                if len(value) > _MAX_SELECTORS:
                    raise ValidationError(f"at most {_MAX_SELECTORS} {spec.name}", field=spec.name)
                for item in value:
                    _check_str(item, spec.name)
        _validate_cookies(self.cookies)
        _validate_headers(self.headers)
        validate_actions(self.actions)
        if self.format == "pdf" and self.selector is not None:
            raise ValidationError(
                "selector captures one element as an image: not with format pdf",
                field="selector",
            )

    @property
    def extension(self) -> str:
        """File extension of the images these options make (``png``, ``jpg``, ``webp``)."""
        return "jpg" if self.format == "jpeg" else self.format

    @property
    def mime_type(self) -> str:
        return "application/pdf" if self.format == "pdf" else f"image/{self.format}"

    @property
    def goto_urls(self) -> tuple[str, ...]:
        """The URLs the ``actions`` script navigates to: callers check each against
        the egress policy before anything is charged, as they do the page's URL."""
        return tuple(a.url for a in self.actions if a.kind == "goto" and a.url is not None)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> CaptureOptions:
        """Validate an API-style mapping (snake_case or camelCase keys, JSON types).

        Args:
            data: The decoded JSON object.
            ignore: Keys that belong to the caller (e.g. ``maxPages``) and are skipped.

        Returns:
            The options; absent keys take their defaults.

        Raises:
            ValidationError: Unknown key, a key given twice in both spellings, a value
                of the wrong JSON type (``null`` included) or out of range.
        """
        skip = set(ignore)
        by_alias = {alias: spec for spec in OPTION_SPECS for alias in spec.api_names}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key in skip:
                continue
            spec = by_alias.get(key)
            if spec is None:
                raise ValidationError(f"unknown option {key!r}", field=key)
            if spec.name in values:
                raise ValidationError(f"option {spec.name!r} given twice", field=key)
            values[spec.name] = _from_json(spec, raw, key)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict with snake_case keys (manifest, ledger).

        Unset optional values are left out, so ``from_mapping(o.to_json()) == o``.
        """
        out: dict[str, Any] = {}
        for spec in OPTION_SPECS:
            value = getattr(self, spec.name)
            if value is None:
                continue
            if spec.kind == "cookies":
                value = [{k: v for k, v in attrs.asdict(c).items() if v is not None} for c in value]
            elif spec.kind == "headers":
                value = dict(value)
            elif spec.kind == "str_list":
                value = list(value)
            elif spec.kind == "actions":
                value = [a.to_json() for a in value]
            out[spec.name] = value
        return out

    def public_json(self) -> dict[str, Any]:
        """Like ``to_json`` but with cookie values and header values redacted."""
        out = self.to_json()
        out["cookies"] = [{**c, "value": "***"} for c in out["cookies"]]
        out["headers"] = {k: "***" for k in out["headers"]}
        # Text typed into a page may be a password.
        out["actions"] = [
            {"type": {**a["type"], "text": "***"}} if "type" in a else a for a in out["actions"]
        ]
        return out


def _from_json(spec: OptionSpec, raw: Any, key: str) -> Any:
    """Check one JSON value's type strictly and convert it to the attribute's type."""

    def bad(what: str) -> ValidationError:
        return ValidationError(f"{key} must be {what}", field=key)

    if spec.kind == "int":
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)  # JSON Schema's integer: 5.0 is one (1.5 is not)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad("an integer")
        return raw
    if spec.kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise bad("a number")
        return float(raw)
    if spec.kind == "bool":
        if not isinstance(raw, bool):
            raise bad("true or false")
        return raw
    if spec.kind in ("str", "choice"):
        if not isinstance(raw, str):
            raise bad("a string")
        return raw
    if spec.kind == "str_list":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise bad("an array of strings")
        return tuple(raw)
    if spec.kind == "cookies":
        if not isinstance(raw, list):
            raise bad("an array of {name, value, domain?, path?} objects")
        cookies = []
        for item in raw:
            if not isinstance(item, dict) or not {"name", "value"} <= item.keys():
                raise bad("an array of {name, value, domain?, path?} objects")
            extra = item.keys() - {"name", "value", "domain", "path"}
            if extra:
                raise bad(f"cookie objects without {sorted(extra)[0]!r}")
            if not all(isinstance(v, str) for v in item.values()):
                raise bad("cookie objects with string fields")
            cookies.append(Cookie(**item))
        return tuple(cookies)
    if spec.kind == "actions":
        return parse_actions(raw, key)
    if spec.kind == "headers":
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise bad("an object of string header values")
        return tuple(raw.items())
    raise AssertionError(spec.kind)  # pragma: no cover


def parse_cookie_arg(text: str) -> Cookie:
    """Parse the CLI's ``NAME=VALUE`` cookie argument."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValidationError(f"cookie must be NAME=VALUE, got {text!r}", field="cookies")
    return Cookie(name=name.strip(), value=value)


def parse_header_arg(text: str) -> tuple[str, str]:
    """Parse the CLI's ``'Name: value'`` header argument."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValidationError(f"header must be 'Name: value', got {text!r}", field="headers")
    return name.strip(), value.strip()


F = TypeVar("F", bound=Callable[..., Any])


def capture_option_decorators() -> list[Callable[[F], F]]:
    """Click options for every capture option, generated from ``OPTION_SPECS``.

    Returns:
        Decorators to apply to a click command; each passes its value under the
        option's snake_case name (``None``/empty when the user did not give it).
    """
    import click

    decorators: list[Callable[[F], F]] = []
    for spec in OPTION_SPECS:
        default_note = "" if spec.default in (None, (), False) else f" [default: {spec.default}]"
        help_text = spec.help + default_note
        opt: Callable[[F], F]
        if spec.kind == "bool" and spec.default:
            # On by default: the flag pair turns it off.
            off = "--no-" + spec.flag.removeprefix("--")
            opt = click.option(f"{spec.flag}/{off}", spec.name, default=None, help=help_text)
        elif spec.kind == "bool":
            opt = click.option(spec.flag, spec.name, is_flag=True, default=None, help=help_text)
        elif spec.kind in ("str_list", "cookies", "headers"):
            opt = click.option(
                spec.flag, spec.name, multiple=True, metavar=spec.cli_metavar, help=help_text
            )
        elif spec.kind == "choice":
            opt = click.option(
                spec.flag, spec.name, type=click.Choice(spec.choices), help=help_text
            )
        elif spec.kind == "actions":
            opt = click.option(spec.flag, spec.name, metavar=spec.cli_metavar, help=help_text)
        else:
            ptype = {"int": int, "float": float, "str": str}[spec.kind]
            opt = click.option(spec.flag, spec.name, type=ptype, help=help_text)
        decorators.append(opt)
    return decorators


def options_from_cli(values: Mapping[str, Any]) -> CaptureOptions:
    """Build ``CaptureOptions`` from the click values of ``capture_option_decorators``.

    Raises:
        ValidationError: As the constructor, or for a malformed cookie/header argument.
    """
    kwargs: dict[str, Any] = {}
    for spec in OPTION_SPECS:
        value = values.get(spec.name)
        if value is None or value == ():
            continue
        if spec.kind == "cookies":
            value = tuple(parse_cookie_arg(v) for v in value)
        elif spec.kind == "headers":
            value = tuple(parse_header_arg(v) for v in value)
        elif spec.kind == "float":
            value = float(value)
        elif spec.kind == "actions":
            value = parse_actions_arg(value)
        kwargs[spec.name] = value
    return CaptureOptions(**kwargs)


def parse_actions_arg(text: str) -> tuple[Action, ...]:
    """Parse the CLI's ``--actions``: a JSON array, or ``@FILE`` holding one.

    Raises:
        ValidationError: The file cannot be read, the text is not JSON, or the
            script is invalid (``field`` names the step).
    """
    source = "--actions"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValidationError(
                f"--actions: cannot read {path}: {reason}", field="actions"
            ) from None
        source = str(path)
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{source} is not JSON: {exc}", field="actions") from None
    return parse_actions(raw)
