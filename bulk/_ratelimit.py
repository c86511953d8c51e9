"""The API's limits: sliding windows of requests, and work in flight per key.

Two kinds of limit, both answered with ``429 RATE_LIMIT_EXCEEDED`` and ``Retry-After``:

- ``Limiter``: requests per window (Pixcap's published limits, ``RATE_LIMITS``). A
  slot is taken when a request passes the check; ``_api`` gives it back only when the
  request was refused before any work was done (auth, validation, URL policy,
  credits). A discovery or a capture that ran keeps its slot, whatever its outcome.
- ``InFlight``: how many discoveries and single captures one key may have running at
  once (``IN_FLIGHT_LIMITS``), so that one key cannot hold every Chromium page or
  fetch for minutes in parallel within its per-window allowance.

Both are in memory, per process (one ``bulk serve`` per database).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Final, final

import attrs

from ._exceptions import RateLimitExceeded

__all__ = ["IN_FLIGHT_LIMITS", "RATE_LIMITS", "InFlight", "Limiter", "RateLimit"]


@attrs.frozen
class RateLimit:
    """At most ``limit`` requests per ``window`` seconds."""

    limit: int
    window: float  # seconds


#: Pixcap's published limits.
RATE_LIMITS: Final[Mapping[str, RateLimit]] = {
    "general": RateLimit(100, 60),
    "screenshot": RateLimit(60, 60),
    "bulk": RateLimit(10, 3600),
    "register": RateLimit(10, 900),
}

#: Work one API key may have running at once: discoveries (``POST /bulk-screenshot``)
#: and single captures (``/screenshot``).
IN_FLIGHT_LIMITS: Final[Mapping[str, int]] = {"discovery": 2, "capture": 4}

#: What a client refused by ``InFlight`` is told to wait: work ends at unknown times,
#: and a refusal costs nothing, so a short, fixed pause.
IN_FLIGHT_RETRY_AFTER: Final = 1

_NOUNS: Final = {"discovery": "discoveries", "capture": "captures"}


@final
class _Window:
    """Sliding-window counter for one (bucket, subject)."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()


@final
class Limiter:
    """In-memory sliding-window rate limits, per (bucket, subject)."""

    def __init__(self, limits: Mapping[str, RateLimit], clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.windows: dict[tuple[str, str], _Window] = {}

    def take(self, bucket: str, subject: str) -> tuple[float, dict[str, str]]:
        """Take a slot; returns its timestamp and the headers to send.

        Raises:
            RateLimitExceeded: The window is full (the request takes no slot).
        """
        rule = self.limits[bucket]
        now = self.clock()
        window = self.windows.setdefault((bucket, subject), _Window())
        while window.times and window.times[0] <= now - rule.window:
            window.times.popleft()
        if len(window.times) >= rule.limit:
            reset = window.times[0] + rule.window
            retry = max(1, math.ceil(reset - now))
            raise RateLimitExceeded(
                f"rate limit of {rule.limit} requests per {_span(rule.window)} exceeded",
                retry_after=retry,
                details={"limit": rule.limit, "window_seconds": int(rule.window)},
            )
        window.times.append(now)
        return now, self._headers(rule, window, now)

    def give_back(self, bucket: str, subject: str, stamp: float) -> None:
        """Return the slot taken at ``stamp`` (the request was refused before any work)."""
        window = self.windows.get((bucket, subject))
        if window is not None:
            with contextlib.suppress(ValueError):
                window.times.remove(stamp)

    def peek_headers(self, bucket: str, subject: str) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers of a bucket, taking nothing."""
        rule = self.limits[bucket]
        window = self.windows.setdefault((bucket, subject), _Window())
        return self._headers(rule, window, self.clock())

    @staticmethod
    def _headers(rule: RateLimit, window: _Window, now: float) -> dict[str, str]:
        reset = (window.times[0] + rule.window) if window.times else now + rule.window
        return {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Remaining": str(max(0, rule.limit - len(window.times))),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }


@final
class InFlight:
    """Counts the work each subject has running, per kind, under a cap.

    Args:
        limits: Kind (``discovery``, ``capture``) -> how many may run at once.
    """

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = limits
        self.running: dict[tuple[str, str], int] = {}

    @contextlib.contextmanager
    def hold(self, kind: str, subject: str) -> Iterator[None]:
        """Count one piece of work of ``kind`` for ``subject`` for the life of the block.

        Raises:
            RateLimitExceeded: ``subject`` already runs its cap of ``kind``
                (``Retry-After``: ``IN_FLIGHT_RETRY_AFTER``); nothing is counted.

        Cancellation: the count is given back however the block ends.
        """
        limit = self.limits[kind]
        key = (kind, subject)
        running = self.running.get(key, 0)
        if running >= limit:
            raise RateLimitExceeded(
                f"at most {limit} {_NOUNS.get(kind, kind)} at once per API key; "
                "retry when one has finished",
                retry_after=IN_FLIGHT_RETRY_AFTER,
                details={"limit": limit, "in_flight": running, "scope": kind},
            )
        self.running[key] = running + 1
        try:
            yield
        finally:
            left = self.running[key] - 1
            if left:
                self.running[key] = left
            else:
                del self.running[key]


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        n = int(seconds // 3600)
        return "hour" if n == 1 else f"{n} hours"
    if seconds % 60 == 0:
        n = int(seconds // 60)
        return "minute" if n == 1 else f"{n} minutes"
    return f"{seconds:g} seconds"
