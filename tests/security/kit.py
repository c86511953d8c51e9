"""Tools of the hostile-input suite: a canary that must never be reached, a measured
subprocess runner, and a catch-all site."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BULK
from tests.sitekit import ROOT


@dataclass
class Canary:
    """Listens on every local address (dual-stack ``[::]``), TCP and UDP, same port.

    Any connection or datagram is an egress-policy failure: nothing bulk does on a
    user's behalf may reach it.
    """

    port: int = 0
    tcp: list[tuple[str, float]] = field(default_factory=list)
    udp: list[tuple[str, float]] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return len(self.tcp) + len(self.udp)


@contextmanager
def canary() -> Iterator[Canary]:
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("::", 0))
    tcp.listen(64)
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", port))
    result = Canary(port=port)
    stop = threading.Event()

    def accept() -> None:
        tcp.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, addr = tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            result.tcp.append((addr[0], time.time()))
            conn.close()

    def receive() -> None:
        udp.settimeout(0.2)
        while not stop.is_set():
            try:
                _, addr = udp.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            result.udp.append((addr[0], time.time()))

    threads = [threading.Thread(target=f, daemon=True) for f in (accept, receive)]
    for t in threads:
        t.start()
    try:
        yield result
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        tcp.close()
        udp.close()


@dataclass
class Measured:
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


# Runs ARGV in a grandchild and writes its exit code and wait4 peak RSS to a file.
# A child forked straight from the test process would inherit the test process's
# own high-water mark (Linux carries it over fork and exec into ru_maxrss); a child
# of this small launcher starts from the launcher's few MB instead.
_LAUNCHER = """
import json, os, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)
"""


def run_measured(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Measured:
    """Run ``bulk ARGS`` in a fresh process; report its own peak RSS (wait4)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bulk-measured-") as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(report), *BULK, *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        seconds = time.monotonic() - start
        result = json.loads(report.read_text()) if report.exists() else None
    measured = Measured(
        code=result["code"] if result else -signal.SIGKILL,
        stdout=out,
        stderr=err,
        seconds=seconds,
        peak_rss_mb=result["maxrss_kb"] / 1024 if result else 0.0,
    )
    MEASURED.append((" ".join(map(str, args))[:120], measured))
    return measured


# Every run_measured of this session, for the summary at the end (conftest.py).
MEASURED: list[tuple[str, Measured]] = []
