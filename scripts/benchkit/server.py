"""The bench's web servers: one separate process serving several hosts from memory.

A benchmark's site must cost the measured processes nothing, so it is served from
a process of its own, and that process must be cheap per request (a 2-core machine
has no core to spare for it): one asyncio loop, HTTP/1.1 keep-alive, files held in
memory, a delayed answer is a timer rather than a blocked thread.

Each host is a directory (``HostSpec``) or the generated tiny site (``TinySite``:
any number of one-line pages behind a sitemap index, for memory tests), bound to its
own loopback address and port 0. Files may hold ``{origin}`` (the host's own origin)
and ``{NAME}`` for any host's name (its origin); a request with ``?delay=MS`` is
answered after that many milliseconds (at most ``MAX_DELAY_MS``). Static files
(CSS, JS, images, fonts) are sent with ``Cache-Control: max-age=3600`` as a real
site's are; a host with ``cors=True`` adds ``Access-Control-Allow-Origin: *`` (web
fonts from another origin need it).

Use::

    with ServerProcess.start([HostSpec("site", root)]) as server:
        origin = server.origins["site"]
        ...
        counts = server.counts()   # per host, since the previous call

``counts()`` returns, per host name, the ``requests`` answered, ``connections``
accepted, ``bytes`` sent (heads and bodies) and tiny-site ``pages`` served since the
previous call, and the server
process's CPU seconds over the same span (``cpu_seconds``, under the key ``_server``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs

MAX_DELAY_MS = 15_000
MAX_HEAD = 64 * 1024
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "application/javascript",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".woff2": "font/woff2",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}
_STATIC = frozenset({".css", ".js", ".png", ".jpg", ".gif", ".woff2"})
_TEXT = frozenset({".html", ".css", ".js", ".xml", ".txt"})
_NOT_FOUND = b"<h1>404 Not Found</h1>"
_SITEMAP_SIZE = 10_000


@dataclass(frozen=True)
class HostSpec:
    """A directory served as one host.

    Args:
        name: The host's name in ``origins``/``counts`` and as a ``{name}`` placeholder.
        root: The directory; ``/`` maps to it, ``/x/`` to ``x/index.html``.
        address: The loopback address to bind (``127.0.0.2`` makes another host).
        cors: Send ``Access-Control-Allow-Origin: *`` with every answer.
    """

    name: str
    root: str
    address: str = "127.0.0.1"
    cors: bool = False


@dataclass(frozen=True)
class TinySite:
    """``pages`` generated one-line pages (``/p/N``), a sitemap index over sitemaps of
    10,000 URLs each, and a ``robots.txt`` naming it; nothing is held per page."""

    name: str
    pages: int
    address: str = "127.0.0.1"
    kind: str = field(default="tiny", init=False)


class ServerProcess:
    """The server process, started by ``start`` and stopped on exit from ``with``."""

    def __init__(self, proc: subprocess.Popen[str], origins: dict[str, str]) -> None:
        self.proc = proc
        #: host name -> ``http://address:port``
        self.origins = origins

    @classmethod
    @contextmanager
    def start(cls, hosts: list[HostSpec | TinySite]) -> Iterator[ServerProcess]:
        """Start the process, wait for its origins, stop it (close stdin) on exit."""
        spec = json.dumps([{**asdict(h), "kind": getattr(h, "kind", "dir")} for h in hosts])
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchkit.server", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=pathlib.Path(__file__).resolve().parent.parent,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the bench server did not start")
            yield cls(proc, json.loads(line)["origins"])
        finally:
            if proc.stdin is not None:
                with suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def counts(self) -> dict[str, dict[str, float]]:
        """Per host: requests, connections and bytes since the previous call."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        result: dict[str, dict[str, float]] = json.loads(self.proc.stdout.readline())
        return result


def total(counts: dict[str, dict[str, float]]) -> dict[str, float]:
    """Requests, connections and bytes summed over every host of a ``counts()``."""
    out = {"requests": 0.0, "connections": 0.0, "bytes": 0.0}
    for name, c in counts.items():
        if not name.startswith("_"):
            for key in out:
                out[key] += c.get(key, 0)
    return out


# --- the server process ---------------------------------------------------------------------


class _Host:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.address: str = spec["address"]
        self.cors: bool = spec.get("cors", False)
        self.tiny_pages: int = spec["pages"] if spec["kind"] == "tiny" else 0
        self.root = pathlib.Path(spec["root"]) if spec["kind"] == "dir" else None
        self.origin = ""
        self.files: dict[str, tuple[bytes, str, bool]] = {}
        #: ``pages``: tiny-site pages served (the others are 0)
        self.counts = {"requests": 0, "connections": 0, "bytes": 0, "pages": 0}

    def load(self, origins: dict[str, str]) -> None:
        if self.root is None:
            return
        for file in self.root.rglob("*"):
            if not file.is_file():
                continue
            data = file.read_bytes()
            if file.suffix in _TEXT and b"{" in data:
                for name, origin in {"origin": self.origin, **origins}.items():
                    data = data.replace(b"{" + name.encode() + b"}", origin.encode())
            rel = "/" + file.relative_to(self.root).as_posix()
            ctype = _TYPES.get(file.suffix, "text/plain; charset=utf-8")
            self.files[rel] = (data, ctype, file.suffix in _STATIC)

    def lookup(self, path: str) -> tuple[int, bytes, str, bool]:
        if self.tiny_pages:
            return self._tiny(path)
        if path.endswith("/"):
            path += "index.html"
        found = self.files.get(path)
        if found is None:
            return 404, _NOT_FOUND, "text/html; charset=utf-8", False
        return 200, *found

    def _tiny(self, path: str) -> tuple[int, bytes, str, bool]:
        n = self.tiny_pages
        xml = "application/xml"
        if path == "/robots.txt":
            body = f"User-agent: *\nAllow: /\n\nSitemap: {self.origin}/sitemap-index.xml\n"
            return 200, body.encode(), "text/plain; charset=utf-8", False
        if path == "/sitemap-index.xml":
            maps = "".join(
                f"<sitemap><loc>{self.origin}/sitemap-{k}.xml</loc></sitemap>\n"
                for k in range((n + _SITEMAP_SIZE - 1) // _SITEMAP_SIZE)
            )
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex'
                f' xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{maps}</sitemapindex>\n'
            )
            return 200, body.encode(), xml, False
        found = re.fullmatch(r"/sitemap-(\d+)\.xml", path)
        if found:
            k = int(found.group(1))
            urls = "".join(
                f"<url><loc>{self.origin}/p/{i}</loc></url>\n"
                for i in range(k * _SITEMAP_SIZE + 1, min(n, (k + 1) * _SITEMAP_SIZE) + 1)
            )
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<urlset'
                f' xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{urls}</urlset>\n'
            )
            return 200, body.encode(), xml, False
        found = re.fullmatch(r"/p/(\d+)", path)
        if found and 1 <= int(found.group(1)) <= n:
            i = int(found.group(1))
            self.counts["pages"] += 1
            body = (
                f"<!doctype html><title>Page {i}</title>"
                f"<body style='margin:8px;font:14px sans-serif'><h1>Page {i}</h1>"
                f"<p>One of {n} tiny pages.</p>"
            )
            return 200, body.encode(), "text/html; charset=utf-8", False
        return 404, _NOT_FOUND, "text/html; charset=utf-8", False


async def _handle(host: _Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    host.counts["connections"] += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            path, _, query = target.partition("?")
            if path.startswith("http://") or path.startswith("https://"):
                path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
            delay = parse_qs(query).get("delay", ["0"])[0]
            if delay.isdigit() and int(delay) > 0:
                await asyncio.sleep(min(int(delay), MAX_DELAY_MS) / 1000)
            status, body, ctype, static = host.lookup(path)
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            out = [
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}",
                f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}",
            ]
            if static:
                out.append("Cache-Control: public, max-age=3600")
            if host.cors:
                out.append("Access-Control-Allow-Origin: *")
            if close:
                out.append("Connection: close")
            data = ("\r\n".join(out) + "\r\n\r\n").encode()
            if method != "HEAD":
                data += body
            host.counts["requests"] += 1
            host.counts["bytes"] += len(data)
            writer.write(data)
            await writer.drain()
            if close:
                return
    except ConnectionError:
        pass
    finally:
        writer.close()
        with suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _main(specs: list[dict[str, Any]]) -> None:
    hosts = [_Host(s) for s in specs]
    servers = []
    for host in hosts:
        server = await asyncio.start_server(
            functools.partial(_handle, host), host.address, 0, limit=MAX_HEAD, backlog=1024
        )
        port = server.sockets[0].getsockname()[1]
        host.origin = f"http://{host.address}:{port}"
        servers.append(server)
    origins = {h.name: h.origin for h in hosts}
    for host in hosts:
        host.load(origins)
    print(json.dumps({"origins": origins}), flush=True)
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.strip() == b"count":
            now = time.process_time()
            report: dict[str, Any] = {h.name: dict(h.counts) for h in hosts}
            report["_server"] = {"cpu_seconds": now - cpu}
            cpu = now
            for h in hosts:
                h.counts = dict.fromkeys(h.counts, 0)
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
