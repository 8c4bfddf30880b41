"""What a log line is about, and the JSON format that carries it (INFERIA_LOG_FORMAT=json).

The gateway binds a request's id, organisation, key prefix, model and deployment as it learns them; a Celery task
binds its id and name (and the deployment or replica it works on). They live in a context variable, so each request
(an asyncio task) and each task sees only its own, and `LogContextFilter` copies them onto every record logged
meanwhile, whoever logs it (uvicorn's access line included). With tracing on, the current trace id comes too.
Text logs (the default) leave them out.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FIELDS = ("request_id", "organization", "key_prefix", "model", "deployment", "task_id", "task", "replica")
_context: ContextVar[dict[str, Any] | None] = ContextVar("inferia_log_context", default=None)


def log_context_bind(**fields: Any) -> Token[dict[str, Any] | None]:
    """Add `fields` to what this request's or task's lines carry (until `log_context_reset` with the token)."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}})


def log_context_reset(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


def log_context() -> dict[str, Any]:
    return dict(_context.get() or {})


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class LogContextFilter(logging.Filter):
    """Copy the bound fields (and the trace id) onto each record, for the formatter to write."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            setattr(record, name, value)
        trace_id = _trace_id()
        if trace_id is not None:
            record.trace_id = trace_id
        return True


def json_formatter() -> JsonFormatter:
    """One JSON object a line: time, level, logger, message, then whatever the context bound."""
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    )
