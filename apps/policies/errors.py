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


class TemplateError(PolicyDenied):
    """A `/v1` request's `template` or `template_variables` cannot be used. A `PolicyDenied`, so the gateway answers
    it like any other refusal: `status` with OpenAI's error shape."""


class TemplateRefInvalid(TemplateError):
    """The `template` reference is not `name`, `name@latest` or `name@<version>`."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            400, "invalid_template_ref",
            f"'template' must be 'name', 'name@latest' or 'name@<version number>', not {ref[:120]!r}.",
            type="invalid_request_error", param="template",
        )  # fmt: skip


class TemplateNotFound(TemplateError, LookupError):
    """No template of that name in the organisation, or no such version of it."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"Prompt template '{name[:100]}'" + (f" has no version {version}" if version else " does not exist")
        super().__init__(
            404, "template_not_found", f"{what} in this organisation.", type="invalid_request_error", param="template"
        )


class TemplateVariablesInvalid(TemplateError):
    """The variables given do not fit the template: required ones missing, undeclared ones given, or a value that
    is not a string or number. `missing` and `unexpected` list the names."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = (), unexpected: tuple[str, ...] = ()) -> None:
        super().__init__(
            400, "template_variables_invalid", message, type="invalid_request_error", param="template_variables"
        )
        self.missing = missing
        self.unexpected = unexpected
