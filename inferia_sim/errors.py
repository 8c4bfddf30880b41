"""Errors in the shape vLLM returns them: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
from http import HTTPStatus


class ApiError(Exception):
    """A request the simulator refuses; the dispatcher turns it into an OpenAI-style error response."""

    def __init__(self, status: HTTPStatus, message: str, *, error_type: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _ERROR_TYPES.get(status, "BadRequestError")
        self.param = param

    def body(self) -> bytes:
        return error_body(self.status, self.message, error_type=self.error_type, param=self.param)


# vLLM names the error type after the exception class it raised, which follows OpenAI's SDK naming.
_ERROR_TYPES = {
    HTTPStatus.BAD_REQUEST: "BadRequestError",
    HTTPStatus.NOT_FOUND: "NotFoundError",
    HTTPStatus.METHOD_NOT_ALLOWED: "MethodNotAllowed",
    HTTPStatus.INTERNAL_SERVER_ERROR: "InternalServerError",
    HTTPStatus.SERVICE_UNAVAILABLE: "ServiceUnavailableError",
}


def error_body(status: HTTPStatus, message: str, *, error_type: str | None = None, param: str | None = None) -> bytes:
    error = {
        "message": message,
        "type": error_type or _ERROR_TYPES.get(status, "BadRequestError"),
        "param": param,
        "code": int(status),
    }
    return json.dumps({"error": error}).encode()


def bad_request(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, message, param=param)
