"""In-process fake HTTP servers that record what they were sent, for contract-checking adapters."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


# A route answers (status, json body) or (status, json body, response headers) for a request; it may raise
# AssertionError to fail the contract (-> 599).
Route = Callable[[Exchange], tuple[Any, ...]]


@dataclass
class FakeServer:
    """A threaded HTTP server on 127.0.0.1 dispatching (METHOD, path-without-query) to routes; keeps every exchange."""

    routes: dict[tuple[str, str], Route]
    exchanges: list[Exchange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode()
                # HTTP header names are case-insensitive: keep them lower-cased.
                headers = {key.lower(): value for key, value in self.headers.items()}
                exchange = Exchange(self.command, self.path, headers, body)
                fake.exchanges.append(exchange)
                route = fake.routes.get((self.command, self.path.split("?", 1)[0]))
                headers_out: dict[str, str] = {}
                if route is None:
                    fake.errors.append(f"unexpected {self.command} {self.path}")
                    status, payload = 404, {"kind": "Status", "code": 404, "message": "not found"}
                else:
                    try:
                        status, payload, *extra = route(exchange)
                        headers_out = extra[0] if extra else {}
                    except AssertionError as error:
                        fake.errors.append(f"{self.command} {self.path}: {error}")
                        status, payload = 599, {"message": str(error)}
                is_text = isinstance(payload, str)
                data = payload.encode() if is_text else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers_out.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain" if is_text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
