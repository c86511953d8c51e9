"""Memory bounds of the capture side: one cgroup for the browser, one per renderer.

The JavaScript heap flag does not bound what a page can take (array buffers,
canvases, decoded images live outside it), so the kernel does:

    <bulk's own memory cgroup>/bulk-capture-<pid>-<n>/   memory limit: the capture side's total
        main/        the launcher joins it before exec: browser, zygotes, GPU, network...
        r<pid>/      one per renderer, moved here by ``tick``: limit ``renderer_limit``

A renderer over its limit is killed by the kernel's OOM killer (only the renderer is
in its group), which Chromium reports as a crashed page; ``oom_kills`` counts such
kills, so the capture can say ``PAGE_TOO_LARGE`` rather than ``BROWSER_CRASHED``. A
renderer that grows before ``tick`` found it is bounded by the total, whose OOM kill
picks the largest process (a renderer: Chromium gives them the highest
``oom_score_adj``) and is counted the same way.

cgroup v1 (``memory.limit_in_bytes``) and v2 (``memory.max``) are both handled; v2
needs the memory controller delegated to bulk's cgroup (bulk's cgroup may then hold
no processes of its own but bulk, which v2 allows only when the controller is
already enabled there). ``MemoryBound.create`` says why when neither works.

Thread-safe: ``tick`` runs on a worker thread of the pool, ``oom_kills`` on the
browser's thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Final, final

__all__ = ["MemoryBound", "MemoryBoundUnavailable", "default_total", "find_memory_cgroup"]

MIB: Final = 1024 * 1024
# needs_tick asks for a tick at least this often (calls), for the kill count's sake.
_REFRESH_EVERY: Final = 5
#: Added to ``renderer_limit * slots`` for the browser, GPU, network processes.
BROWSER_OVERHEAD: Final = 1024 * MIB
_UNLIMITED_V1: Final = 1 << 62
_counter = itertools.count(1)


class MemoryBoundUnavailable(Exception):
    """No memory cgroup can be made here; the message says why."""


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> list[tuple[str, str, str, str]]:
    """``(root, mount point, fstype, super options)`` of every cgroup mount."""
    out = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((fields[3], fields[4], tail[0], tail[2]))
    return out


def find_memory_cgroup() -> tuple[int, Path]:
    """The cgroup version and directory that holds this process's memory accounting.

    Returns:
        ``(1, path)`` for a v1 memory hierarchy, ``(2, path)`` for cgroup v2 with
        the memory controller available there.

    Raises:
        MemoryBoundUnavailable: No memory cgroup is mounted, or it cannot be found.
    """
    try:
        lines = _read(Path("/proc/self/cgroup")).splitlines()
        mounts = _mounts()
    except OSError as exc:
        raise MemoryBoundUnavailable(f"cannot read the cgroups: {exc.strerror}") from None
    v1 = v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = path
        elif controllers == "":
            v2 = path
    for version, cgroup in ((1, v1), (2, v2)):
        if cgroup is None:
            continue
        for root, point, fstype, options in mounts:
            if (version == 1) != (fstype == "cgroup"):
                continue
            if version == 1 and "memory" not in options.split(","):
                continue
            relative = cgroup[len(root) :] if cgroup.startswith(root) else ""
            directory = Path(point + "/" + relative.lstrip("/"))
            if not directory.is_dir():
                continue
            if version == 2:
                try:
                    if "memory" not in _read(directory / "cgroup.controllers").split():
                        continue
                except OSError:
                    continue
            return version, directory
    raise MemoryBoundUnavailable("no memory cgroup controller is available to this process")


def _memory_available() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0  # pragma: no cover (Linux always has it)


def default_total(renderer_limit: int, slots: int, ceiling: int | None = None) -> int:
    """The capture side's total: every slot's renderer at its limit plus the browser,
    at most 3/4 of ``ceiling`` (the memory this process may use: RAM, or its cgroup's
    limit), never below two renderers' worth."""
    total = renderer_limit * slots + BROWSER_OVERHEAD
    if ceiling:
        total = min(total, ceiling * 3 // 4)
    return max(total, 2 * renderer_limit)


@final
class MemoryBound:
    """The memory cgroups of one pool's browsers. Made by ``create``.

    Attributes:
        launch_group: The directory the launcher joins (``<group>/main``).
        renderer_limit: Bytes one renderer may use.
        total_limit: Bytes the whole capture side may use.
        version: 1 or 2.

    Resource handling:
        ``close`` kills what is left in the groups and removes them.
    """

    def __init__(self, version: int, group: Path, renderer_limit: int, total_limit: int) -> None:
        self.version = version
        self.group = group
        self.launch_group = group / "main"
        # The one file ``needs_tick`` reads ten times a second, as a ready string.
        self._launch_procs = str(self.launch_group / "cgroup.procs")
        self.renderer_limit = renderer_limit
        self.total_limit = total_limit
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._renderers: dict[int, Path] = {}
        self._retired_kills = 0
        self._own_kills = 0
        self._cached_kills = 0
        self._calls = 0

    @classmethod
    def create(
        cls, renderer_limit: int, total_limit: int | None, slots: int
    ) -> MemoryBound:
        """Make the groups under this process's own memory cgroup.

        Args:
            renderer_limit: Bytes one renderer may use.
            total_limit: Bytes the capture side may use; None: ``default_total``.
            slots: Pages captured at once (for the default total).

        Raises:
            MemoryBoundUnavailable: Not possible here (no controller, no permission).
        """
        version, parent = find_memory_cgroup()
        ceiling = _memory_available()
        if version == 1:
            with suppress(OSError, ValueError):
                limit = int(_read(parent / "memory.limit_in_bytes"))
                if limit < _UNLIMITED_V1:
                    ceiling = min(ceiling, limit)
        else:
            with suppress(OSError, ValueError):
                text = _read(parent / "memory.max").strip()
                if text != "max":
                    ceiling = min(ceiling, int(text))
        total = total_limit or default_total(renderer_limit, slots, ceiling)
        if renderer_limit > total:
            raise MemoryBoundUnavailable(
                f"the renderer limit ({renderer_limit // MIB} MB) is over the capture "
                f"side's total ({total // MIB} MB)"
            )
        _remove_stale(parent)
        group = parent / f"bulk-capture-{os.getpid()}-{next(_counter)}"
        bound = cls(version, group, renderer_limit, total)
        try:
            if version == 2:
                bound._enable_controller(parent)
            group.mkdir()
            bound._limit(group, total)
            if version == 2:
                bound._enable_controller(group)
            bound.launch_group.mkdir()
        except OSError as exc:
            bound._remove_dirs()
            hint = (
                " (cgroup v2: delegate the memory controller to bulk's cgroup)"
                if version == 2
                else ""
            )
            raise MemoryBoundUnavailable(
                f"cannot make a memory cgroup under {parent}: {exc.strerror}{hint}"
            ) from None
        return bound

    # -- files of one flavour or the other ---------------------------------------------

    def _enable_controller(self, directory: Path) -> None:
        if "memory" not in _read(directory / "cgroup.subtree_control").split():
            _write(directory / "cgroup.subtree_control", "+memory")

    def _limit(self, directory: Path, limit: int) -> None:
        if self.version == 1:
            _write(directory / "memory.limit_in_bytes", str(limit))
            swap = directory / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no swapping around the bound
                _write(swap, str(limit))
            move = directory / "memory.move_charge_at_immigrate"
            if move.exists():  # a renderer's memory moves with it into its group
                with suppress(OSError, ValueError):
                    _write(move, "3")
        else:
            _write(directory / "memory.max", str(limit))
            swap = directory / "memory.swap.max"
            if swap.exists():
                _write(swap, "0")

    def _kills_in(self, directory: Path) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events.local"
        try:
            text = _read(directory / name)
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    @staticmethod
    def _pids(directory: Path) -> list[int]:
        try:
            return [int(p) for p in _read(directory / "cgroup.procs").split()]
        except (OSError, ValueError):
            return []

    # -- what the pool calls -------------------------------------------------------------

    def needs_tick(self) -> bool:
        """Whether ``tick`` has work: a process in the launch group not sorted yet, a
        renderer gone, or the kill count due for a refresh (the ``_REFRESH_EVERY``-th
        call since the last ``tick``).

        Cheap (one small read and a signal-0 probe per renderer), so the pool can ask
        on its own thread every 100 ms and hop to a worker thread only when it is
        true: a sampling profile of ``bulk archive`` showed that hop and the
        per-group reads of every ``tick`` in bulk's own process. Called between
        ``tick`` calls, never during one.
        """
        self._calls += 1
        if self._calls % _REFRESH_EVERY == 0:
            return True
        try:
            with open(self._launch_procs, "rb") as f:
                launched = [int(pid) for pid in f.read().split()]
        except (OSError, ValueError):
            launched = []
        seen = self._seen
        if any(pid not in seen for pid in launched):
            return True
        return not all(_alive(pid) for pid in self._renderers)

    def tick(self) -> None:
        """Move new renderers into groups of their own; remove the groups of dead ones."""
        self._calls = 0
        with self._lock:
            pids = self._pids(self.launch_group)
            self._seen &= set(pids)
            for pid in pids:
                if pid in self._seen:
                    continue
                kind = _process_type(pid)
                if kind == "renderer":
                    self._place(pid)
                elif kind is not None:
                    self._seen.add(pid)  # for good: it will not become a renderer
            for pid, directory in list(self._renderers.items()):
                if not self._pids(directory):
                    kills = self._kills_in(directory)
                    try:
                        directory.rmdir()
                    except OSError:
                        continue  # the kernel is still tearing it down: next tick
                    self._retired_kills += kills
                    del self._renderers[pid]
            self._cached_kills = self._count()

    def _place(self, pid: int) -> None:
        directory = self.group / f"r{pid}"
        try:
            directory.mkdir(exist_ok=True)
            self._limit(directory, self.renderer_limit)
            _write(directory / "cgroup.procs", str(pid))
        except OSError as exc:
            if exc.errno == errno.ESRCH:  # gone already
                with suppress(OSError, ValueError):
                    directory.rmdir()
                return
            # Over the limit already (its memory cannot move in), or the group could
            # not be made: a renderer that is not bounded on its own is not kept.
            with suppress(OSError, ValueError):
                os.kill(pid, signal.SIGKILL)
            self._own_kills += 1
        self._renderers[pid] = directory

    def _count(self) -> int:
        live = sum(self._kills_in(d) for d in self._renderers.values())
        return (
            self._retired_kills
            + self._own_kills
            + live
            + self._kills_in(self.group)
            + self._kills_in(self.launch_group)
        )

    @property
    def cached_kills(self) -> int:
        """``oom_kills`` as of the last ``tick`` (no I/O: for the hot path)."""
        return self._cached_kills

    def oom_kills(self) -> int:
        """Processes killed for memory in these groups so far (read now)."""
        with self._lock:
            self._cached_kills = self._count()
            return self._cached_kills

    def peak(self) -> int:
        """The most memory the capture side has used at once, in bytes (0: unknown)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int(_read(self.group / name))
        except (OSError, ValueError):
            return 0

    def processes(self) -> list[int]:
        """Every process in the groups now."""
        with self._lock:
            dirs = [self.launch_group, self.group, *self._renderers.values()]
        return [pid for d in dirs for pid in self._pids(d)]

    def kill_all(self) -> None:
        """SIGKILL every process in the groups (the browser is done with)."""
        for pid in self.processes():
            with suppress(OSError, ValueError):
                os.kill(pid, signal.SIGKILL)

    def close(self, timeout: float = 5.0) -> None:
        """Kill what is left, wait until the groups are empty, remove them.

        Blocking (up to ``timeout`` seconds): call it from a worker thread.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.kill_all()
            with self._lock:
                for directory in self.group.glob("r*"):
                    self._renderers.setdefault(int(directory.name[1:]), directory)
            if not self.processes() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        for directory in [*self.group.glob("r*"), self.launch_group, self.group]:
            with suppress(OSError, ValueError):
                directory.rmdir()


def _remove_stale(parent: Path) -> None:
    """Remove the empty groups a killed bulk left behind (its pid is in the name)."""
    for group in parent.glob("bulk-capture-*-*"):
        pid = group.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for directory in [*group.glob("r*"), group / "main", group]:
            with suppress(OSError):  # not empty: something still runs there
                directory.rmdir()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still exists (a zombie does, until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's (EPERM): it exists
    return True


def _process_type(pid: int) -> str | None:
    """Chromium's ``--type`` of ``pid`` (``""``: the browser, or not Chromium); None
    when it may still change: a zygote's fork is a renderer only once it has set its
    title, and a process just exec'ed may not show its arguments yet."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return ""  # gone
    if not cmdline:
        return None
    start = cmdline.find(b"--type=")
    if start < 0:
        return ""
    kind = cmdline[start + 7 :].split(b"\0", 1)[0].split(b" ", 1)[0].decode(errors="replace")
    return None if kind == "zygote" else kind
