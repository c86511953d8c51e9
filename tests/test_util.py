"""The shared helpers of background loops (bulk/_util.py): containment and lock files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bulk._exceptions import BulkError, LockHeld, URLBlocked
from bulk._util import contained, hold_lock

log = logging.getLogger("bulk.test")


async def test_contained_keeps_a_failure_to_its_item(caplog: pytest.LogCaptureFixture) -> None:
    done = []
    with caplog.at_level(logging.WARNING, logger="bulk"):
        for item in range(4):
            with contained(log, "item %d", item) as outcome:
                if item == 1:
                    raise ValueError("https://user:secret-token@example.com/")
                if item == 2:
                    raise URLBlocked("blocked secret-host.example")
                if item == 3:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(trio.sleep_forever)
                        raise KeyError("secret-key-name")
            done.append((item, outcome.failed, outcome.code))
    assert done == [
        (0, False, "INTERNAL_ERROR"),
        (1, True, "INTERNAL_ERROR"),
        (2, True, "URL_BLOCKED"),
        (3, True, "INTERNAL_ERROR"),
    ]
    assert "item 1 failed: ValueError at test_util.py:" in caplog.text
    assert "item 2 failed: URL_BLOCKED" in caplog.text
    assert "item 3 failed: KeyError" in caplog.text
    assert "secret" not in caplog.text


async def test_contained_never_contains_stopping() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        with contained(log, "item"):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(KeyboardInterrupt), contained(log, "item"):
        raise KeyboardInterrupt
    # A nursery cancelled from outside while a child failed: the group holds a
    # Cancelled, so it is not contained either.
    with trio.move_on_after(0.01) as scope:
        with contained(log, "item"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()
    assert scope.cancelled_caught


def test_lock_held_is_a_coded_bulk_error(tmp_path: Path) -> None:
    lock = tmp_path / "out.lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from bulk._util import hold_lock\n"
            "with hold_lock(pathlib.Path(sys.argv[1])):\n"
            "    print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(LockHeld) as caught, hold_lock(lock, held="another run writes OUT"):
            pass
        assert isinstance(caught.value, BulkError)
        assert (caught.value.code, caught.value.message) == ("LOCKED", "another run writes OUT")
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    # Once the holder is gone, the lock is free; ``remove`` deletes the file after.
    with hold_lock(lock, remove=True):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()
