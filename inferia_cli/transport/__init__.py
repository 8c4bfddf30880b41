"""What a web process allows a client before the application sees its request: header size, how long headers and
a body may take to arrive, and how many connections are open at once. Enforced inside the ASGI servers' own
protocols (`uvicorn_http` and `daphne_http`), so that nothing past a limit is buffered.

Read from the environment without Django: the servers load these classes before the application.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferia_runtime.env import ConfigError, env_float, env_int


@dataclass(frozen=True)
class TransportLimits:
    """The limits of one web process (each worker process has its own)."""

    max_header_bytes: int  # the request line and every header together; past it: 431, connection closed
    header_timeout_s: float  # from a request's first byte (or the connection's opening) to its last header; then 408
    body_timeout_s: float  # the longest silence in the middle of a request body; then 408
    max_connections: int  # open connections past it are answered 503 and closed at once

    @classmethod
    def from_env(cls) -> TransportLimits:
        limits = cls(
            max_header_bytes=env_int("INFERIA_MAX_HEADER_BYTES", 16 * 1024),
            header_timeout_s=env_float("INFERIA_HEADER_TIMEOUT_SECONDS", 10.0),
            body_timeout_s=env_float("INFERIA_BODY_TIMEOUT_SECONDS", 30.0),
            max_connections=env_int("INFERIA_MAX_CONNECTIONS", 2048),
        )
        if limits.max_header_bytes < 1024:
            raise ConfigError("INFERIA_MAX_HEADER_BYTES must be at least 1024")
        if limits.header_timeout_s <= 0 or limits.body_timeout_s <= 0:
            raise ConfigError("INFERIA_HEADER_TIMEOUT_SECONDS and INFERIA_BODY_TIMEOUT_SECONDS must be positive")
        if limits.max_connections < 1:
            raise ConfigError("INFERIA_MAX_CONNECTIONS must be at least 1")
        return limits


def canned_response(status: int, reason: str, message: str, error_type: str = "invalid_request_error") -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers given before any application runs. The
    body is OpenAI's error shape, which any caller of /v1 can read."""
    body = b'{"error": {"message": "%s", "type": "%s", "param": null, "code": null}}' % (
        message.encode(),
        error_type.encode(),
    )
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, reason.encode(), len(body)) + body


HEADERS_TOO_LARGE = canned_response(431, "Request Header Fields Too Large", "The request's headers are too large.")
HEADERS_TOO_SLOW = canned_response(408, "Request Timeout", "The request's headers did not arrive in time.")
BODY_TOO_SLOW = canned_response(408, "Request Timeout", "The request's body stopped arriving.")
TOO_MANY_CONNECTIONS = canned_response(
    503, "Service Unavailable", "Too many open connections; try again shortly.", "service_unavailable"
)
