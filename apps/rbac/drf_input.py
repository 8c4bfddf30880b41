"""What the management API accepts before a view runs, and how it answers when something still goes wrong.

- Bodies: JSON (and forms) whose strings hold a NUL or another C0 control character are refused with a 400. No text
  Inferia stores may hold one: PostgreSQL refuses NUL in text and JSONB, and the others are never meant.
- Pagination: `limit` and `offset` are whole numbers PostgreSQL can take (a bigint), else a 400.
- Time filters: a moment with any UTC offset Python can parse is compared in UTC (PostgreSQL only takes offsets
  up to 15:59), and one that leaves the calendar on the way is a 400.
- Errors: an unhandled exception is DRF's JSON 500 (logged with its traceback), and a path under /api/ that
  matches no route is a JSON 404, so an API client never has to parse an HTML page.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.http import HttpRequest, JsonResponse
from django.views import defaults
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import IsoDateTimeFilter
from rest_framework import exceptions, parsers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

logger = logging.getLogger(__name__)

# C0 controls but tab, line feed and carriage return, which text legitimately holds.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
BIGINT_MAX = 2**63 - 1


def control_character_refuse(data: Any, where: str = "") -> None:
    """Raise a 400 naming the first string (key or value, at any depth) that holds a control character."""
    if isinstance(data, str):
        found = CONTROL_CHARACTER.search(data)
        if found:
            place = f" (in {where})" if where else ""
            raise exceptions.ParseError(
                f"Strings may not hold control characters such as U+{ord(found.group()):04X}{place}."
            )
    elif isinstance(data, dict):
        for key, value in data.items():
            control_character_refuse(key, where)
            control_character_refuse(value, f"{where}.{key}" if where else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            control_character_refuse(value, f"{where}[{index}]")


class TextSafeJSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing strings with control characters (see the module docstring)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        control_character_refuse(data)
        return data


class TextSafeFormParser(parsers.FormParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        control_character_refuse(dict(data.lists()))
        return data


class TextSafeMultiPartParser(parsers.MultiPartParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        result = super().parse(stream, media_type, parser_context)
        control_character_refuse(dict(result.data.lists()))
        return result


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """DRF's limit/offset pagination, whose parameters are refused (400) rather than passed on to PostgreSQL
    when they are not whole numbers within a bigint (DRF ignores a malformed one, but sends a huge one on)."""

    def _bounded(self, request: Request, name: str, minimum: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise exceptions.ValidationError({name: ["A whole number is required."]}) from None
        if not minimum <= value <= BIGINT_MAX:
            raise exceptions.ValidationError({name: [f"Ensure this value is between {minimum} and {BIGINT_MAX}."]})
        return value

    def get_limit(self, request: Request) -> int | None:
        limit = self._bounded(request, self.limit_query_param, 1)
        return self.default_limit if limit is None else limit

    def get_offset(self, request: Request) -> int:
        return self._bounded(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"].update(minimum=minimum, maximum=BIGINT_MAX)
        return parameters


class UtcDateTimeField(IsoDateTimeField):
    def clean(self, value: Any) -> datetime | None:
        moment = super().clean(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("This moment is out of range.", code="invalid") from None


class UtcDateTimeFilter(IsoDateTimeFilter):
    """An ISO 8601 time filter that compares in UTC (see the module docstring)."""

    field_class = UtcDateTimeField


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, and a JSON 500 for what it does not handle (the traceback goes to the log)."""
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES (this module) when it is first imported.
    from rest_framework.views import exception_handler, set_rollback

    response = exception_handler(exc, context)
    if response is not None:
        return response
    view = context.get("view")
    logger.error("Unhandled error in %s", type(view).__name__ if view else "the API", exc_info=exc)
    set_rollback()
    return Response({"detail": "A server error occurred."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def page_not_found(request: HttpRequest, exception: Exception) -> Any:
    """Django's 404 page, but DRF's JSON answer under /api/ (an id that is not a number matches no route)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    if request.path.startswith("/v1/"):  # the files and vector-store endpoints Django serves: OpenAI's shape
        error = {"message": f"Unknown endpoint: {request.path}", "type": "invalid_request_error", "param": None}
        return JsonResponse({"error": {**error, "code": "unknown_url"}}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> Any:
    """Django's 500 page, but a JSON answer under /api/ (an error outside any view, in a middleware)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "A server error occurred."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if request.path.startswith("/v1/"):
        error = {"message": "A server error occurred.", "type": "server_error", "param": None, "code": None}
        return JsonResponse({"error": error}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return defaults.server_error(request)
