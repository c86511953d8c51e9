"""Process hygiene of the capture side: priorities, capabilities, leftover processes.

What bulk does to the processes it starts for captures (Playwright's driver and
Chromium), so that they can neither outrank nor outlive bulk:

- ``no_priority_boost``: drop CAP_SYS_NICE from the bounding set of the thread that
  starts them (``prctl``), so Chromium cannot raise its threads above bulk's own.
- ``lower_priority``: give that thread a niceness its children inherit.
- ``kill_process_group``: SIGKILL what is left of a browser's process group (``/proc``).

All of it is Linux-only and a no-op elsewhere. The rest of what bounds the capture
side's processes lives next to the egress policy, free of asyncio and Playwright:
``bulk/_sandbox.py`` (the user Chromium runs as, its sandbox and network namespace,
planned per pool), ``bulk/_launcher.py`` (the program that applies it before exec'ing
Chromium: it also ties Chromium to bulk's process group with a parent-death signal)
and ``bulk/_memory.py`` (memory cgroups: the capture side's total, one per renderer).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from contextlib import suppress
from typing import Final

__all__ = ["kill_process_group", "lower_priority", "no_priority_boost"]

_PR_CAPBSET_READ: Final = 23
_PR_CAPBSET_DROP: Final = 24
_CAP_SYS_NICE: Final = 23


def no_priority_boost() -> None:
    """Keep Chromium from raising its threads above bulk's own (call on the thread
    that starts Playwright).

    Run as root, Chromium puts its compositor and IO threads at nice -8; with the CPU
    full they then starve bulk's threads (scripts/bench-api: status answers slower
    several-fold). Dropping CAP_SYS_NICE from this thread's bounding set means the
    processes it starts from now on (Playwright's driver, and Chromium under it) can
    no longer raise a priority. Other threads keep theirs; a no-op when not root.
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_CAPBSET_READ, _CAP_SYS_NICE, 0, 0, 0) == 1:
            libc.prctl(_PR_CAPBSET_DROP, _CAP_SYS_NICE, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: nothing to drop
        pass



def lower_priority(nice: int) -> None:
    """Set the calling thread's niceness to ``nice`` (0: leave it as it is).

    Linux keeps a niceness per thread: the processes this thread starts from now on
    (Playwright's driver, and Chromium under it) inherit it, while bulk's other
    threads (the API, the job runner) keep theirs.
    """
    if nice:
        # This thread's niceness, inherited by the processes it starts.
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def kill_process_group(pgid: int) -> None:
    """SIGKILL what is left of a browser's process group (Playwright starts Chromium
    as a group leader); only Chromium processes are touched (Linux ``/proc``)."""
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        lparen, rparen = stat.find("("), stat.rfind(")")
        name = stat[lparen + 1 : rparen]
        fields = stat[rparen + 2 :].split()
        if len(fields) < 3 or fields[0] == "Z" or int(fields[2]) != pgid:
            continue
        if "chrom" in name.lower():
            with suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
