"""Running a capture script (the ``actions`` option) in a page that is ready.

The steps (``bulk/_actions.py`` says what each one is) run in order, after the page
loaded and was cleaned up, before the final picture. Each step has its own time
limit (``STEP_TIMEOUT``, and never past the URL's deadline less a margin, so a step
that fails says so instead of being cut off by ``CAPTURE_TIMEOUT``). A step that fails
fails the URL with ``ACTION_FAILED``, whose details name the step (``step``: its
index, ``action``: its kind, ``reason``). Two errors pass through as they are:
``URL_BLOCKED`` (a ``goto`` or a click led where the egress policy refuses to go) and
``CAPTURE_TIMEOUT`` (the URL's own deadline).

A step that navigates (``goto``, or a click on a link) is followed by the same
waiting and clean-up as the first page (``Runner.settle_navigation``), so the next
step sees a ready page. ``screenshot`` steps take a picture as the final one would
(``Runner.snapshot``).

Playwright's own step timeouts are decided in its driver process and may arrive
late on a busy machine; each step is bounded by an asyncio timer as well.

Runs on the asyncio loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from .._actions import Action
from .._exceptions import ActionFailed, CaptureError, CaptureTimeout, URLBlocked
from . import _scripts as js
from ._errors import looks_closed, net_error, net_error_message
from ._shoot import SELECTOR_MARGIN_MS

__all__ = ["STEP_TIMEOUT", "Runner", "run_actions"]

#: Seconds one step may take at most (``wait`` steps: their own length).
STEP_TIMEOUT: Final = 10.0
# Playwright's own timeout for a step runs this much longer than the asyncio one,
# which therefore decides.
_DRIVER_SLACK_MS: Final = 5000.0


class Runner(Protocol):
    """What the script runner needs from the capture it runs in (``_steps.Capture``)."""

    @property
    def page(self) -> Page: ...

    def remaining_ms(self, margin: float = 0.0) -> float: ...

    async def goto(self, url: str) -> None:
        """Load ``url`` as the capture loaded its first URL (policy, waits, clean-up)."""

    async def settle_navigation(self, before: str) -> None:
        """If the page left the document at ``before``, wait for the new one."""

    async def snapshot(self, name: str) -> None:
        """Take a picture named ``name`` of the page as it is now."""


async def run_actions(runner: Runner, steps: tuple[Action, ...]) -> None:
    """Run ``steps`` in order in ``runner``'s page.

    Raises:
        ActionFailed: A step failed (details: ``step``, ``action``, ``reason``).
        URLBlocked: A step led where the egress policy refuses to go.
        CaptureTimeout: The URL's deadline passed.
        PlaywrightError: The page or the browser is gone (the engine sorts it out).
    """
    for index, step in enumerate(steps):
        before = runner.page.url
        try:
            await _run(runner, step)
            if step.kind in ("click", "press", "select", "check", "uncheck", "evaluate"):
                await runner.settle_navigation(before)
        except (URLBlocked, CaptureTimeout, ActionFailed):
            raise
        except CaptureError as exc:
            raise _failed(index, step, exc.message, net_error=_net(exc)) from None
        except (TimeoutError, PlaywrightTimeout):
            raise _failed(index, step, "timed out") from None
        except PlaywrightError as exc:
            if looks_closed(exc) or "crashed" in str(exc).lower():
                raise  # the engine tells a dead page from a dead browser
            net = net_error(exc)
            if net is not None:
                raise _failed(index, step, net_error_message(net), net_error=net) from None
            raise _failed(index, step, _reason(exc)) from None


def _net(exc: CaptureError) -> str | None:
    details = exc.details
    if isinstance(details, dict):
        value = details.get("net_error")
        return value if isinstance(value, str) else None
    return None


def _failed(index: int, step: Action, reason: str, net_error: str | None = None) -> ActionFailed:
    details: dict[str, object] = {"step": index, "action": step.kind, "reason": reason}
    if net_error is not None:
        details["net_error"] = net_error
    return ActionFailed(f"step {index} ({step.kind}) failed: {reason}", details=details)


def _reason(exc: PlaywrightError) -> str:
    # Playwright's first line, without its "Locator.click: " prefix and call log.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    head, sep, tail = text.partition(": ")
    if sep and "." in head and " " not in head:
        text = tail
    return text[:300]


def _budget_ms(runner: Runner) -> float:
    return max(1.0, min(STEP_TIMEOUT * 1000, runner.remaining_ms(SELECTOR_MARGIN_MS)))


async def _bounded(runner: Runner, make: Callable[[float], Awaitable[object]]) -> None:
    """Await ``make(driver_timeout_ms)`` under the step's asyncio time limit."""
    budget = _budget_ms(runner)
    await asyncio.wait_for(make(budget + _DRIVER_SLACK_MS), budget / 1000)


def _locator(runner: Runner, selector: str) -> Locator:
    return runner.page.locator("css=" + selector).first


async def _run(runner: Runner, step: Action) -> None:
    page = runner.page
    kind = step.kind
    if kind == "wait":
        assert step.ms is not None
        await asyncio.sleep(step.ms / 1000)
    elif kind == "goto":
        assert step.url is not None
        await runner.goto(step.url)
    elif kind == "screenshot":
        assert step.name is not None
        await runner.snapshot(step.name)
    elif kind == "evaluate":
        await _bounded(runner, lambda ms: page.evaluate(step.code or ""))
    elif kind == "css":
        await _bounded(runner, lambda ms: page.evaluate(js.ADD_CSS, step.code))
    elif kind == "scroll" and step.selector is None:
        await _bounded(runner, lambda ms: page.evaluate(js.SCROLL_TO, step.y))
    elif kind == "press" and step.selector is None:
        await _bounded(runner, lambda ms: page.keyboard.press(step.key or ""))
    else:
        assert step.selector is not None
        loc = _locator(runner, step.selector)
        if kind == "click":
            await _bounded(runner, lambda ms: loc.click(timeout=ms))
        elif kind == "hover":
            await _bounded(runner, lambda ms: loc.hover(timeout=ms))
        elif kind == "type":
            text = step.text or ""

            async def typing(ms: float) -> None:
                await loc.fill("", timeout=ms)
                await loc.press_sequentially(text, timeout=ms)

            await _bounded(runner, typing)
        elif kind == "select":
            value = step.value or ""
            await _bounded(runner, lambda ms: loc.select_option(value, timeout=ms))
        elif kind == "check":
            await _bounded(runner, lambda ms: loc.check(timeout=ms))
        elif kind == "uncheck":
            await _bounded(runner, lambda ms: loc.uncheck(timeout=ms))
        elif kind == "press":
            await _bounded(runner, lambda ms: loc.press(step.key or "", timeout=ms))
        elif kind == "scroll":
            await _bounded(runner, lambda ms: loc.scroll_into_view_if_needed(timeout=ms))
            await _bounded(runner, lambda ms: page.evaluate(js.SCROLL_TO, None))
        elif kind == "wait_for_selector":
            await _bounded(runner, lambda ms: loc.wait_for(state="visible", timeout=ms))
        else:  # pragma: no cover - parse_actions admits no other kind
            raise AssertionError(kind)
