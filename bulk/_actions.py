"""Capture scripts: the ``actions`` option, an ordered list of steps run before a capture.

Pure logic, no I/O: what a script is (``Action``), how its JSON reads and writes
(``parse_actions``, ``Action.to_json``), and its JSON Schema for the OpenAPI document
(``ACTIONS_JSON_SCHEMA``), which accepts exactly what ``parse_actions`` accepts but for
the rules JSON Schema cannot say (names unique, ``goto`` a valid http(s) URL). The
capture engine runs the steps (``bulk/_capture/_actions.py``).

Each step is a JSON object with one key naming it:

========================  ===================================================
``{"click": SEL}``        click the first element ``SEL`` (a CSS selector) matches
``{"hover": SEL}``        move the mouse over it
``{"type": {"selector": SEL, "text": T}}``  focus it and type ``T`` key by key
``{"select": {"selector": SEL, "value": V}}``  choose the ``<option>`` ``V`` (value or label)
``{"check": SEL}``        tick a checkbox or radio button (``uncheck``: clear it)
``{"press": KEY}``        press a key (``Enter``, ``Control+A``; ``{"key", "selector"}``
                          presses it in an element)
``{"scroll": SEL | Y}``   scroll an element into view, or the page to ``Y`` CSS pixels
``{"evaluate": JS}``      run JavaScript in the page (a returned promise is awaited)
``{"css": CSS}``          add a style sheet
``{"goto": URL}``         load another http(s) URL (through the egress policy)
``{"wait": MS}``          wait ``MS`` milliseconds
``{"wait_for_selector": SEL}``  wait until ``SEL`` shows an element
``{"screenshot": {"name": N}}``  an extra capture of the page as it is now, named ``N``
========================  ===================================================

A script is refused as a whole (``ValidationError`` whose ``field`` names the step,
``actions[3].selector``) before anything runs or is charged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, get_args

import attrs

from ._exceptions import InvalidURL, ValidationError
from ._urls import parse_http_url

__all__ = [
    "ACTIONS_JSON_SCHEMA",
    "ACTION_KINDS",
    "MAX_ACTIONS",
    "MAX_SCREENSHOTS",
    "Action",
    "ActionKind",
    "parse_actions",
    "validate_actions",
]

ActionKind = Literal[
    "click",
    "hover",
    "type",
    "select",
    "check",
    "uncheck",
    "press",
    "scroll",
    "evaluate",
    "css",
    "goto",
    "wait",
    "wait_for_selector",
    "screenshot",
]
ACTION_KINDS: Final[tuple[str, ...]] = get_args(ActionKind)

#: Steps in one script.
MAX_ACTIONS: Final = 50
#: Named extra captures in one script (each is an image held in memory).
MAX_SCREENSHOTS: Final = 10
#: Longest ``wait`` step, in ms (the URL's own ``timeout`` bounds the whole script).
MAX_WAIT_MS: Final = 30000
#: Largest ``scroll`` to a y position, in CSS pixels.
MAX_SCROLL_Y: Final = 1_000_000
_MAX_SELECTOR: Final = 2048
_MAX_TEXT: Final = 4096
_MAX_CODE: Final = 16384
_MAX_KEY: Final = 64
_MAX_URL: Final = 2048
_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# No control characters at all (selectors, keys, values, URLs, names).
_NO_CTL: Final = r"^[^\u0000-\u001f\u007f]*$"
# Typed text, scripts and CSS may hold tabs and line breaks, no other control character.
_TEXT_CTL: Final = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"

_SELECTOR_STEPS: Final = ("click", "hover", "check", "uncheck", "wait_for_selector")
_CODE_STEPS: Final = ("evaluate", "css")


@attrs.frozen(kw_only=True)
class Action:
    """One step of a capture script; the fields its ``kind`` uses, the others None.

    Attributes:
        kind: The step's name (``click``, ``type``...).
        selector: The element (CSS) of ``click``, ``hover``, ``type``, ``select``,
            ``check``, ``uncheck``, ``wait_for_selector``; optional for ``press``
            and ``scroll``.
        text: What ``type`` types.
        value: The option ``select`` chooses (its value, else its label).
        key: The key ``press`` presses.
        y: Where ``scroll`` scrolls the page to (when no selector).
        code: The JavaScript of ``evaluate``, the CSS of ``css``.
        url: Where ``goto`` goes.
        ms: How long ``wait`` waits.
        name: The name of a ``screenshot``.
    """

    kind: ActionKind
    selector: str | None = None
    text: str | None = None
    value: str | None = None
    key: str | None = None
    y: int | None = None
    code: str | None = None
    url: str | None = None
    ms: int | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The step as JSON, in its shortest form (``parse_actions`` reads it back)."""
        kind = self.kind
        if kind in _SELECTOR_STEPS:
            return {kind: self.selector}
        if kind == "type":
            return {kind: {"selector": self.selector, "text": self.text}}
        if kind == "select":
            return {kind: {"selector": self.selector, "value": self.value}}
        if kind == "press":
            if self.selector is None:
                return {kind: self.key}
            return {kind: {"key": self.key, "selector": self.selector}}
        if kind == "scroll":
            return {kind: self.selector if self.selector is not None else self.y}
        if kind in _CODE_STEPS:
            return {kind: self.code}
        if kind == "goto":
            return {kind: self.url}
        if kind == "wait":
            return {kind: self.ms}
        return {kind: {"name": self.name}}

    @property
    def selectors(self) -> tuple[str, ...]:
        """The CSS selectors this step uses (checked once per job, before navigation)."""
        return () if self.selector is None else (self.selector,)


def parse_actions(raw: Any, field: str = "actions") -> tuple[Action, ...]:
    """Read a capture script from its JSON (already decoded) and validate it.

    Args:
        raw: The decoded JSON: an array of one-key step objects.
        field: The name errors give the script (``options.actions`` in a job body).

    Returns:
        The steps, valid (``validate_actions`` passed).

    Raises:
        ValidationError: Not an array, a step of the wrong shape, or a value out of
            bounds; ``field`` names the step and its part (``actions[2].text``).
    """
    if not isinstance(raw, list):
        raise ValidationError(f"{field} must be an array of steps", field=field)
    if len(raw) > MAX_ACTIONS:
        raise ValidationError(f"{field} has more than {MAX_ACTIONS} steps", field=field)
    steps = tuple(_parse_step(item, f"{field}[{i}]") for i, item in enumerate(raw))
    validate_actions(steps, field)
    return steps


def validate_actions(steps: Iterable[Action], field: str = "actions") -> None:
    """Check a script's steps: values in bounds, names unique, URLs http(s).

    Raises:
        ValidationError: The first bad step; ``field`` names it (``actions[2].url``).
    """
    steps = tuple(steps)
    if len(steps) > MAX_ACTIONS:
        raise ValidationError(f"{field} has more than {MAX_ACTIONS} steps", field=field)
    names: set[str] = set()
    for i, step in enumerate(steps):
        where = f"{field}[{i}]"
        if not isinstance(step, Action):
            raise ValidationError(f"{where} is not a step", field=where)
        _check_step(step, where)
        if step.kind == "screenshot":
            assert step.name is not None
            if step.name in names:
                raise ValidationError(
                    f"{where}: a screenshot named {step.name!r} comes earlier",
                    field=f"{where}.screenshot.name",
                )
            names.add(step.name)
    if len(names) > MAX_SCREENSHOTS:
        raise ValidationError(
            f"{field} has more than {MAX_SCREENSHOTS} screenshot steps", field=field
        )


def _bad(where: str, what: str) -> ValidationError:
    return ValidationError(f"{where} {what}", field=where)


def _parse_step(item: Any, where: str) -> Action:
    if not isinstance(item, dict) or len(item) != 1:
        raise _bad(where, "must be an object with one key naming the step")
    [(kind, arg)] = item.items()
    if kind not in ACTION_KINDS:
        raise ValidationError(
            f"{where}: unknown step {str(kind)[:40]!r} (one of {', '.join(ACTION_KINDS)})",
            field=where,
        )
    where = f"{where}.{kind}"
    if kind in _SELECTOR_STEPS:
        return Action(kind=kind, selector=_string(arg, where))
    if kind == "type":
        obj = _object(arg, where, required=("selector", "text"))
        return Action(
            kind=kind,
            selector=_string(obj["selector"], f"{where}.selector"),
            text=_string(obj["text"], f"{where}.text"),
        )
    if kind == "select":
        obj = _object(arg, where, required=("selector", "value"))
        return Action(
            kind=kind,
            selector=_string(obj["selector"], f"{where}.selector"),
            value=_string(obj["value"], f"{where}.value"),
        )
    if kind == "press":
        if isinstance(arg, str):
            return Action(kind=kind, key=arg)
        obj = _object(arg, where, required=("key",), optional=("selector",))
        # Absent, not null: the document says a string (null is refused, as elsewhere).
        return Action(
            kind=kind,
            key=_string(obj["key"], f"{where}.key"),
            selector=_string(obj["selector"], f"{where}.selector") if "selector" in obj else None,
        )
    if kind == "scroll":
        if isinstance(arg, str):
            return Action(kind=kind, selector=arg)
        if _is_int(arg):
            return Action(kind=kind, y=int(arg))
        raise _bad(where, "must be a CSS selector or a y position in CSS pixels")
    if kind in _CODE_STEPS:
        return Action(kind=kind, code=_string(arg, where))
    if kind == "goto":
        return Action(kind=kind, url=_string(arg, where))
    if kind == "wait":
        if not _is_int(arg):
            raise _bad(where, "must be an integer number of milliseconds")
        return Action(kind=kind, ms=int(arg))
    # screenshot
    if isinstance(arg, str):
        return Action(kind=kind, name=arg)
    obj = _object(arg, where, required=("name",))
    return Action(kind=kind, name=_string(obj["name"], f"{where}.name"))


def _is_int(value: Any) -> bool:
    # JSON Schema's integer: 5.0 is one, 1.5 and true are not.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, "must be a string")
    return value


def _object(
    value: Any, where: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, f"must be an object with {', '.join(required)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise _bad(where, f"needs {missing[0]!r}")
    extra = sorted(str(k) for k in value.keys() - {*required, *optional})
    if extra:
        raise _bad(where, f"has an unknown key {extra[0][:40]!r}")
    return value


_CTL_ANY: Final = re.compile(r"[\x00-\x1f\x7f]")
_CTL_TEXT: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_RE: Final = re.compile(_NAME)


def _check_text(value: str | None, where: str, limit: int, *, lines: bool, empty: bool) -> str:
    if value is None or not isinstance(value, str):
        raise _bad(where, "must be a string")
    if (not value and not empty) or len(value) > limit:
        low = 0 if empty else 1
        raise _bad(where, f"must be {low} to {limit} characters")
    if (_CTL_TEXT if lines else _CTL_ANY).search(value):
        raise _bad(where, "must not contain control characters")
    return value


def _check_step(step: Action, where: str) -> None:
    """Bounds of one constructed step (also for steps built in Python, not from JSON)."""
    kind = step.kind
    if kind not in ACTION_KINDS:
        raise _bad(where, f"has an unknown kind {kind!r}")
    where = f"{where}.{kind}"
    used: set[str] = set()

    def selector(at: str) -> None:
        _check_text(step.selector, at, _MAX_SELECTOR, lines=False, empty=False)
        used.add("selector")

    if kind in _SELECTOR_STEPS:
        selector(where)
    elif kind == "type":
        selector(f"{where}.selector")
        _check_text(step.text, f"{where}.text", _MAX_TEXT, lines=True, empty=True)
        used.add("text")
    elif kind == "select":
        selector(f"{where}.selector")
        _check_text(step.value, f"{where}.value", _MAX_TEXT, lines=False, empty=True)
        used.add("value")
    elif kind == "press":
        at = where if step.selector is None else f"{where}.key"
        _check_text(step.key, at, _MAX_KEY, lines=False, empty=False)
        used.add("key")
        if step.selector is not None:
            selector(f"{where}.selector")
    elif kind == "scroll":
        if step.selector is not None:
            selector(where)
        elif (
            isinstance(step.y, bool)
            or not isinstance(step.y, int)
            or not 0 <= step.y <= MAX_SCROLL_Y
        ):
            raise _bad(where, f"must be a CSS selector or a y position from 0 to {MAX_SCROLL_Y}")
        else:
            used.add("y")
    elif kind in _CODE_STEPS:
        _check_text(step.code, where, _MAX_CODE, lines=True, empty=False)
        used.add("code")
    elif kind == "goto":
        url = _check_text(step.url, where, _MAX_URL, lines=False, empty=False)
        try:
            parse_http_url(url)
        except InvalidURL as exc:
            raise _bad(where, f"is not a usable URL: {exc.message}") from None
        used.add("url")
    elif kind == "wait":
        if isinstance(step.ms, bool) or not isinstance(step.ms, int) or not (
            0 <= step.ms <= MAX_WAIT_MS
        ):
            raise _bad(where, f"must be 0 to {MAX_WAIT_MS} ms")
        used.add("ms")
    else:  # screenshot
        name = step.name
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise _bad(
                f"{where}.name",
                "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit",
            )
        used.add("name")
    stray = [
        f
        for f in ("selector", "text", "value", "key", "y", "code", "url", "ms", "name")
        if f not in used and getattr(step, f) is not None
    ]
    if stray:
        raise _bad(where, f"does not take {stray[0]!r}")


# ---- JSON Schema (OpenAPI) ------------------------------------------------------------


def _text_schema(limit: int, pattern: str, *, empty: bool = False) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 0 if empty else 1,
        "maxLength": limit,
        "pattern": pattern,
    }


def _step_schema(kind: str, arg: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [kind],
        "additionalProperties": False,
        "properties": {kind: arg},
    }


def _object_schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": props,
    }


def _actions_schema() -> dict[str, Any]:
    sel = _text_schema(_MAX_SELECTOR, _NO_CTL)
    code = _text_schema(_MAX_CODE, _TEXT_CTL)
    key = _text_schema(_MAX_KEY, _NO_CTL)
    name = {"type": "string", "pattern": _NAME}
    steps = [_step_schema(k, sel) for k in _SELECTOR_STEPS]
    steps += [
        _step_schema(
            "type",
            _object_schema(
                {"selector": sel, "text": _text_schema(_MAX_TEXT, _TEXT_CTL, empty=True)},
                ["selector", "text"],
            ),
        ),
        _step_schema(
            "select",
            _object_schema(
                {"selector": sel, "value": _text_schema(_MAX_TEXT, _NO_CTL, empty=True)},
                ["selector", "value"],
            ),
        ),
        _step_schema(
            "press", {"oneOf": [key, _object_schema({"key": key, "selector": sel}, ["key"])]}
        ),
        _step_schema(
            "scroll",
            {"oneOf": [sel, {"type": "integer", "minimum": 0, "maximum": MAX_SCROLL_Y}]},
        ),
        *(_step_schema(k, code) for k in _CODE_STEPS),
        _step_schema(
            "goto", {**_text_schema(_MAX_URL, _NO_CTL), "description": "An http(s) URL."}
        ),
        _step_schema("wait", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS}),
        _step_schema(
            "screenshot", {"oneOf": [name, _object_schema({"name": name}, ["name"])]}
        ),
    ]
    return {
        "type": "array",
        "maxItems": MAX_ACTIONS,
        "items": {"oneOf": steps},
    }


#: The ``actions`` option's JSON Schema. It cannot say that screenshot names are
#: unique, that at most ``MAX_SCREENSHOTS`` steps are screenshots, or that a ``goto``
#: URL parses as http(s): those are refused by ``validate_actions`` alone.
ACTIONS_JSON_SCHEMA: Final[dict[str, Any]] = _actions_schema()
