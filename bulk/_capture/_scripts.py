"""The in-page scripts: the ``js/*.js`` files of this package, read once at import.

Each file is one JavaScript expression: a function that ``page.evaluate`` (or
``locator.evaluate``) calls with its argument, or, for ``init.js``, a function called
at once, which Chromium runs first in every new document of a job's context. The
comment at the top of each file says what it is for. The files ship in the wheel as
package data; ``tests/test_capture_js.py`` lints them and checks that every file is
loaded here and every loaded one is used.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

__all__ = [
    "ADD_CSS",
    "CHECK_SELECTORS",
    "DISMISS_CONSENT",
    "ELEMENT_BOX",
    "FREEZE",
    "HIDE_SELECTORS",
    "INIT",
    "LOADED",
    "SCROLL",
    "SCROLL_TO",
    "SETTLE",
    "UNBLOCK",
]

# Every script loaded, by file name (what the test compares with the folder).
LOADED: Final[dict[str, str]] = {}


def _load(name: str) -> str:
    text = resources.files("bulk._capture").joinpath("js", name).read_text(encoding="utf-8")
    LOADED[name] = text
    return text


INIT: Final = _load("init.js")
DISMISS_CONSENT: Final = _load("dismiss-consent.js")
CHECK_SELECTORS: Final = _load("check-selectors.js")
HIDE_SELECTORS: Final = _load("hide-selectors.js")
SETTLE: Final = _load("settle.js")
SCROLL: Final = _load("scroll.js")
ELEMENT_BOX: Final = _load("element-box.js")
FREEZE: Final = _load("freeze.js")
UNBLOCK: Final = _load("unblock.js")
ADD_CSS: Final = _load("add-css.js")
SCROLL_TO: Final = _load("scroll-to.js")
