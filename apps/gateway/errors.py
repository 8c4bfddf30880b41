"""Errors the gateway answers with, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
from collections.abc import Iterable

from apps.policies.errors import PolicyDenied, PolicyUnavailable


class GatewayError(Exception):
    """A request that ends with an error response (or, once streaming has started, a final error event)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers  # extra response headers, e.g. `retry-after` on a 429

    def body(self) -> bytes:
        """The JSON error document."""
        return json.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        ).encode()

    def sse_event(self) -> bytes:
        """The error as the final event of a stream that has already started."""
        return b"data: " + self.body() + b"\n\n"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, type="invalid_request_error", param=param, code=code)


def invalid_api_key() -> GatewayError:
    return GatewayError(
        401,
        "Incorrect API key provided. Pass a valid key as 'Authorization: Bearer sk-inf-...'.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def insufficient_scope(scopes: Iterable[str]) -> GatewayError:
    """403 for a key that has none of `scopes`."""
    named = [f"'{scope}'" for scope in sorted(scopes)]
    either = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
    return GatewayError(
        403, f"This API key lacks the {either} scope.", type="permission_error", code="insufficient_scope"
    )


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def not_found(path: str) -> GatewayError:
    return GatewayError(404, f"Unknown endpoint: {path}", type="invalid_request_error", code="unknown_url")


def method_not_allowed(method: str) -> GatewayError:
    return GatewayError(405, f"Method {method} is not allowed here.", type="invalid_request_error")


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"Request body is larger than {limit} bytes.", type="invalid_request_error", code="request_too_large"
    )


def upstream_failed(message: str = "The model's engine failed to answer.") -> GatewayError:
    return GatewayError(502, message, type="upstream_error", code="bad_gateway")


def upstream_unavailable() -> GatewayError:
    return GatewayError(
        503, "The model's engine is overloaded.", type="service_unavailable", code="upstream_unavailable"
    )


def no_replica(model: str) -> GatewayError:
    return GatewayError(
        503, f"No replica of '{model}' is available right now.", type="service_unavailable", code="no_replica"
    )


def upstream_timeout() -> GatewayError:
    return GatewayError(504, "The model's engine did not answer in time.", type="timeout", code="upstream_timeout")


def policy_denied(denial: PolicyDenied) -> GatewayError:
    """A policy refusal (403 model not allowed, 400 guardrail or max_tokens, 429 limits) with its headers."""
    headers = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in denial.headers)
    return GatewayError(
        denial.status, denial.message, type=denial.type, code=denial.code, param=denial.param, headers=headers
    )


def policy_unavailable() -> GatewayError:
    """The usage counters cannot be reached and policy fails closed."""
    return GatewayError(
        PolicyUnavailable.status, PolicyUnavailable.message, type=PolicyUnavailable.type, code=PolicyUnavailable.code
    )


def output_guardrail_violation(category: str) -> GatewayError:
    """The model's answer tripped an output guardrail set to stop (never echoing the matched text)."""
    return GatewayError(
        400,
        f"The answer was stopped by the '{category}' guardrail.",
        type="invalid_request_error",
        code="guardrail_violation",
    )
