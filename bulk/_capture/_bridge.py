"""The trio <-> asyncio bridge: one asyncio loop on its own thread, awaited from trio.

Playwright's API is asyncio-only; bulk is trio. ``AsyncioThread`` runs one asyncio
event loop on a daemon thread, and trio tasks run coroutines on it with
``AsyncioThread.run``, which also carries cancellation across (a cancelled trio caller
cancels the asyncio task and waits for its cleanup). Measured to cost nothing against
pure asyncio, where trio-asyncio was 1.3-1.6x slower.

Only the ``bulk._capture`` package imports ``asyncio`` or ``playwright``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar, final

import trio

from ._config import CLEANUP_TIMEOUT

__all__ = ["AsyncioThread"]

T = TypeVar("T")


@final
class AsyncioThread:
    """One asyncio event loop on a daemon thread; trio tasks run coroutines on it.

    Resource handling: ``start`` creates the thread; ``stop`` stops the loop, cancels
    and drains whatever is still on it, and joins the thread.
    """

    def __init__(self, name: str = "bulk-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "AsyncioThread not started"
        return self._loop

    def start(self) -> None:
        """Start the thread and its loop; returns once the loop is running."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    async def stop(self) -> None:
        """Stop the loop and wait for its thread to end (without blocking trio)."""
        if self._loop is None or self._thread is None:
            return
        loop, thread = self._loop, self._thread
        with suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join, CLEANUP_TIMEOUT)
        self._thread = None

    async def run(
        self,
        fn: Callable[[], Coroutine[Any, Any, T]],
        *,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
    ) -> T:
        """Run ``fn()`` as an asyncio task on the loop thread and await its result.

        Args:
            fn: Makes the coroutine; called on the loop thread, where it runs.
            cleanup_timeout: How long a cancelled call waits for the asyncio task's
                own cleanup (``finally`` blocks that close pages) to finish.

        Returns:
            The coroutine's result; its exception is re-raised in trio as is.

        Raises:
            RuntimeError: The loop was stopped under the call.

        Cancellation:
            Cancelling the trio caller (or Ctrl-C arriving here) cancels the asyncio
            task, then waits (shielded, up to ``cleanup_timeout``) until the task has
            really finished, so no page or context is left half-used behind the caller.
        """
        loop = self.loop
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[asyncio.Task[T]] = []

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # trio already gone
                token.run_sync_soon(done.set)

        def start_task() -> None:
            try:
                task = loop.create_task(fn())
            except BaseException:
                token.run_sync_soon(done.set)
                raise
            task.add_done_callback(wake)
            box.append(task)

        def cancel_task() -> None:
            # call_soon_threadsafe is FIFO: start_task has run, the task exists.
            if box:
                box[0].cancel()

        loop.call_soon_threadsafe(start_task)
        try:
            await done.wait()
        except BaseException:  # trio.Cancelled, or KeyboardInterrupt delivered here
            with suppress(RuntimeError):  # the loop is closed: nothing left to cancel
                loop.call_soon_threadsafe(cancel_task)
            with trio.CancelScope(shield=True), trio.move_on_after(cleanup_timeout):
                await done.wait()
            raise
        if not box or box[0].cancelled():
            raise RuntimeError("the asyncio loop stopped under a browser call")
        return box[0].result()
