"""The ways a request can fail policy, with the HTTP status and OpenAI-style code the gateway answers with."""

from __future__ import annotations


class PolicyDenied(Exception):
    """A request the policy refuses. The gateway answers `status` with `{"error": {"message", "type", "param",
    "code"}}`, plus `retry-after` (whole seconds) when `retry_after_s` is set. Messages never echo request text."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str,
        param: str | None = None,
        retry_after_s: float | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.retry_after_s = retry_after_s
        self.headers = headers


class PolicyUnavailable(Exception):
    """The counters (Redis) cannot be reached and the policy fails closed (`INFERIA_POLICY_FAIL_OPEN` is off): the
    gateway answers 503 with code `policy_unavailable`. Nothing was counted."""

    status = 503
    code = "policy_unavailable"
    type = "service_unavailable"
    message = "Usage limits cannot be checked right now; try again shortly."


def model_not_allowed(model: str) -> PolicyDenied:
    return PolicyDenied(
        403, "model_not_allowed", f"This API key may not use the model '{model}'.", type="permission_error",
        param="model",
    )  # fmt: skip


def max_tokens_exceeded(requested: int, limit: int) -> PolicyDenied:
    return PolicyDenied(
        400, "max_tokens_exceeded", f"max_tokens is {requested}; this key's policy allows at most {limit}.",
        type="invalid_request_error", param="max_tokens",
    )  # fmt: skip


def guardrail_violation(category: str) -> PolicyDenied:
    return PolicyDenied(
        400, "guardrail_violation", f"The request was blocked by the '{category}' guardrail.",
        type="invalid_request_error", param="messages",
    )  # fmt: skip
