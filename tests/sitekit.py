"""Real HTTP test sites on 127.0.0.1 (port 0), for tests and the benchmark scripts.

``SiteServer`` serves a fixture directory (``fixtures/sites/<name>``) plus programmable
routes, in a thread, so both trio tests and subprocess (CLI) tests can use it.
Text files may contain ``{origin}``, replaced by the server's own origin
(``http://127.0.0.1:PORT``) when served, since the port is only known at run time.
Every request is recorded (path, headers) so tests can assert what a browser sent.
"""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css",
    ".js": "application/javascript",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".gz": "application/gzip",
    ".json": "application/json",
}
_TEXT = {".html", ".xml", ".txt", ".css", ".js", ".json", ".svg", ""}


@dataclass
class Route:
    """What the server answers on one path (overrides files)."""

    status: int = 200
    body: bytes | str | None = None
    file: str | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    redirect: str | None = None
    gzip: bool = False
    content_encoding: str | None = None
    delay: float = 0.0
    handler: Callable[[http.server.BaseHTTPRequestHandler], None] | None = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    time: float
    body: bytes = b""


class SiteServer:
    """A threaded HTTP server for one fixture site.

    Args:
        directory: Files served by path (``/about/`` -> ``about/index.html``,
            ``/blog/post`` -> ``blog/post.html`` when no exact file exists).
        routes: Path (with query, if any) -> ``Route``; checked before files.
        host: Bind address (``127.0.0.1``; tests use ``127.0.0.2`` for canaries).
    """

    def __init__(
        self,
        directory: Path | None = None,
        routes: Mapping[str, Route] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = directory
        self.routes: dict[str, Route] = dict(routes or {})
        #: Answers every path that neither a route nor a file matches (None: 404).
        self.fallback: Route | None = None
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

            def do_HEAD(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Clients (browsers, bulk cutting a download short) reset connections
                # on purpose; that is not a test failure.
                pass

        self._httpd = Server((host, 0), Handler)
        self.host = host
        self.port = self._httpd.server_address[1]
        self.origin = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> SiteServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # ---- serving ---------------------------------------------------------------------

    def _sub(self, data: bytes) -> bytes:
        return data.replace(b"{origin}", self.origin.encode())

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        h.body = body  # type: ignore[attr-defined]  # for Route.handler callbacks
        with self._lock:
            self.requests.append(
                Request(
                    h.command,
                    h.path,
                    {k.lower(): v for k, v in h.headers.items()},
                    time.time(),
                    body,
                )
            )
        route = self.routes.get(h.path) or self.routes.get(h.path.split("?", 1)[0])
        if route is None:
            route = self._file_route(h.path.split("?", 1)[0])
        if route is None:
            route = self.fallback
        if route is None:
            self._send(h, 404, b"<h1>404 Not Found</h1>", "text/html; charset=utf-8", {})
            return
        if route.delay:
            time.sleep(route.delay)
        if route.handler is not None:
            route.handler(h)
            return
        if route.redirect is not None:
            target = self._sub(route.redirect.encode()).decode()
            status = route.status if 300 <= route.status < 400 else 301
            self._send(h, status, b"", "text/plain", {"Location": target, **route.headers})
            return
        body, ctype = self._body(route)
        headers = dict(route.headers)
        if route.gzip:
            body = gzip.compress(body, mtime=0)
        if route.content_encoding == "gzip":
            body = gzip.compress(body, mtime=0)
            headers["Content-Encoding"] = "gzip"
        elif route.content_encoding:
            headers["Content-Encoding"] = route.content_encoding
        self._send(h, route.status, body, ctype, headers)

    def _body(self, route: Route) -> tuple[bytes, str]:
        ctype = route.content_type
        if route.file is not None:
            assert self.directory is not None
            path = self.directory / route.file
            data = path.read_bytes()
            if path.suffix in _TEXT:
                data = self._sub(data)
            return data, ctype or _TYPES.get(path.suffix, "application/octet-stream")
        body = route.body or b""
        data = body.encode() if isinstance(body, str) else body
        return self._sub(data), ctype or "text/html; charset=utf-8"

    def _file_route(self, path: str) -> Route | None:
        if self.directory is None or ".." in path.split("/"):
            return None
        rel = path.lstrip("/")
        candidates = (
            [rel + "index.html"] if rel.endswith("/") or rel == "" else [rel, rel + ".html"]
        )
        for cand in candidates:
            file = self.directory / cand
            if file.is_file():
                return Route(file=cand)
        return None

    @staticmethod
    def _send(
        h: http.server.BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        ctype: str,
        headers: Mapping[str, str],
    ) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def serve_site(name: str, routes: Mapping[str, Route] | None = None) -> Iterator[SiteServer]:
    """Serve ``fixtures/sites/<name>`` on 127.0.0.1:0 for the block."""
    with SiteServer(FIXTURES / "sites" / name, routes) as server:
        yield server


def routes_from_case(case: Mapping[str, Any]) -> dict[str, Route]:
    """Routes of a ``fixtures/sitemaps/<case>/case.json`` (see its README)."""
    out: dict[str, Route] = {}
    for path, spec in case.get("routes", {}).items():
        out[path] = Route(
            status=spec.get("status", 200),
            file=spec.get("file"),
            body=spec.get("body"),
            content_type=spec.get("content_type"),
            headers=spec.get("headers", {}),
            redirect=spec.get("redirect"),
            gzip=spec.get("gzip", False),
            content_encoding=spec.get("content_encoding"),
        )
    return out


def load_case(path: Path) -> dict[str, Any]:
    return json.loads((path / "case.json").read_text())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
