"""The management API's OpenAPI description of its error answers, so a client (or a fuzzer) can rely on the schema
for every status the API really gives, not only for its successes.

Which errors an operation documents follows from what DRF does with it: a body or a query parameter can be refused
(400, in DRF's validation shape), a path naming a row can miss (404), a missing or bad credential is a 401 and a
principal without the right is a 403 (both `{"detail": ...}`), a body in a media type the view cannot parse is a 415.
An operation's own declaration of a status (a 409, say) is kept as it is written.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.permissions import AllowAny

DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# DRF's validation errors: field -> messages (nested for nested serializers), or a bare list of messages when a
# view or service refuses the request as a whole.
VALIDATION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "additionalProperties": {}},
        {"type": "array", "items": {"type": "string"}},
    ]
}
ERROR_DESCRIPTIONS = {
    "400": "The request was refused: the messages say which fields or parameters are wrong, and why.",
    "401": "No credentials, or a key that is unknown, expired or revoked.",
    "403": "The caller may not do this (a key without a management scope, or a missing permission).",
    "404": "No such row, or none the caller may see.",
    "409": "This conflicts with an existing record.",
    "415": "The body's media type is not one this operation reads.",
}


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers an operation can give (see the module docstring)."""

    def get_operation(self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any) -> Any:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        detail = self._error_component(registry, "ErrorDetail", DETAIL_SCHEMA)
        validation = self._error_component(registry, "ValidationErrors", VALIDATION_SCHEMA)
        parameters = operation.get("parameters", [])
        codes = {"401": detail}
        if not all(permission is AllowAny for permission in self.view.permission_classes):
            codes["403"] = detail
        if "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
            codes["400"] = validation
        if "requestBody" in operation:
            codes["415"] = detail
        if any(p.get("in") == "path" for p in parameters):
            codes["404"] = detail
        responses = operation.setdefault("responses", {})
        for code, component in sorted(codes.items()):
            responses.setdefault(code, self._error_response(code, component))
        if "409" in responses and "content" not in responses["409"]:  # declared without a body: it has DRF's detail
            responses["409"] = self._error_response("409", detail)
        return operation

    @staticmethod
    def _error_component(registry: Any, name: str, schema: dict[str, Any]) -> ResolvedComponent:
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        registry.register_on_missing(component)
        return component

    @staticmethod
    def _error_response(code: str, component: ResolvedComponent) -> dict[str, Any]:
        return {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": component.ref}}}
