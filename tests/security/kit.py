"""Tools of the hostile-input suite: a canary that must never be reached, a measured
subprocess runner, and a catch-all site."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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


def run_measured(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Measured:
    """Run ``bulk ARGS`` in a child process; report its own peak RSS (wait4)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*BULK, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(5)
    return Measured(
        code=proc.returncode,
        stdout="".join(out),
        stderr="".join(err),
        seconds=time.monotonic() - start,
        peak_rss_mb=usage.ru_maxrss / 1024,
    )
