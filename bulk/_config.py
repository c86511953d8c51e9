"""Environment and machine configuration, read in exactly one place.

Nothing else in bulk reads ``os.environ``: the CLI calls ``Settings.from_env()`` once
and passes the values down.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from ._exceptions import BrowserUnavailable, ValidationError
from ._sandbox import DEFAULT_RENDERER_MEMORY, DEFAULT_USER, MODES, SandboxConfig

__all__ = ["Settings", "find_chromium"]

DEFAULT_DOWNLOAD_TTL: Final = 86400

# System Chromium locations tried after a Playwright-managed browser, in order.
SYSTEM_CHROMIUMS: Final = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/snap/bin/chromium",
)

_HOW_TO_GET_ONE: Final = (
    "no Chromium found: install one (Debian/Ubuntu: 'apt-get install -y chromium'), "
    "or run 'playwright install chromium', or set BULK_CHROMIUM=/path/to/chromium"
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@attrs.frozen(kw_only=True)
class Settings:
    """What the environment says. Built by ``from_env``; frozen afterwards."""

    chromium: str | None = None
    download_ttl_seconds: int = DEFAULT_DOWNLOAD_TTL
    allow_private: bool = False
    allow: tuple[str, ...] = ()
    #: Overrides of the API's rate limits: bucket -> (requests, window seconds).
    rate_limits: tuple[tuple[str, int, int], ...] = ()
    #: How Chromium is isolated (``BULK_SANDBOX``, ``BULK_CHROMIUM_USER``,
    #: ``BULK_RENDERER_MEMORY_MB``, ``BULK_CAPTURE_MEMORY_MB``).
    sandbox: SandboxConfig = attrs.field(factory=SandboxConfig)
    #: ``BULK_SCHEDULE_SECONDS`` (tests and operators only): every schedule's slots
    #: are this many seconds apart, whatever its ``every`` says. None: as they say.
    schedule_seconds: float | None = None
    #: Remote browsers (``BULK_BROWSERS``: ``ws://`` URLs, space- or comma-separated),
    #: their default slots (``BULK_BROWSER_SLOTS``) and whether the local Chromium is
    #: off (``BULK_NO_LOCAL_BROWSER=1``).
    browsers: tuple[str, ...] = ()
    browser_slots: int | None = None
    no_local_browser: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``BULK_*`` variables.

        Raises:
            ValidationError: A variable is set to something unusable (named in the message).
        """
        env = os.environ if environ is None else environ
        ttl_text = env.get("BULK_DOWNLOAD_TTL_SECONDS", "").strip()
        ttl = DEFAULT_DOWNLOAD_TTL
        if ttl_text:
            try:
                ttl = int(ttl_text)
            except ValueError:
                ttl = -1
            if ttl < 1:
                raise ValidationError(
                    "BULK_DOWNLOAD_TTL_SECONDS must be a positive integer",
                    field="BULK_DOWNLOAD_TTL_SECONDS",
                )
        allow = tuple(a for a in env.get("BULK_ALLOW", "").replace(",", " ").split() if a)
        slots_text = env.get("BULK_BROWSER_SLOTS", "").strip()
        if slots_text and not (slots_text.isdigit() and 1 <= int(slots_text) <= 64):
            raise ValidationError(
                "BULK_BROWSER_SLOTS must be a number from 1 to 64", field="BULK_BROWSER_SLOTS"
            )
        return cls(
            chromium=env.get("BULK_CHROMIUM") or None,
            download_ttl_seconds=ttl,
            allow_private=_truthy(env.get("BULK_ALLOW_PRIVATE")),
            allow=allow,
            rate_limits=_rate_limits(env.get("BULK_RATE_LIMITS", "")),
            sandbox=_sandbox(env),
            schedule_seconds=_schedule_seconds(env.get("BULK_SCHEDULE_SECONDS", "")),
            browsers=tuple(env.get("BULK_BROWSERS", "").replace(",", " ").split()),
            browser_slots=int(slots_text) if slots_text else None,
            no_local_browser=_truthy(env.get("BULK_NO_LOCAL_BROWSER")),
        )


def _schedule_seconds(text: str) -> float | None:
    """``BULK_SCHEDULE_SECONDS``: a positive number of seconds, or unset."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 10 * 365 * 86400:
        raise ValidationError(
            "BULK_SCHEDULE_SECONDS must be a number of seconds, at least 0.5",
            field="BULK_SCHEDULE_SECONDS",
        )
    return value


def _sandbox(env: Mapping[str, str]) -> SandboxConfig:
    """``BULK_SANDBOX``, ``BULK_CHROMIUM_USER`` and the two memory bounds, in MB."""
    mode = env.get("BULK_SANDBOX", "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValidationError(
            f"BULK_SANDBOX must be one of {', '.join(MODES)}", field="BULK_SANDBOX"
        )
    renderer = _megabytes(env, "BULK_RENDERER_MEMORY_MB")
    user = env.get("BULK_CHROMIUM_USER", "").strip() or DEFAULT_USER
    return SandboxConfig(
        mode=mode,
        user=user,
        renderer_memory=DEFAULT_RENDERER_MEMORY if renderer is None else renderer,
        capture_memory=_megabytes(env, "BULK_CAPTURE_MEMORY_MB"),
    )


def _megabytes(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 128:
        raise ValidationError(f"{name} must be a number of MB, at least 128", field=name)
    return int(text) * 1024 * 1024


_BUCKETS: Final = ("general", "screenshot", "bulk", "register")


def _rate_limits(text: str) -> tuple[tuple[str, int, int], ...]:
    """``general=100/60,bulk=10/3600``: requests per window (seconds), per bucket."""
    out = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        name, _, rule = item.partition("=")
        count, _, window = rule.partition("/")
        if name not in _BUCKETS or not count.isdigit() or not window.isdigit():
            raise ValidationError(
                "BULK_RATE_LIMITS must look like general=100/60,bulk=10/3600 "
                f"(buckets: {', '.join(_BUCKETS)})",
                field="BULK_RATE_LIMITS",
            )
        if int(count) < 1 or int(window) < 1:
            raise ValidationError("BULK_RATE_LIMITS values must be >= 1", field="BULK_RATE_LIMITS")
        out.append((name, int(count), int(window)))
    return tuple(out)


def _playwright_chromium() -> str | None:
    """The newest Playwright-managed Chromium on this machine, if any."""
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(Path.home() / ".cache/ms-playwright")
    candidates = sorted(
        glob.glob(os.path.join(root, "chromium-*/chrome-linux*/chrome")),
        reverse=True,
    )
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def find_chromium(explicit: str | None = None) -> str:
    """Find the Chromium executable bulk will drive.

    Order: ``explicit`` (``BULK_CHROMIUM``), a Playwright-managed Chromium, then the
    system locations in ``SYSTEM_CHROMIUMS`` and ``chromium``/``chromium-browser`` on PATH.

    Raises:
        BrowserUnavailable: None found; the message says what to install.
    """
    if explicit:
        path = shutil.which(explicit) or explicit
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BrowserUnavailable(f"BULK_CHROMIUM={explicit} is not an executable file")
    managed = _playwright_chromium()
    if managed:
        return managed
    for path in SYSTEM_CHROMIUMS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(_HOW_TO_GET_ONE)


if __name__ == "__main__":  # used by scripts/_bootstrap.sh
    import sys

    try:
        print(find_chromium(os.environ.get("BULK_CHROMIUM")))
    except BrowserUnavailable as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        sys.exit(1)
