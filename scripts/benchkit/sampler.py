"""Measuring processes: wall time, CPU by kind of process, memory peaks.

- ``measure(argv, cwd)`` runs one process and returns its wall time (fork to exit),
  the CPU of its whole tree (``wait4``), the tree's peak PSS/RSS and its CPU split by
  kind of process (``TreeSampler``).
- ``TreeSampler`` samples a process tree from ``/proc``: the root's descendants plus
  every process in the process group of one of them (Playwright starts Chromium as a
  group leader), each classified as ``tool`` (the root itself), ``driver``
  (Playwright's node), or Chromium's ``browser``, ``renderer``, ``gpu``, ``network``,
  ``utility``.
- ``ProcessMemory`` samples one process alone (``VmRSS`` and the kernel's own peak,
  ``VmHWM``): what bulk's Python process holds, without Chromium.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import threading
import time
from typing import Any

SAMPLE_INTERVAL = 0.1
PSS_EVERY = 3  # samples
MAX_SAMPLER_SHARE = 20  # the sampler waits at least 20x what a sample cost it
CHILD_TIMEOUT = 600.0
CHROMIUM_KINDS = frozenset({"browser", "renderer", "gpu", "network", "utility", "zygote"})


def cpu_split(by_kind: dict[str, float]) -> dict[str, float]:
    """``cpu_by_kind`` folded into the three parts: tool, driver, chromium (and other)."""
    out = {"tool": 0.0, "driver": 0.0, "chromium": 0.0, "other": 0.0}
    for kind, seconds in by_kind.items():
        if kind in ("tool", "driver"):
            out[kind] += seconds
        elif kind in CHROMIUM_KINDS:
            out["chromium"] += seconds
        else:
            out["other"] += seconds
    return out


class TreeSampler(threading.Thread):
    """Peak PSS and RSS summed over a process tree, and its CPU time by kind of process.

    The tree is the root's descendants (by parent PID) plus every process in the
    process group of one of them (Playwright starts Chromium as a group leader, so a
    Chromium child that got reparented still counts). All of ``/proc`` is scanned for
    new members on the first samples and then every ``rescan`` samples. The known
    members' ``stat`` (CPU) and ``statm`` (RSS) are read on every sample; their
    ``smaps_rollup`` (PSS) every ``pss_every`` samples only, since it costs 1-2 ms per
    Chromium process: read every 100 ms it took ~20% of a core, which the measured
    processes would miss on a 2-core machine.
    """

    def __init__(
        self,
        root: int,
        interval: float = SAMPLE_INTERVAL,
        rescan: int = 5,
        pss_every: int = PSS_EVERY,
    ) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.rescan = rescan
        self.pss_every = pss_every
        self._page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_procs = 0
        self.samples = 0
        self.cpu_seconds = 0.0
        self.mean_interval = interval
        #: pid -> (kind, last seen user + system CPU seconds)
        self.cpu: dict[int, tuple[str, float]] = {}
        self._members: set[int] = {root}
        self._kinds: dict[int, str] = {}
        self._halt = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        started = time.perf_counter()
        while True:
            before = time.thread_time()
            self._sample()
            # At most ~5% of one core: a tree of 200 processes (shot-scraper keeps
            # every page open) is sampled less often rather than slowed down.
            cost = time.thread_time() - before
            if self._halt.wait(max(self.interval, cost * MAX_SAMPLER_SHARE)):
                break
        self.cpu_seconds = time.thread_time()
        self.mean_interval = (time.perf_counter() - started) / max(1, self.samples)

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, seconds in self.cpu.values():
            out[kind] = out.get(kind, 0.0) + seconds
        return out

    @staticmethod
    def _stat_fields(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            return None
        fields = stat[stat.rfind(")") + 2 :].split()
        return None if len(fields) < 13 or fields[0] == "Z" else fields

    def _scan(self) -> None:
        parent: dict[int, int] = {}
        group: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = self._stat_fields(int(entry))
                if fields is not None:
                    parent[int(entry)], group[int(entry)] = int(fields[1]), int(fields[2])
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        tree = {self.root}
        stack = [self.root]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in tree:
                    tree.add(child)
                    stack.append(child)
        leaders = {pid for pid in tree if group.get(pid) == pid and pid != self.root}
        tree.update(pid for pid, pgid in group.items() if pgid in leaders)
        self._members = tree

    def _kind(self, pid: int) -> str:
        if pid == self.root:
            return "tool"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return "other"
        # Chromium rewrites its children's command lines into one space-separated string.
        line = b" ".join(argv)
        exe = os.path.basename(line.split(b" ", 1)[0]).decode(errors="replace")
        found = re.search(rb"--type=([\w-]+)", line)
        if found:
            kind = found.group(1).decode()
            if kind == "utility":
                return "network" if b"network.mojom" in line else "utility"
            return {"gpu-process": "gpu"}.get(kind, kind)
        if "chrom" in exe or "headless" in exe:
            return "browser"
        if exe == "node" or any(b"playwright" in a for a in argv[:3]):
            return "driver"
        return exe or "other"

    def _sample(self) -> None:
        if self.samples < 20 or self.samples % self.rescan == 0:
            self._scan()
        with_pss = self.samples % self.pss_every == 0
        pss = rss = procs = 0
        for pid in sorted(self._members):
            fields = self._stat_fields(pid)
            if fields is None:
                continue
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    rss += int(f.read().split()[1]) * self._page_kib
                if with_pss:
                    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                        text = f.read()
                    for line in text.splitlines():
                        if line.startswith(b"Pss:"):
                            pss += int(line.split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kind = self._kinds.get(pid)
            if kind is None:
                kind = self._kind(pid)
                # Not kept while unsure: the chromium wrapper script execs Chromium,
                # a zygote's child shows the zygote's command line until it renames
                # itself, and an exiting process has an empty one.
                if kind not in ("sh", "other", "zygote"):
                    self._kinds[pid] = kind
            self.cpu[pid] = (kind, (int(fields[11]) + int(fields[12])) / self._tick)
            procs += 1
        self.samples += 1
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, procs)


def measure(
    argv: list[str],
    cwd: pathlib.Path,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT,
) -> dict[str, Any]:
    """Run one measured process: wall time, tree CPU (``wait4``), tree memory peaks.

    Its stdout and stderr go to ``cwd/child.out`` and ``cwd/child.err`` and are
    returned as text; it is killed after ``timeout`` seconds.
    """
    out_path = cwd / "child.out"
    err_path = cwd / "child.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_pss_mb": sampler.peak_pss / 1024,
        "peak_rss_mb": sampler.peak_rss / 1024,
        "peak_procs": sampler.peak_procs,
        "samples": sampler.samples,
        "sampler_cpu": sampler.cpu_seconds,
        "sampler_interval": sampler.mean_interval,
        "cpu_by_kind": sampler.cpu_by_kind(),
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


class ProcessMemory(threading.Thread):
    """One process's resident memory, sampled every ``interval`` seconds.

    ``VmHWM`` is the kernel's own high-water mark of the process's RSS, so ``peak``
    misses nothing between samples; ``rss`` is the latest ``VmRSS``. Children (Chromium,
    Playwright's driver) are not counted: only this process's own memory.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.rss_kib = 0
        self.peak_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def read(self) -> None:
        """Take one sample now (also done by the thread)."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                text = f.read()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith(b"VmRSS:"):
                self.rss_kib = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            self.read()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
