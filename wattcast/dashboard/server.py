"""The dashboard's web server: the page, its files, and the state pushed as Server-Sent Events.

The standard library's :class:`~http.server.ThreadingHTTPServer` (a thread per
connection) is enough for a page a handful of people watch, and keeps the first
install light.  Routes::

    GET /                     the page (static/index.html)
    GET /static/<file>        its script, style and the vendored chart library
    GET /api/state?house=ID   one snapshot as JSON
    GET /events?house=ID      a snapshot whenever the state changed (at most every ``push_every``
                              seconds) and every ``refresh_s`` anyway, as Server-Sent Events
    GET /healthz              ``ok``

The browser only ever talks to this server: it never sees the broker or a login.
The server answers only requests whose ``Host`` is a loopback name, the address it is
bound to, or one of ``allowed_hosts`` (``--allow-host``): a page of another site that
points its own name at this address (DNS rebinding) gets 403, not the household's data.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wattcast.dashboard.state import DashboardState

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _static(name: str) -> bytes | None:
    """A file of the page (``static/``, ``static/vendor/``), or None for any other name."""
    parts = name.split("/")
    if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or len(parts) > 2:
        return None
    path = resources.files("wattcast.dashboard").joinpath("static", *parts)
    return path.read_bytes() if path.is_file() else None


def _json(data: Any) -> bytes:
    return json.dumps(_finite(data), separators=(",", ":")).encode()


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: None instead."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        state: DashboardState,
        host: str = "127.0.0.1",
        port: int = 0,
        push_every: float = 0.5,
        refresh_s: float = 2.0,
        window_minutes: int = 120,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.state = state
        self.push_every = push_every
        self.refresh_s = refresh_s
        self.window_minutes = window_minutes
        self.stopping = threading.Event()
        wildcard = host in ("", "0.0.0.0", "::")
        self.allowed_hosts = {h.lower() for h in (*allowed_hosts, *(() if wildcard else (host,)))}
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="dashboard-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stopping.set()  # ends the event streams
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        pass  # no line per request on the console

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        if not self._host_allowed():
            return self._send(HTTPStatus.FORBIDDEN, b"forbidden: not a host name of this dashboard (--allow-host)\n")
        url = urlsplit(self.path)
        houses = parse_qs(url.query).get("house")
        house = houses[0] if houses else None
        if url.path == "/":
            body = _static("index.html")
            return self._send(HTTPStatus.OK, body or b"", TYPES[".html"])
        if url.path.startswith("/static/"):
            name = url.path[len("/static/") :]
            body = _static(name)
            if body is None:
                return self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            return self._send(HTTPStatus.OK, body, TYPES.get(name[name.rfind(".") :], "application/octet-stream"))
        if url.path == "/api/state":
            snapshot = self.server.state.snapshot(house, self.server.window_minutes)
            return self._send(HTTPStatus.OK, _json(snapshot), "application/json")
        if url.path == "/events":
            return self._events(house)
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"")
        if url.path == "/healthz":
            return self._send(HTTPStatus.OK, b"ok\n")
        return self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _host_allowed(self) -> bool:
        host = self.headers.get("Host", "").strip().lower()
        name = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        return name in LOOPBACK_NAMES or name.startswith("127.") or name.strip("[]") in self.server.allowed_hosts

    def _send(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")

    def _events(self, house: str | None) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self._common_headers()
        self.end_headers()
        self.close_connection = True
        server, state = self.server, self.server.state
        sent_version, last_write = -1, 0.0
        try:
            while not server.stopping.is_set():
                now = time.monotonic()
                # a new snapshot when the state changed, and every refresh_s anyway (rates, ages, ETA move with time)
                if state.version != sent_version or now - last_write >= server.refresh_s:
                    sent_version = state.version
                    data = _json(state.snapshot(house, server.window_minutes))
                    self.wfile.write(b"event: state\ndata: " + data + b"\n\n")
                    self.wfile.flush()
                    last_write = now
                server.stopping.wait(server.push_every)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the browser went away
